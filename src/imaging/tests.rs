//! End-to-end tests of [`transform`] on the fixtures in `tests/fixtures/imaging/`
//! (made by `make_fixtures.py` there; see its README for provenance).
//!
//! Expected colour means come from trusted renderings of the same files,
//! printed by `make_fixtures.py --means`: Pillow (libjpeg-turbo) for plain
//! decodes and CMYK (Pillow's CMYK→RGB is the same naive Adobe-inverted
//! formula), LittleCMS (Pillow's ImageCms) for the AdobeRGB → sRGB conversion,
//! ImageMagick for the 16-bit PNG.

use image::RgbImage;

use super::*;

use super::fixtures::fixture;

fn options(quality: Quality) -> TransformOptions {
    TransformOptions {
        quality,
        default_quality: 50,
        limits: Limits::default(),
        max_bytes: None,
    }
}

fn q50() -> TransformOptions {
    options(Quality::Absolute(50))
}

/// Checks what every re-encoded output must be and returns its pixels:
/// a baseline JPEG, 3 components at 4:2:0, no APP1 (EXIF/XMP) or APP2 (ICC), RGB 8-bit,
/// that libjpeg decodes without a warning.
fn check_output(out: &Transformed) -> RgbImage {
    assert!(!out.report.kept_original);
    assert_eq!(sniff(&out.bytes), Some(Format::Jpeg));
    verify_jpeg(&out.bytes).expect("libjpeg decodes the output without a warning");
    assert_eq!(out.report.output_bytes, out.bytes.len() as u64);
    let header = jpeg::parse(&out.bytes).expect("output has JPEG headers");
    assert_eq!(header.sof, 0xC0, "baseline");
    assert_eq!(header.component_count, 3);
    let factors: Vec<(u8, u8)> = header.components[..3].iter().map(|c| (c.h, c.v)).collect();
    assert_eq!(factors, [(2, 2), (1, 1), (1, 1)], "4:2:0");
    assert_eq!(
        header.app_markers, 1,
        "only APP0 (JFIF), got {:#b}",
        header.app_markers
    );
    let decoded = image::load_from_memory(&out.bytes).expect("output decodes");
    assert_eq!(decoded.color(), image::ColorType::Rgb8);
    let rgb = decoded.into_rgb8();
    assert_eq!(rgb.dimensions(), (out.report.width, out.report.height));
    rgb
}

fn mean(img: &RgbImage) -> [f64; 3] {
    let mut sum = [0u64; 3];
    for p in img.pixels() {
        for (s, &c) in sum.iter_mut().zip(&p.0) {
            *s += u64::from(c);
        }
    }
    let n = (img.width() * img.height()).max(1) as f64;
    sum.map(|s| s as f64 / n)
}

fn assert_mean_near(img: &RgbImage, expected: [f64; 3], tolerance: f64) {
    let actual = mean(img);
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= tolerance,
            "mean {actual:?}, expected {expected:?} ± {tolerance}"
        );
    }
}

