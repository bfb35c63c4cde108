//! Hostile inputs: CPU bombs (scan count, CPU time), damaged data that libjpeg papers
//! over, and a crafted source whose coefficients are outside baseline's range.

use std::time::Duration;

use super::libjpeg::{self, Budget, Script, thread_cpu_time};
use super::quality::{IJG_CHROMA, IJG_LUMA, ZIGZAG, scaled_table};
use super::*;

use super::fixtures::fixture;

fn options(limits: Limits) -> TransformOptions {
    TransformOptions {
        quality: Quality::Absolute(50),
        default_quality: 50,
        limits,
        max_bytes: None,
    }
}

/// A gray gradient, nearly flat within each block (as the CPU bomb of issue 16:
/// every scan of it is a few bytes, yet the decoder walks every block of it).
fn gradient(width: u32, height: u32) -> Vec<u8> {
    (0..height)
        .flat_map(|y| (0..width).map(move |x| ((x / 64 + y / 64) * 9 % 200 + 20) as u8))
        .collect()
}

// Shared with the API tests (tests/api/hostile.rs), which cannot see this module.
#[path = "../../tests/support/scans.rs"]
mod scans;
use scans::repeat_last_scan;

/// The CPU bomb of issue 16 at `side` × `side`: a gray progressive JPEG (libjpeg's
/// standard script, 6 scans) whose last scan is repeated `repeats` times.
fn cpu_bomb(side: u32, script: Script, repeats: usize) -> Vec<u8> {
    let jpeg = libjpeg::encode_gray_progressive(&gradient(side, side), side, side, 75, script)
        .expect("encodes");
    repeat_last_scan(&jpeg, repeats)
}

/// A 16,000,000×1 PNG (16 KB, within the pixel limit) would be scored by the quality
/// search as 16,000,000×8 (the metric pads short sides), about 15 GB: no JPEG can have
/// that side, so it is refused before anything is decoded, whatever the quality.
#[test]
fn an_image_too_wide_for_jpeg_is_refused_before_decoding() {
    use image::ImageEncoder;
    let side = 16_000_000u32;
    let png = |w: u32, h: u32| {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(
                &vec![128u8; side as usize],
                w,
                h,
                image::ExtendedColorType::L8,
            )
            .expect("encodes");
        png
    };
    let inputs = [png(side, 1), png(1, side)];
    assert!(inputs[0].len() < 100_000, "{}", inputs[0].len());
    let start = thread_cpu_time();
    for input in &inputs {
        for (quality, max_bytes) in [
            (Quality::Auto(super::quality::Target::whole(70)), None),
            (
                Quality::Absolute(50),
                Some(MaxBytes::parse("150000").unwrap()),
            ),
            (Quality::Absolute(50), None),
        ] {
            let opts = TransformOptions {
                quality,
                max_bytes,
                ..options(Limits::default())
            };
            let err = transform(input, &opts).map(|t| t.report);
            assert!(
                matches!(&err, Err(ImagingError::Encode(m)) if m.contains("per side")),
                "{err:?}"
            );
        }
    }
    let spent = thread_cpu_time() - start;
    assert!(spent < Duration::from_secs(1), "{spent:?}");
}

#[test]
fn cpu_bomb_fails_on_the_scan_limit_before_decoding() {
    let bomb = cpu_bomb(256, Script::Standard, 3000);
    let start = thread_cpu_time();
    for route in [Route::Auto, Route::GeneralOnly] {
        let err = transform_with(&bomb, &options(Limits::default()), route).map(|t| t.report);
        assert!(
            matches!(
                err,
                Err(ImagingError::TooManyScans {
                    scans: 3006,
                    limit: DEFAULT_MAX_SCANS
                })
            ),
            "{err:?}"
        );
    }
    let spent = thread_cpu_time() - start;
    assert!(spent < Duration::from_secs(1), "{spent:?}");
    assert_eq!(
        ImagingError::TooManyScans {
            scans: 3006,
            limit: 100
        }
        .to_string(),
        "too many scans (3006 > 100)"
    );
}