/// Transforms a fixture at q50, checks the common properties, returns report and pixels.
fn run(name: &str, format: Format, size: (u32, u32)) -> (Report, RgbImage) {
    let input = fixture(name);
    let out = transform(&input, &q50()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let pixels = check_output(&out);
    let r = out.report;
    assert_eq!(
        (r.input_format, (r.width, r.height)),
        (format, size),
        "{name}"
    );
    assert_eq!((r.input_bytes, r.quality), (input.len() as u64, 50));
    (r, pixels)
}

#[test]
fn baseline_photo_is_reencoded_smaller() {
    let (r, pixels) = run("photo_q85.jpg", Format::Jpeg, (640, 480));
    assert!(r.output_bytes < r.input_bytes);
    assert_eq!(r.source_quality, Some(85));
    assert!(!(r.rotated || r.cmyk_converted || r.icc_converted || r.alpha_flattened));
    assert!(!r.bit_depth_reduced && r.frames_dropped == 0);
    let original = image::load_from_memory(&fixture("photo_q85.jpg"))
        .expect("decodes")
        .into_rgb8();
    assert_mean_near(&pixels, mean(&original), 1.5);
}

#[test]
fn cmyk_ycck_jpeg_is_converted_to_rgb() {
    let (r, pixels) = run("cmyk_ycck.jpg", Format::Jpeg, (320, 240));
    assert!(r.cmyk_converted && !r.icc_converted);
    assert_mean_near(&pixels, [109.2, 138.5, 52.8], 3.0);
}

#[test]
fn exif_orientation_6_is_applied() {
    let (r, pixels) = run("exif_orient6.jpg", Format::Jpeg, (640, 480));
    assert!(r.rotated);
    assert_eq!(
        dimensions(&fixture("exif_orient6.jpg"), Format::Jpeg).ok(),
        Some((480, 640))
    );
    assert_mean_near(&pixels, [208.3, 211.8, 178.7], 2.0);
}

/// With two `Exif` segments, the orientation is the first's, as browsers and Pillow
/// read it, on every route: a second segment without one (an editor's) does not undo
/// the rotation.
#[test]
fn the_first_exif_segment_gives_the_orientation() {
    let input = fixture("exif_orient6.jpg");
    let header = jpeg::parse(&input).unwrap();
    // APP1: "Exif", a big-endian TIFF header and an empty IFD.
    let mut second = vec![0xFF, 0xE1, 0x00, 0x14];
    second.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0\0\0\0");
    let exif = header.exif.clone().unwrap();
    // Just after the first Exif segment ends.
    let at = exif.end;
    let input = [&input[..at], &second, &input[at..]].concat();
    assert_eq!(jpeg::parse(&input).unwrap().exif, Some(exif));
    for route in [Route::Auto, Route::GeneralOnly] {
        let out = transform_with(&input, &q50(), route).unwrap();
        assert!(out.report.rotated, "{route:?}: {:?}", out.report);
        assert_eq!(
            (out.report.width, out.report.height),
            (640, 480),
            "{route:?}"
        );
    }
}

/// Stored 64×32: red | green over blue | yellow. Expected display per EXIF
/// orientation (checked against Pillow's `exif_transpose`): size, colour of the
/// top-left and top-right corners.
#[test]
fn all_eight_orientations() {
    const RED: [f64; 3] = [229.0, 19.0, 18.0];
    const GREEN: [f64; 3] = [23.0, 231.0, 21.0];
    const BLUE: [f64; 3] = [22.0, 20.0, 229.0];
    const YELLOW: [f64; 3] = [230.0, 229.0, 22.0];
    let table = [
        (1, (64, 32), RED, GREEN),
        (2, (64, 32), GREEN, RED),
        (3, (64, 32), YELLOW, BLUE),
        (4, (64, 32), BLUE, YELLOW),
        (5, (32, 64), RED, BLUE),
        (6, (32, 64), BLUE, RED),
        (7, (32, 64), YELLOW, GREEN),
        (8, (32, 64), GREEN, YELLOW),
    ];
    for (n, size, top_left, top_right) in table {
        let (r, pixels) = run(&format!("orient_{n}.jpg"), Format::Jpeg, size);
        assert_eq!(r.rotated, n != 1, "orientation {n}");
        let corner = |x| image::imageops::crop_imm(&pixels, x, 0, 8, 8).to_image();
        assert_mean_near(&corner(0), top_left, 12.0);
        assert_mean_near(&corner(size.0 - 8), top_right, 12.0);
    }
}

#[test]
fn grayscale_jpeg_becomes_three_component_gray() {
    let (_, pixels) = run("gray.jpg", Format::Jpeg, (480, 320));
    assert_mean_near(&pixels, [102.6; 3], 1.5);
    assert!(
        pixels
            .pixels()
            .all(|p| p[0].abs_diff(p[1]) <= 2 && p[1].abs_diff(p[2]) <= 2)
    );
}

#[test]
fn progressive_jpeg_becomes_baseline() {
    let (_, pixels) = run("progressive.jpg", Format::Jpeg, (480, 320));
    assert_mean_near(&pixels, [62.4, 87.0, 121.9], 2.0);
}

#[test]
fn adobergb_icc_is_converted_to_srgb() {
    let (r, pixels) = run("adobergb_icc.jpg", Format::Jpeg, (480, 384));
    assert!(r.icc_converted);
    // LittleCMS gives (115.3, 177.0, 55.9); unconverted pixels average (136.0, 175.9, 70.0).
    assert_mean_near(&pixels, [115.3, 177.0, 55.9], 3.0);
}

/// A profile named sRGB that is not (AdobeRGB's, its description spelt "Adobe sRGB"):
/// converted on every route, as the AdobeRGB photo is, never transcoded as it is.
#[test]
fn a_profile_named_srgb_that_is_not_is_converted() {
    let mut input = fixture("adobergb_icc.jpg");
    let at = input
        .windows(9)
        .position(|w| w == b"Adobe RGB")
        .expect("an Adobe RGB description");
    input[at - 1..at + 9].copy_from_slice(b"Adobe sRGB");
    for route in [Route::Auto, Route::GeneralOnly] {
        let out = transform_with(&input, &q50(), route).unwrap();
        assert!(
            out.report.icc_converted && !out.report.fast_path,
            "{route:?}: {:?}",
            out.report
        );
        assert_mean_near(&check_output(&out), [115.3, 177.0, 55.9], 3.0);
    }
}

#[test]
fn srgb_icc_needs_no_conversion() {
    let (r, _) = run("srgb_icc.jpg", Format::Jpeg, (128, 96));
    assert!(!r.icc_converted);
}

#[test]
fn low_quality_jpeg_keeps_its_bytes() {
    let input = fixture("q30.jpg");
    let out = transform_with(&input, &q50(), Route::GeneralOnly).expect("transforms");
    assert!(out.report.kept_original);
    assert_eq!(out.bytes, input);
    verify_jpeg(&out.bytes).expect("a kept original decodes without a warning");
    assert_eq!(out.report.output_bytes, out.report.input_bytes);
    assert_eq!((out.report.width, out.report.height), (640, 400));
    assert!(
        out.report
            .source_quality
            .is_some_and(|q| q.abs_diff(30) <= 3)
    );
}

#[test]
fn lossy_webp() {
    let (_, pixels) = run("photo.webp", Format::Webp, (1920, 1280));
    assert_mean_near(&pixels, [73.8, 89.4, 112.2], 2.0);
}

#[test]
fn bmp_and_tiff() {
    let (_, bmp) = run("small.bmp", Format::Bmp, (160, 120));
    assert_mean_near(&bmp, [95.3, 91.9, 96.0], 2.0);
    let (_, tiff) = run("small.tiff", Format::Tiff, (160, 120));
    assert_mean_near(&tiff, [95.3, 91.9, 96.0], 2.0);
}

#[test]
fn sixteen_bit_png_is_reduced() {
    let (r, pixels) = run("rgb16.png", Format::Png, (200, 125));
    assert!(r.bit_depth_reduced && !r.alpha_flattened);
    assert_mean_near(&pixels, [190.3, 223.1, 234.9], 2.0);
}

#[test]
fn palette_png() {
    let (r, pixels) = run("palette.png", Format::Png, (400, 250));
    assert!(!r.bit_depth_reduced && !r.alpha_flattened);
    assert_mean_near(&pixels, [190.8, 116.7, 31.7], 2.0);
}

#[test]
fn alpha_is_flattened_onto_white() {
    let (r, pixels) = run("alpha.png", Format::Png, (400, 250));
    assert!(r.alpha_flattened);
    // The corners are fully transparent in the input.
    for (x, y) in [(0, 0), (392, 0), (0, 242), (392, 242)] {
        let corner = image::imageops::crop_imm(&pixels, x, y, 8, 8).to_image();
        assert_mean_near(&corner, [255.0; 3], 3.0);
    }
    assert_mean_near(&pixels, [222.1, 205.8, 163.0], 2.0);
}

#[test]
fn animated_gif_uses_its_first_frame() {
    let (r, pixels) = run("anim3.gif", Format::Gif, (160, 100));
    assert_eq!(r.frames_dropped, 2);
    // Frame 1 averages (170.2, 120.9, 41.5); frame 2 (110.5, 131.8, 72.3).
    assert_mean_near(&pixels, [170.2, 120.9, 41.5], 2.5);
}

#[test]
fn too_many_pixels_fails_from_the_header_alone() {
    // Signature and IHDR of a 30000×30000 RGBA PNG, and nothing else.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&30000u32.to_be_bytes());
    png.extend_from_slice(&30000u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    match transform(&png, &q50()) {
        Err(ImagingError::TooManyPixels {
            width: 30000,
            height: 30000,
            pixels,
            limit,
        }) => {
            assert_eq!((pixels, limit), (900_000_000, 100_000_000));
        }
        other => panic!("expected TooManyPixels, got {:?}", other.map(|t| t.report)),
    }
    // The decoder path enforces the same limit (e.g. when the header parse is bypassed).
    let mut tight = q50();
    tight.limits.max_pixels = 640 * 480 - 1;
    let err = transform(&fixture("photo_q85.jpg"), &tight).map(|t| t.report);
    assert!(
        matches!(err, Err(ImagingError::TooManyPixels { .. })),
        "{err:?}"
    );
}

#[test]
fn input_byte_limit_is_enforced() {
    let mut small = q50();
    small.limits.max_input_bytes = 1000;
    let err = transform(&fixture("photo_q85.jpg"), &small).map(|t| t.report);
    assert!(
        matches!(
            err,
            Err(ImagingError::Decode {
                format: Format::Jpeg,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_and_garbage_inputs_fail_cleanly() {
    let names = [
        "photo_q85.jpg",
        "progressive.jpg",
        "palette.png",
        "small.tiff",
        "small.bmp",
        "photo.webp",
    ];
    for name in names {
        let bytes = fixture(name);
        for cut in [bytes.len() / 2, bytes.len() * 9 / 10, 40] {
            let result = transform(&bytes[..cut], &q50());
            assert!(
                matches!(result, Err(ImagingError::Decode { .. })),
                "{name} cut at {cut}: {:?}",
                result.map(|t| t.report)
            );
        }
        // 12 bytes may not even identify the format (BMP needs 18): any error will do.
        assert!(transform(&bytes[..12], &q50()).is_err());
    }
    // A GIF cut inside its first frame fails; cut after it, the frame we use is whole.
    let gif = fixture("anim3.gif");
    for cut in [6000, 12000, 40] {
        let result = transform(&gif[..cut], &q50()).map(|t| t.report);
        assert!(
            matches!(result, Err(ImagingError::Decode { .. })),
            "gif cut at {cut}: {result:?}"
        );
    }
    assert!(transform(&gif[..gif.len() / 2], &q50()).is_ok());

    // Random bytes, with and without a valid magic number in front.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    };
    let magics: [&[u8]; 7] = [
        b"",
        &[0xFF, 0xD8, 0xFF, 0xDB],
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"RIFF\x00\x10\x00\x00WEBPVP8 ",
        b"II*\0\x08\0\0\0",
        b"BM\0\0\0\0\0\0\0\0\0\0\0\0\x28\0\0\0",
    ];
    for magic in magics {
        for len in [0, 10, 100, 5000] {
            let mut bytes = magic.to_vec();
            bytes.extend(random(len));
            assert!(
                transform(&bytes, &q50()).is_err(),
                "{magic:?} + {len} random bytes"
            );
        }
    }
}

#[test]
fn unknown_formats_are_unsupported() {
    for bytes in [
        &b"hello, world"[..],
        b"",
        b"<svg/>",
        b"\0\0\0\x1cftypavif\0\0\0\0",
    ] {
        let err = transform(bytes, &q50()).map(|t| t.report);
        assert!(
            matches!(err, Err(ImagingError::UnsupportedFormat)),
            "{err:?}"
        );
    }
    assert_eq!(
        ImagingError::UnsupportedFormat.to_string(),
        "unsupported format"
    );
}

#[test]
fn quality_estimates_match_known_encoders() {
    for (name, q) in [
        ("ijg_q30.jpg", 30),
        ("ijg_q50.jpg", 50),
        ("ijg_q85.jpg", 85),
        ("ijg_q95.jpg", 95),
        ("q30.jpg", 30),
        ("photo_q85.jpg", 85),
    ] {
        let est = estimate_jpeg_quality(&fixture(name));
        assert!(est.is_some_and(|e| e.abs_diff(q) <= 3), "{name}: {est:?}");
    }
    let pixels = decode::Pixels::Rgb(RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
    }));
    for q in [30, 50, 85] {
        let jpeg = encode::encode(&pixels, q, &libjpeg::Budget::UNLIMITED).expect("encodes");
        assert_eq!(estimate_jpeg_quality(&jpeg), Some(q));
    }
    assert_eq!(estimate_jpeg_quality(&fixture("palette.png")), None);
}

#[test]
fn relative_quality_scales_the_source_quality() {
    let out = transform(&fixture("photo_q85.jpg"), &options(Quality::Relative(50))).expect("ok");
    assert_eq!(out.report.source_quality, Some(85));
    assert_eq!(out.report.quality, 43); // 85 × 50 % = 42.5, rounded
    check_output(&out);
    // Not a JPEG: no quality of its own, so the configured default applies.
    let mut opts = options(Quality::Relative(50));
    opts.default_quality = 70;
    let out = transform(&fixture("palette.png"), &opts).expect("ok");
    assert_eq!((out.report.quality, out.report.source_quality), (70, None));
}

/// PSNR in dB of `b` against `a` (same size).
fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = sum / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

fn decoded(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).expect("decodes").into_rgb8()
}

/// 4:2:0 sources: the fast path takes them (an sRGB profile is fine).
const FAST_PATH_FIXTURES: [&str; 5] = [
    "photo_q85.jpg",
    "baseline_420_odd.jpg",
    "progressive_420.jpg",
    "srgb_icc.jpg",
    "ijg_q95.jpg",
];

/// Gray, 4:2:2 and 4:4:4 sources: the fast path handles them with
/// `Tuning::all_samplings` (DCT-domain chroma downsampling or neutral chroma); by
/// default only where libjpeg has no SIMD (`Codec::chroma`), else the plane route,
/// which measured faster on them with SIMD.
const OTHER_SAMPLINGS: [&str; 4] = [
    "baseline_422.jpg",
    "progressive.jpg",
    "progressive_444.jpg",
    "gray.jpg",
];

fn all_samplings() -> fastpath::Tuning {
    fastpath::Tuning {
        all_samplings: true,
        ..Default::default()
    }
}

/// `jpeg` with an EXIF segment holding only `Orientation = value`, after SOI.
fn with_exif_orientation(jpeg: &[u8], value: u8) -> Vec<u8> {
    let tiff: [u8; 26] = [
        b'M', b'M', 0, 42, 0, 0, 0, 8, // big-endian TIFF header, IFD at 8
        0, 1, // one entry
        0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0, // Orientation, SHORT, 1
        0, 0, 0, 0, // no next IFD
    ];
    let len = (2 + 6 + tiff.len()) as u16;
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn fast_path_runs_for_420_sources_with_orientation_1() {
    for name in FAST_PATH_FIXTURES {
        let input = fixture(name);
        let out = transform(&input, &q50()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.report.fast_path, "{name}");
        // Baseline, 4:2:0, only APP0 (no EXIF/ICC), RGB-decodable, same size.
        check_output(&out);
        let header = jpeg::parse(&input).expect("parses");
        assert_eq!(
            (out.report.width, out.report.height),
            (u32::from(header.width), u32::from(header.height)),
            "{name}"
        );
        let r = &out.report;
        assert!(
            !(r.rotated || r.cmyk_converted || r.icc_converted),
            "{name}"
        );
        assert!(r.output_bytes < r.input_bytes, "{name}");
    }
    // EXIF orientation 1 is no change: still the fast path, and the EXIF is gone.
    let input = with_exif_orientation(&fixture("photo_q85.jpg"), 1);
    assert_eq!(
        jpeg::orientation(&input, &jpeg::parse(&input).expect("parses")),
        image::metadata::Orientation::NoTransforms
    );
    let out = transform(&input, &q50()).expect("transforms");
    assert!(out.report.fast_path);
    check_output(&out);
    // Orientation 6 on the same picture is not.
    let rotated = transform(&with_exif_orientation(&fixture("photo_q85.jpg"), 6), &q50());
    let rotated = rotated.expect("transforms");
    assert!(!rotated.report.fast_path && rotated.report.rotated);
}

#[test]
fn other_samplings_take_the_route_the_codec_picked() {
    let coefficients = super::Codec::get().chroma == super::ChromaRoute::Coefficients;
    // orient_1.jpg: 4:4:4 with EXIF orientation 1.
    for name in OTHER_SAMPLINGS.iter().chain(&["orient_1.jpg"]) {
        let out = transform(&fixture(name), &q50()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.report.fast_path, coefficients, "{name}");
        check_output(&out);
    }
}

#[test]
fn fast_path_is_not_used_where_pixels_must_change() {
    let mut names = vec![
        "exif_orient6.jpg".to_owned(), // orientation 6 (and 4:4:0)
        "cmyk_ycck.jpg".to_owned(),    // CMYK/YCCK: the `image` decoder converts it
        "adobergb_icc.jpg".to_owned(), // non-sRGB ICC (4:2:0, EXIF orientation 1)
    ];
    names.extend((2..=8).map(|n| format!("orient_{n}.jpg")));
    for name in &names {
        let out = transform(&fixture(name), &q50()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!out.report.fast_path, "{name}");
    }
    // Non-JPEG inputs never take it.
    assert!(
        !transform(&fixture("palette.png"), &q50())
            .expect("ok")
            .report
            .fast_path
    );
}

#[test]
fn fast_and_general_paths_agree() {
    for name in FAST_PATH_FIXTURES.iter().chain(&OTHER_SAMPLINGS) {
        let input = fixture(name);
        let fast = fastpath::transcode(&input, 50, &libjpeg::Budget::UNLIMITED, all_samplings())
            .expect("transcodes")
            .unwrap_or_else(|| panic!("{name}: not handled"));
        let general = transform_with(&input, &q50(), Route::GeneralOnly).expect("general");
        assert!(!general.report.fast_path);
        let original = decoded(&input);
        let (fast_px, general_px) = (decoded(&fast), decoded(&general.bytes));
        let (p_fast, p_general) = (psnr(&original, &fast_px), psnr(&original, &general_px));
        // Both are q50 re-encodes of the same picture: within 1 dB of each other
        // (the corpus averages differ by 0.02 dB), and close to each other.
        assert!(
            (p_fast - p_general).abs() < 1.0,
            "{name}: fast {p_fast:.2} dB, general {p_general:.2} dB"
        );
        assert!(p_fast > 25.0, "{name}: {p_fast:.2} dB");
        assert!(psnr(&general_px, &fast_px) > 33.0, "{name}");
        assert_mean_near(&fast_px, mean(&original), 1.5);
    }
}

#[test]
fn fast_path_keeps_coarser_source_steps() {
    // A q30 source at q50: the source's coarser steps are kept, so the result is the
    // same picture, Huffman-optimised, and smaller; the general path would be larger.
    let input = fixture("q30.jpg");
    let out = transform(&input, &q50()).expect("transforms");
    assert!(out.report.fast_path && !out.report.kept_original);
    assert!(out.report.output_bytes < out.report.input_bytes);
    assert!(estimate_jpeg_quality(&out.bytes).is_some_and(|q| q.abs_diff(30) <= 3));
    let (before, after) = (decoded(&input), decoded(&out.bytes));
    assert!(psnr(&before, &after) > 45.0);
}

#[test]
fn truncated_jpeg_through_the_fast_path_fails_cleanly() {
    for name in ["photo_q85.jpg", "progressive_420.jpg", "baseline_422.jpg"] {
        let bytes = fixture(name);
        for cut in [bytes.len() / 2, bytes.len() - 3, 200, 3] {
            // Straight into the transcoder (transform() rejects a missing EOI first)...
            let result = fastpath::transcode(
                &bytes[..cut],
                50,
                &libjpeg::Budget::UNLIMITED,
                all_samplings(),
            );
            assert!(result.is_err(), "{name} cut at {cut}");
            // ...also with an EOI glued on, so only libjpeg can notice.
            let mut patched = bytes[..cut].to_vec();
            patched.extend_from_slice(&[0xFF, 0xD9]);
            let result =
                fastpath::transcode(&patched, 50, &libjpeg::Budget::UNLIMITED, all_samplings());
            assert!(!matches!(result, Ok(Some(_))), "{name} cut at {cut} + EOI");
            let result = transform(&patched, &q50()).map(|t| t.report);
            assert!(
                !matches!(result, Ok(ref r) if r.fast_path),
                "{name} cut at {cut} + EOI: {result:?}"
            );
        }
    }
}

#[test]
fn libjpeg_errors_are_errors_not_crashes() {
    let photo = fixture("photo_q85.jpg");
    let mut inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xFF, 0xD8],
        vec![0xFF, 0xD8, 0xFF, 0xD9],
        b"not a jpeg at all".to_vec(),
    ];
    // Damaged entropy-coded data and a damaged header.
    let mut flipped = photo.clone();
    for i in (flipped.len() / 3..flipped.len() - 2).step_by(97) {
        flipped[i] ^= 0x5A;
    }
    inputs.push(flipped);
    let mut bad_header = photo.clone();
    for b in bad_header.iter_mut().skip(20).take(200) {
        *b = 0xFF;
    }
    inputs.push(bad_header);
    let readable = |jpeg: &[u8]| {
        libjpeg::decode(jpeg, &libjpeg::Budget::UNLIMITED, decode::GENERAL_DECODE).is_ok()
    };
    for (i, input) in inputs.iter().enumerate() {
        let fast = fastpath::transcode(input, 50, &libjpeg::Budget::UNLIMITED, Default::default());
        let decoded = libjpeg::decode(input, &libjpeg::Budget::UNLIMITED, decode::GENERAL_DECODE);
        let result = transform(input, &q50());
        if i < 4 {
            // No image in there at all: every way in says so.
            assert!(
                fast.is_err(),
                "input {i}: {:?}",
                fast.map(|o| o.map(|b| b.len()))
            );
            assert!(decoded.is_err(), "input {i}");
            assert!(result.is_err(), "input {i}: {:?}", result.map(|t| t.report));
            continue;
        }
        // Damaged: an error of the input, or a JPEG that reads back.
        if let Ok(Some(out)) = &fast {
            assert!(
                readable(out),
                "input {i}: the fast path wrote an unreadable JPEG"
            );
        }
        match result {
            Ok(t) => assert!(readable(&t.bytes), "input {i}: unreadable output"),
            Err(e) => assert!(
                matches!(e, ImagingError::Decode { .. } | ImagingError::Corrupt(_)),
                "input {i}: {e:?}"
            ),
        }
    }
    assert!(fastpath::transcode(&[], 50, &libjpeg::Budget::UNLIMITED, Default::default()).is_err());
    assert!(
        libjpeg::decode(
            b"garbage",
            &libjpeg::Budget::UNLIMITED,
            decode::GENERAL_DECODE
        )
        .is_err()
    );
    // The pixel limit is enforced from libjpeg's own header read too.
    let small = libjpeg::Budget {
        max_pixels: 1000,
        ..libjpeg::Budget::UNLIMITED
    };
    let limited = fastpath::transcode(&photo, 50, &small, Default::default());
    assert!(limited.is_err());
}

#[test]
fn report_without_fast_path_field_deserializes() {
    let out = transform(&fixture("small.bmp"), &q50()).expect("ok");
    let mut json = serde_json::to_value(&out.report).expect("serializes");
    assert_eq!(json["fast_path"], false);
    json.as_object_mut().expect("object").remove("fast_path");
    let back: Report = serde_json::from_value(json).expect("deserializes");
    assert!(!back.fast_path);
}

#[test]
fn report_serializes_with_lowercase_format() {
    let out = transform(&fixture("small.bmp"), &q50()).expect("ok");
    let json = serde_json::to_value(&out.report).expect("serializes");
    assert_eq!(json["input_format"], "bmp");
    assert_eq!(json["source_quality"], serde_json::Value::Null);
    let back: Report = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, out.report);
}

#[test]
fn auto_target_reaches_the_score_and_reports_the_search() {
    let input = fixture("photo_q85.jpg");
    for asked in ["auto:60", "auto:72.35", "auto:80"] {
        let quality = Quality::parse(asked).expect("a target");
        let Quality::Auto(target) = quality else {
            unreachable!()
        };
        let out = transform(&input, &options(quality)).expect("auto");
        let r = &out.report;
        check_output(&out);
        assert_eq!(r.target, Some(target));
        let score = r.score.expect("a score");
        assert!(score >= target.score(), "{target}: {score}");
        assert!(AUTO_RANGE.contains(&r.quality));
        assert_eq!(r.binding, Binding::Target);
        assert!((1..=7).contains(&r.tries), "{}", r.tries);
        assert_eq!(r.output_bytes, out.bytes.len() as u64);
        assert!(!r.target_missed());
    }
    let low = transform(&input, &options(Quality::Auto(Target::whole(60)))).unwrap();
    let high = transform(&input, &options(Quality::Auto(Target::whole(80)))).unwrap();
    assert!(low.report.quality < high.report.quality);
    assert!(low.bytes.len() < high.bytes.len());
}

#[test]
fn auto_target_works_on_decoded_pixels_too() {
    let out = transform(
        &fixture("photo.webp"),
        &options(Quality::Auto(Target::whole(70))),
    )
    .expect("auto");
    check_output(&out);
    assert!(out.report.score.is_some_and(|s| s >= 70.0));
    assert!(!out.report.fast_path);
}

fn capped(quality: Quality, cap: &str) -> TransformOptions {
    TransformOptions {
        max_bytes: Some(MaxBytes::parse(cap).unwrap()),
        ..options(quality)
    }
}

#[test]
fn max_bytes_is_honoured_and_wins_over_the_target() {
    let input = fixture("photo_q85.jpg");
    let free = transform(&input, &q50()).unwrap();
    let cap = free.bytes.len() as u64 * 3 / 4;
    let out = transform(&input, &capped(Quality::Absolute(50), &cap.to_string())).unwrap();
    check_output(&out);
    assert!(out.bytes.len() as u64 <= cap);
    assert_eq!(out.report.binding, Binding::MaxBytes);
    assert!(out.report.quality < 50 && out.report.quality >= *AUTO_RANGE.start());
    assert_eq!(out.report.max_bytes, Some(cap));
    assert!(!out.report.downscaled);

    let out = transform(
        &input,
        &capped(Quality::Auto(Target::whole(90)), &cap.to_string()),
    )
    .unwrap();
    assert!(out.bytes.len() as u64 <= cap);
    assert_eq!(out.report.binding, Binding::MaxBytes);
    assert!(out.report.target_missed());
}

#[test]
fn max_bytes_downscales_when_the_lowest_quality_is_too_big() {
    let input = fixture("photo_q85.jpg");
    let out = transform(&input, &capped(Quality::Absolute(50), "5KB")).unwrap();
    check_output(&out);
    assert!(out.bytes.len() <= 5000, "{}", out.bytes.len());
    assert!(out.report.downscaled);
    assert_eq!(out.report.binding, Binding::MaxBytes);
    let (w, h) = dimensions(&input, Format::Jpeg).unwrap();
    assert!(out.report.width < w && out.report.height < h);
    assert_eq!(
        dimensions(&out.bytes, Format::Jpeg).unwrap(),
        (out.report.width, out.report.height)
    );
}

#[test]
fn never_larger_keeps_no_original_above_the_cap() {
    // A q30 source re-encoded at q95 by the general path grows: the original is
    // kept without a cap...
    let input = fixture("q30.jpg");
    let free = transform_with(&input, &options(Quality::Absolute(95)), Route::GeneralOnly).unwrap();
    assert!(free.report.kept_original);
    // ...but not when it is over the cap.
    let cap = input.len() as u64 - 1;
    let out = transform_with(
        &input,
        &capped(Quality::Absolute(95), &cap.to_string()),
        Route::GeneralOnly,
    )
    .unwrap();
    assert!(!out.report.kept_original);
    assert!(out.bytes.len() as u64 <= cap);
}

/// A kept original is reported as what is stored: the source's own size, not the
/// downscaled try that lost to it. A q8 source decoded and re-encoded even at q30 grows
/// past a cap it fits itself; a downscale then fits the cap but may still be larger
/// than the source, which is kept.
#[test]
fn a_kept_original_is_reported_at_its_own_size() {
    let low = transform(&fixture("photo_q85.jpg"), &options(Quality::Absolute(8)))
        .unwrap()
        .bytes;
    let size = dimensions(&low, Format::Jpeg).unwrap();
    let mut kept_over_a_downscale = false;
    for step in 0..12 {
        let cap = low.len() as u64 * (105 + 10 * step) / 100;
        let out = transform_with(
            &low,
            &capped(Quality::Absolute(50), &cap.to_string()),
            Route::GeneralOnly,
        )
        .unwrap();
        assert_eq!(
            dimensions(&out.bytes, Format::Jpeg).unwrap(),
            (out.report.width, out.report.height),
            "cap {cap}: {:?}",
            out.report
        );
        // The input fits every cap here: it is never shrunk, kept when no quality
        // of the range re-encodes it as small.
        assert!(!out.report.downscaled, "cap {cap}: {:?}", out.report);
        if !out.report.kept_original {
            check_output(&out);
        } else {
            assert_eq!(out.bytes, low);
            assert_eq!((out.report.width, out.report.height), size);
            assert!(!out.report.downscaled, "{:?}", out.report);
            kept_over_a_downscale |= out.report.binding == Binding::MaxBytes;
        }
    }
    assert!(
        kept_over_a_downscale,
        "no cap made the search downscale, then keep the source"
    );
}

/// A JPEG on the general path (here forced; in the product a rotated or ICC-tagged
/// one) is scored against the source as a viewer sees it, interpolated chroma and
/// all, as on the direct path: the score reported is the one the direct path's
/// reference gives the stored output, and a rotated twin gets the same quality.
#[test]
fn the_general_path_scores_a_jpeg_against_the_source_as_viewed() {
    let input = fixture("photo_q85.jpg");
    let opts = options(Quality::Auto(Target::whole(70)));
    let out = transform_with(&input, &opts, Route::GeneralOnly).unwrap();
    assert!(!out.report.fast_path);
    let budget = Budget::UNLIMITED;
    let viewed = adaptive::Scorer::from_jpeg(&input, &budget).unwrap();
    let again = viewed.score(&out.bytes, &budget).unwrap();
    let reported = out.report.score.expect("a score");
    assert!(
        (reported - again).abs() < 1e-6,
        "reported {reported}, as viewed {again}"
    );
    // Turned upside down by its tag: the same pixels to encode and to compare with.
    let rotated = transform(&with_exif_orientation(&input, 3), &opts).unwrap();
    assert!(rotated.report.rotated);
    assert!(
        rotated.report.quality.abs_diff(out.report.quality) <= 1,
        "{:?}",
        rotated.report
    );
    // Not to the bit: the DCT's integer rounding is not symmetric in sign.
    let turned = rotated.report.score.expect("a score");
    assert!(
        (turned - reported).abs() < 0.3,
        "{turned} against {reported}"
    );
}

/// A kept original of a rotated JPEG is reported as a viewer shows it: the EXIF
/// orientation applied to its size. The source: a q8 JPEG given an EXIF orientation
/// of 6, which a q100 encode cannot beat.
#[test]
fn a_kept_rotated_original_is_reported_upright() {
    let low = transform(&fixture("photo_q85.jpg"), &options(Quality::Absolute(8)))
        .unwrap()
        .bytes;
    // APP1: "Exif", a big-endian TIFF header and one IFD entry, orientation (0x0112) = 6.
    let mut exif = vec![0xFF, 0xE1, 0x00, 0x22];
    exif.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01");
    exif.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1, 0x00, 0x06, 0, 0]);
    exif.extend_from_slice(&[0, 0, 0, 0]);
    let input = [&low[..2], &exif, &low[2..]].concat();
    let out = transform_with(&input, &options(Quality::Absolute(100)), Route::GeneralOnly).unwrap();
    assert!(out.report.kept_original, "{:?}", out.report);
    assert_eq!(out.bytes, input);
    let (w, h) = dimensions(&input, Format::Jpeg).unwrap();
    assert_eq!((out.report.width, out.report.height), (h, w));
    assert!(
        out.report.rotated && !out.report.downscaled,
        "{:?}",
        out.report
    );
}

/// An arithmetic-coded JPEG (SOF9, which our decoder declines) decodes through
/// libjpeg and is always re-encoded, even where the output is larger (q100): it is
/// never kept as it is, since many viewers cannot show it. Its pixels are those of
/// the Huffman-coded photo it was losslessly cut from.
#[test]
fn an_arithmetic_coded_jpeg_is_re_encoded() {
    let input = fixture("arithmetic.jpg");
    assert!(jpeg::parse(&input).unwrap().is_arithmetic());
    let full = image::load_from_memory(&fixture("photo_q85.jpg"))
        .unwrap()
        .into_rgb8();
    // `jpegtran -crop 320x240+160+120` moves the corner up to the 16-pixel grid.
    let region = image::imageops::crop_imm(&full, 160, 112, 320, 248).to_image();
    for quality in [50, 100] {
        let out = transform(&input, &options(Quality::Absolute(quality))).expect("decodes");
        let rgb = check_output(&out);
        assert_eq!(rgb.dimensions(), (320, 248));
        let (got, want) = (mean(&rgb), mean(&region));
        for c in 0..3 {
            assert!(
                (got[c] - want[c]).abs() < 2.0,
                "q{quality}: {got:?} vs {want:?}"
            );
        }
    }
}

/// The "never larger" rule keeps a CMYK source as it is when its re-encode is not
/// smaller (SPEC §5.6): the report then describes the stored file, the input's own
/// CMYK bytes, not the RGB re-encode that lost. It said `cmyk_converted`.
#[test]
fn a_kept_original_reports_no_conversion_it_did_not_get() {
    for (name, quality) in [("cmyk_ycck.jpg", 100), ("adobergb_icc.jpg", 100)] {
        let input = fixture(name);
        let out = transform(&input, &options(Quality::Absolute(quality))).unwrap();
        assert!(out.report.kept_original, "{name}: {:?}", out.report);
        assert_eq!(out.bytes, input);
        let r = &out.report;
        assert!(!r.cmyk_converted && !r.icc_converted, "{name}: {r:?}");
        // Re-encoded, the same source reports what was done to it.
        let out = transform(&input, &q50()).unwrap();
        assert!(!out.report.kept_original, "{name}");
        assert!(
            out.report.cmyk_converted || out.report.icc_converted,
            "{name}"
        );
    }
}