#[test]
fn libjpeg_holds_the_scan_limit_while_decoding() {
    // Past the marker count (a limit it does not see), libjpeg's progress monitor
    // stops every decoder at the first scan over the limit.
    let bomb = cpu_bomb(64, Script::NoRefinement, 3000);
    let budget = Budget {
        max_scans: 40,
        ..Budget::UNLIMITED
    };
    let limit = |e| {
        matches!(
            e,
            LibjpegError::TooManyScans {
                scans: 41,
                limit: 40
            }
        )
    };
    // Gray takes the fast path only with all samplings (off by default).
    let all = fastpath::Tuning {
        all_samplings: true,
        ..fastpath::Tuning::default()
    };
    let fast = fastpath::transcode(&bomb, 50, &budget, all);
    assert!(fast.clone().is_err_and(limit), "{:?}", fast.map(|_| ()));
    let planes = samples::reencode(&bomb, 50, &budget);
    assert!(planes.is_err_and(limit));
    let pixels = samples::decode(&bomb, &budget).map(|_| ());
    assert!(pixels.is_err_and(limit));
    let pixels = libjpeg::decode(&bomb, &budget, decode::GENERAL_DECODE);
    assert!(pixels.is_err_and(limit));
    let verified = libjpeg::verify(&bomb, &budget, libjpeg::Depth::Coefficients);
    assert!(verified.is_err_and(limit));
}

#[test]
fn cpu_bomb_without_a_scan_limit_stops_at_the_time_budget() {
    // Warning-free repeats (no successive approximation), so only time stops it; enough
    // of them that the fastest host with an optimised build still needs several times
    // the budget (measured in a release build: 3000 took 48 ms on either route, 20,000
    // 0.33–0.34 s; the cost is linear in the repeats).
    let bomb = cpu_bomb(512, Script::NoRefinement, 30_000);
    assert!(libjpeg::verify(&bomb, &Budget::UNLIMITED, libjpeg::Depth::Coefficients).is_ok());
    let limits = Limits {
        max_scans: u32::MAX,
        time: TimeBudget {
            base: Duration::from_millis(100),
            per_megapixel: Duration::ZERO,
        },
        ..Limits::default()
    };
    for route in [Route::Auto, Route::GeneralOnly] {
        let start = thread_cpu_time();
        let err = transform_with(&bomb, &options(limits), route).map(|t| t.report);
        let spent = thread_cpu_time() - start;
        assert!(
            matches!(err, Err(ImagingError::OverBudget { budget }) if budget == Duration::from_millis(100)),
            "{err:?}"
        );
        // Checked once per row of blocks: it stops within a row of the deadline.
        assert!(spent < Duration::from_millis(600), "{route:?}: {spent:?}");
    }
    let message = ImagingError::OverBudget {
        budget: Duration::from_millis(2500),
    }
    .to_string();
    assert_eq!(
        message,
        "transform over its time budget (2.50 s of CPU time)"
    );
}

#[test]
fn time_budget_grows_with_the_pixels() {
    let budget = TimeBudget::default();
    assert_eq!(budget.for_pixels(0), Duration::from_secs(2));
    assert_eq!(budget.for_pixels(100_000_000), Duration::from_secs(6));
    assert_eq!(TimeBudget::UNLIMITED.for_pixels(u64::MAX), Duration::MAX);
}

/// The 64-megapixel bomb of the issue, with `cargo test --release -- --ignored`;
/// with `PIXBATCH_BOMB_OUT=FILE` it is also written there (for `pixbatch convert`).
#[test]
#[ignore = "encodes 64 megapixels: run in a release build"]
fn full_size_cpu_bomb_fails_within_five_seconds() {
    let bomb = cpu_bomb(8000, Script::Standard, 3000);
    if let Some(path) = std::env::var_os("PIXBATCH_BOMB_OUT") {
        std::fs::write(&path, &bomb).expect("writes the bomb");
    }
    let start = thread_cpu_time();
    let err = transform(&bomb, &options(Limits::default())).map(|t| t.report);
    let spent = thread_cpu_time() - start;
    assert!(
        matches!(err, Err(ImagingError::TooManyScans { scans: 3006, .. })),
        "{err:?}"
    );
    assert!(spent < Duration::from_secs(5), "{spent:?}");
}

/// `jpeg` cut at `at` with an EOI glued on: libjpeg decodes it with a warning
/// ("premature end of data segment") and makes up the rest.
fn cut_with_eoi(jpeg: &[u8], at: usize) -> Vec<u8> {
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn data_libjpeg_warns_about_fails_as_corrupt_on_every_route() {
    // photo_q85 is re-encoded smaller; q30 would be kept as it is (never larger).
    for name in [
        "photo_q85.jpg",
        "q30.jpg",
        "progressive_420.jpg",
        "gray.jpg",
    ] {
        let jpeg = fixture(name);
        let damaged = cut_with_eoi(&jpeg, jpeg.len() * 2 / 3);
        for route in [Route::Auto, Route::GeneralOnly] {
            let result = transform_with(&damaged, &options(Limits::default()), route);
            let err = result.map(|t| t.report);
            assert!(
                matches!(&err, Err(ImagingError::Corrupt(text)) if text.starts_with("Corrupt JPEG data")),
                "{name} {route:?}: {err:?}"
            );
        }
    }
    let message =
        ImagingError::Corrupt("Corrupt JPEG data: premature end of data segment".to_owned())
            .to_string();
    assert_eq!(
        message,
        "corrupt image data: Corrupt JPEG data: premature end of data segment"
    );
}

/// A JPEG libjpeg refuses (an unknown `JPG0` marker) over data cut in half, with an
/// EOI glued on: the `image` crate's decoder skips the marker and fills the missing
/// rows with gray without an error, so it must not get the file. It fails, on every
/// route, instead of being stored as a success.
#[test]
fn a_jpeg_libjpeg_refuses_fails_rather_than_decoding_leniently() {
    for name in ["photo_q85.jpg", "progressive_420.jpg", "gray.jpg"] {
        let jpeg = fixture(name);
        let mut marked = vec![0xFF, 0xD8, 0xFF, 0xF0, 0x00, 0x02];
        marked.extend_from_slice(&jpeg[2..]);
        let sos = marked
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .expect("a scan");
        let broken = cut_with_eoi(&marked, sos + (marked.len() - sos) / 2);
        for route in [Route::Auto, Route::GeneralOnly] {
            let result = transform_with(&broken, &options(Limits::default()), route);
            let err = result.map(|t| t.report);
            assert!(
                matches!(
                    &err,
                    Err(ImagingError::Decode {
                        format: Format::Jpeg,
                        ..
                    })
                ),
                "{name} {route:?}: {err:?}"
            );
        }
        // The marker alone is what libjpeg refuses: the whole file fails the same way.
        let whole = transform(&marked, &options(Limits::default())).map(|t| t.report);
        assert!(
            matches!(&whole, Err(ImagingError::Decode { .. })),
            "{name}: {whole:?}"
        );
    }
}

/// `jpeg` with `junk` inserted before its second marker (after SOI's first segment).
fn with_stray_bytes(jpeg: &[u8], junk: &[u8]) -> Vec<u8> {
    let app0_len = usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let at = 4 + app0_len;
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(junk);
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[test]
fn stray_bytes_between_segments_are_reencoded_never_kept() {
    // q30 at q50: the re-encode is larger, so a clean q30 is kept as it is...
    let q30 = fixture("q30.jpg");
    let clean = transform_with(&q30, &options(Limits::default()), Route::GeneralOnly);
    assert!(clean.expect("transforms").report.kept_original);
    // ...but with stray bytes libjpeg warns about, the re-encode is stored.
    let stray = with_stray_bytes(&q30, &[0x12, 0x34, 0x56]);
    assert!(matches!(verify_jpeg(&stray), Err(ImagingError::Corrupt(_))));
    for route in [Route::Auto, Route::GeneralOnly] {
        let out = transform_with(&stray, &options(Limits::default()), route).expect("transforms");
        assert!(!out.report.kept_original, "{route:?}");
        verify_jpeg(&out.bytes).expect("the stored bytes decode without a warning");
    }
}

// ---------------------------------------------------------------------------
// A crafted source: coefficients of 16 bits

/// MSB-first bit writer for entropy-coded data, with `FF 00` stuffing.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    acc: u8,
    used: u8,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = self.acc << 1 | ((value >> i) & 1) as u8;
            self.used += 1;
            if self.used == 8 {
                self.out.push(self.acc);
                if self.acc == 0xFF {
                    self.out.push(0);
                }
                (self.acc, self.used) = (0, 0);
            }
        }
    }

    /// Pads with one-bits, as encoders do.
    fn finish(mut self) -> Vec<u8> {
        while self.used != 0 {
            self.put(1, 1);
        }
        self.out
    }
}

fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len() + 2).expect("short segment");
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A 16×`height` (a multiple of 16) progressive YCbCr 4:2:0 JPEG with the IJG q50 tables (so a q50 transcode
/// keeps every step) whose luma blocks each hold one AC coefficient of −32768, a
/// magnitude of 16 bits: the first AC scan codes 4 (size 3) with `Al` = 13, and
/// libjpeg stores `4 << 13` in its 16-bit coefficient. Baseline can hold ±1023.
fn sixteen_bit_coefficients(height: u16) -> Vec<u8> {
    let mcus = usize::from(height / 16);
    let mut jpeg = vec![0xFF, 0xD8];
    let mut dqt = Vec::new();
    for (id, base) in [(0u8, &IJG_LUMA), (1, &IJG_CHROMA)] {
        let table = scaled_table(base, 50);
        dqt.push(id);
        dqt.extend(ZIGZAG.iter().map(|&n| table[n] as u8));
    }
    jpeg.extend(segment(0xDB, &dqt));
    jpeg.extend(segment(
        0xC2,
        &[
            &[8][..],
            &height.to_be_bytes(),
            &[0, 16, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1],
        ]
        .concat(),
    ));
    // DC table 0: size 0 → "00". AC table 0: EOB → "00", (run 0, size 3) → "01".
    let mut dht = vec![0x00, 0, 1];
    dht.extend([0; 14]);
    dht.push(0x00);
    dht.extend([0x10, 0, 2]);
    dht.extend([0; 14]);
    dht.extend([0x00, 0x03]);
    jpeg.extend(segment(0xC4, &dht));
    // Scan 1: DC of all three components, every difference 0 (4 Y + Cb + Cr).
    jpeg.extend(segment(0xDA, &[3, 1, 0x00, 2, 0x00, 3, 0x00, 0, 0, 0x00]));
    let mut bits = Bits::default();
    for _ in 0..6 * mcus {
        bits.put(0b00, 2);
    }
    jpeg.extend(bits.finish());
    // Scan 2: luma AC 1..=63 at Al = 13: each block "01" + "100" (4), then EOB.
    jpeg.extend(segment(0xDA, &[1, 1, 0x00, 1, 63, 0x0D]));
    let mut bits = Bits::default();
    for _ in 0..4 * mcus {
        bits.put(0b01, 2);
        bits.put(0b100, 3);
        bits.put(0b00, 2);
    }
    jpeg.extend(bits.finish());
    jpeg.extend([0xFF, 0xD9]);
    jpeg
}

/// The first luma AC coefficient (natural index 1) of every luma block of a 4:2:0
/// JPEG, as libjpeg reads it.
fn first_luma_ac(jpeg: &[u8]) -> Vec<i16> {
    let read = libjpeg::read_coefficients(
        jpeg,
        &Budget::UNLIMITED,
        |_| true,
        |_, planes| {
            let y = &planes[0];
            y.rows
                .iter()
                .take(y.height)
                .flat_map(|row| row.iter().take(y.width).map(|block| block[1]))
                .collect::<Vec<i16>>()
        },
    );
    let Ok(Some(seen)) = read else {
        panic!("{read:?}")
    };
    seen
}

#[test]
fn sixteen_bit_source_coefficients_are_clamped_on_the_fast_path() {
    // 1 MCU row (Huffman statistics always exact) and 32 (sampled by default).
    for height in [16, 512] {
        let crafted = sixteen_bit_coefficients(height);
        let blocks = 4 * usize::from(height / 16);
        assert_eq!(
            first_luma_ac(&crafted),
            vec![-32768; blocks],
            "the crafted source"
        );
        let clean = libjpeg::verify(&crafted, &Budget::UNLIMITED, libjpeg::Depth::Coefficients);
        assert_eq!(clean, Ok(true));
        // Same steps at q50: the coefficients would pass through unchanged, and
        // their size-16 magnitudes have no Huffman symbol in baseline coding.
        for sample in [1, huffman::SAMPLE] {
            let tuning = fastpath::Tuning {
                huffman_sample: sample,
                ..fastpath::Tuning::default()
            };
            let out = fastpath::transcode(&crafted, 50, &Budget::UNLIMITED, tuning);
            let out = out.expect("transcodes").expect("takes the fast path");
            verify_jpeg(&out).expect("the output decodes without a warning");
            let clamped = vec![-1023; blocks];
            assert_eq!(
                first_luma_ac(&out),
                clamped,
                "{height} rows, sample {sample}"
            );
        }
    }
}

#[test]
fn every_fixture_output_decodes_without_a_warning() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for dir in ["tests/fixtures/imaging", "tests/fixtures/photos"] {
        let entries = std::fs::read_dir(format!("{root}/{dir}")).expect("fixture directory");
        for entry in entries {
            let path = entry.expect("entry").path();
            let Ok(input) = std::fs::read(&path) else {
                continue;
            };
            if sniff(&input).is_none() {
                continue; // the README, the script
            }
            for route in [Route::Auto, Route::GeneralOnly] {
                let out = transform_with(&input, &options(Limits::default()), route)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                verify_jpeg(&out.bytes)
                    .unwrap_or_else(|e| panic!("{} {route:?}: {e}", path.display()));
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "{checked}");
}

/// A GIF whose first frame claims far more pixels than its 1×1 screen: refused before
/// its indices are allocated. The `gif` crate's memory limit does not cover the way
/// the first frame is read; a 65535×65535 frame took 4.3 GB before the check.
#[test]
fn a_gif_frame_larger_than_its_screen_is_refused_before_allocating() {
    let (w, h) = (8192u16, 8200u16);
    let mut gif_bytes = Vec::new();
    {
        let mut encoder =
            gif::Encoder::new(&mut gif_bytes, 1, 1, &[0, 0, 0, 255, 255, 255]).expect("encoder");
        let frame = gif::Frame {
            width: w,
            height: h,
            buffer: vec![0u8; usize::from(w) * usize::from(h)].into(),
            ..gif::Frame::default()
        };
        encoder.write_frame(&frame).expect("frame");
    }
    let err = transform(&gif_bytes, &options(Limits::default())).expect_err("refused");
    assert!(
        err.to_string()
            .contains("the first frame is 8192x8200, more than a 1x1 image may allocate"),
        "{err}"
    );
}

/// A GIF's first frame within what its screen may allocate but over the pixel limit
/// (its screen at the limit): refused, as its pixels are decoded before the screen
/// clips them.
#[test]
fn a_gif_frame_over_the_pixel_limit_is_refused() {
    let mut gif_bytes = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut gif_bytes, 100, 100, &[0, 0, 0, 255, 255, 255])
            .expect("encoder");
        let frame = gif::Frame {
            width: 100,
            height: 150,
            buffer: vec![0u8; 100 * 150].into(),
            ..gif::Frame::default()
        };
        encoder.write_frame(&frame).expect("frame");
    }
    let limits = Limits {
        max_pixels: 10_000,
        ..Limits::default()
    };
    let err = transform(&gif_bytes, &options(limits)).expect_err("refused");
    assert!(
        err.to_string()
            .contains("the first frame is 100x150, more than 10000 pixels"),
        "{err}"
    );
}