/// Every option set's outputs of every fixture, as one digest per [`OUTPUT_VERSION`].
/// Reuse copies an earlier output when the fingerprint (which holds the version)
/// matches, so a change to the outputs without a new version would keep serving the
/// old ones: when this fails, bump [`OUTPUT_VERSION`] and record the digest it prints
/// for the new version. (The kernels are bit-exact at every SIMD level; `auto` is
/// left out, its metric's floating point is not promised to be.)
#[test]
fn outputs_are_those_of_this_output_version() {
    use sha2::{Digest, Sha256};
    const DIGESTS: &[(u32, &str)] = &[(
        6,
        "2ab02c2e2f8b1ce318d158177adb933022fc35af5e1dfff331113c1002059bbc",
    )];
    let mut names: Vec<String> = ["imaging", "photos"]
        .iter()
        .flat_map(|dir| {
            let path = format!("{}/tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_dir(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .map(move |entry| format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy()))
        })
        .filter(|name| {
            [".jpg", ".png", ".gif", ".webp", ".bmp", ".tiff"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
        .collect();
    names.sort();
    assert!(names.len() >= 30, "{names:?}");
    let option_sets = [
        q50(),
        options(Quality::Absolute(90)),
        options(Quality::parse("relative:50%").unwrap()),
        capped(Quality::Absolute(50), "8KB"),
        capped(Quality::Absolute(20), "3KB"),
    ];
    let mut all = Sha256::new();
    for name in &names {
        let input = super::fixtures::fixture_file(name);
        for opts in &option_sets {
            all.update(format!("{name};{};", opts.fingerprint()));
            match transform(&input, opts) {
                Ok(out) => {
                    all.update(Sha256::digest(&out.bytes));
                    all.update(format!("{:?}", out.report));
                }
                Err(e) => all.update(e.to_string()),
            }
        }
    }
    let digest = format!("{:x}", all.finalize());
    let recorded = DIGESTS.iter().find(|(v, _)| *v == OUTPUT_VERSION);
    assert_eq!(
        recorded.map(|(_, d)| *d),
        Some(digest.as_str()),
        "the outputs (or their reports) differ from those recorded for output version \
         {OUTPUT_VERSION}: if the change is meant, bump OUTPUT_VERSION and record \
         ({}, \"{digest}\")",
        OUTPUT_VERSION + 1
    );
}