/// A little-endian TIFF of one `width` × `height` page whose strips all hold `strip`,
/// compressed with `compression`.
fn tiff_with_strips(width: u32, height: u32, compression: u16, strip: &[u8]) -> Vec<u8> {
    let data_at = 8u32;
    let ifd_at = data_at + strip.len() as u32;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd_at.to_le_bytes());
    out.extend_from_slice(strip);
    push_ifd(
        &mut out,
        &[
            (256, 4, 1, width),
            (257, 4, 1, height),
            (258, 3, 1, 8),
            (259, 3, 1, u32::from(compression)),
            (262, 3, 1, 1),
            (273, 4, 1, data_at),
            (277, 3, 1, 1),
            (278, 4, 1, height),
            (279, 4, 1, strip.len() as u32),
        ],
    );
    out
}

/// Appends a little-endian IFD of `(tag, type, count, value or offset)` entries (SHORT
/// = 3, LONG = 4; in tag order) and the zero offset that ends the chain.
fn push_ifd(out: &mut Vec<u8>, entries: &[(u16, u16, u32, u32)]) {
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for &(tag, kind, count, value) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        let mut field = [0u8; 4];
        match (kind, count) {
            (3, 1) => field[..2].copy_from_slice(&(value as u16).to_le_bytes()),
            _ => field.copy_from_slice(&value.to_le_bytes()),
        }
        out.extend_from_slice(&field);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// A JPEG-compressed TIFF is refused before its strips are decoded: each strip is a
/// whole JPEG the `tiff` crate decodes without pixbatch's limits, so a 1×N page whose
/// strips all point at one large JPEG cost N full decodes. The same page uncompressed
/// still converts.
#[test]
fn jpeg_compressed_tiff_is_refused_before_decoding() {
    let gray = gradient(16, 16);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&gray, 16, 16, image::ExtendedColorType::L8)
        .expect("jpeg");
    let err = transform(
        &tiff_with_strips(16, 16, 7, &jpeg),
        &options(Limits::default()),
    )
    .expect_err("refused");
    assert!(
        err.to_string()
            .contains("JPEG-compressed TIFF is not supported"),
        "{err}"
    );
    let plain = transform(
        &tiff_with_strips(16, 16, 1, &gray),
        &options(Limits::default()),
    )
    .expect("an uncompressed TIFF converts");
    assert_eq!((plain.report.width, plain.report.height), (16, 16));
}

/// A 1-pixel-wide gray TIFF of `rows` strips of one row each, every strip pointing at
/// the same `strip` bytes.
fn tiff_sharing_one_strip(rows: u32, compression: u16, strip: &[u8]) -> Vec<u8> {
    let data_at = 8u32;
    let offsets_at = data_at + strip.len() as u32;
    let counts_at = offsets_at + 4 * rows;
    let ifd_at = counts_at + 4 * rows;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&ifd_at.to_le_bytes());
    out.extend_from_slice(strip);
    for value in [data_at, strip.len() as u32] {
        for _ in 0..rows {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    push_ifd(
        &mut out,
        &[
            (256, 4, 1, 1),
            (257, 4, 1, rows),
            (258, 3, 1, 8),
            (259, 3, 1, u32::from(compression)),
            (262, 3, 1, 1),
            (273, 4, rows, offsets_at),
            (277, 3, 1, 1),
            (278, 4, 1, 1),
            (279, 4, rows, counts_at),
        ],
    );
    out
}

/// TIFF strips that all point at the same bytes cost one decode each, whatever the
/// page's size: here 4096 strips of one pixel share 1 MB of PackBits no-op runs
/// before their one literal byte, 4 G steps of the PackBits reader for a 1×4096 page
/// (seconds to minutes). The strips are decoded one by one under the time budget, so
/// the work stops at the deadline; with few strips the same page converts (two: each
/// strip is read twice, and eight went over the default 2 s of CPU once in a debug
/// build on a busy 2-core machine).
#[test]
fn tiff_strips_sharing_their_bytes_stop_at_the_time_budget() {
    let mut strip = vec![0x80u8; 1 << 20];
    strip.extend_from_slice(&[0x00, 0x7f]);
    let few = transform(
        &tiff_sharing_one_strip(2, 32773, &strip),
        &options(Limits::default()),
    )
    .expect("a PackBits TIFF of 2 shared strips converts");
    assert_eq!((few.report.width, few.report.height), (1, 2));

    let limits = Limits {
        time: TimeBudget {
            base: Duration::from_millis(100),
            per_megapixel: Duration::ZERO,
        },
        ..Limits::default()
    };
    let start = thread_cpu_time();
    let err = transform(
        &tiff_sharing_one_strip(4096, 32773, &strip),
        &options(limits),
    )
    .map(|t| t.report);
    let spent = thread_cpu_time() - start;
    assert!(
        matches!(err, Err(ImagingError::OverBudget { budget }) if budget == Duration::from_millis(100)),
        "{err:?}"
    );
    // Checked after every strip: it stops within a strip of the deadline.
    assert!(spent < Duration::from_millis(600), "{spent:?}");
}
