//! Hostile inputs: CPU bombs (scan count, CPU time) and damaged data that libjpeg
//! papers over.

use std::time::Duration;

use super::libjpeg::{self, Budget, Script, thread_cpu_time};
use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/imaging/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn options(limits: Limits) -> TransformOptions {
    TransformOptions {
        quality: Quality::Absolute(50),
        default_quality: 50,
        limits,
    }
}

/// A gray gradient, nearly flat within each block (as the CPU bomb of issue 16:
/// every scan of it is a few bytes, yet the decoder walks every block of it).
fn gradient(width: u32, height: u32) -> Vec<u8> {
    (0..height)
        .flat_map(|y| (0..width).map(move |x| ((x / 64 + y / 64) * 9 % 200 + 20) as u8))
        .collect()
}

/// `jpeg` with its last scan (its last SOS segment and data, up to EOI) appended
/// `copies` more times before EOI.
pub(super) fn repeat_last_scan(jpeg: &[u8], copies: usize) -> Vec<u8> {
    assert!(jpeg.ends_with(&[0xFF, 0xD9]), "ends with EOI");
    let eoi = jpeg.len() - 2;
    let last = jpeg[..eoi]
        .windows(2)
        .rposition(|w| w == [0xFF, 0xDA])
        .expect("a scan");
    let scan = &jpeg[last..eoi];
    let mut out = Vec::with_capacity(jpeg.len() + scan.len() * copies);
    out.extend_from_slice(&jpeg[..eoi]);
    for _ in 0..copies {
        out.extend_from_slice(scan);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// The CPU bomb of issue 16 at `side` × `side`: a gray progressive JPEG (libjpeg's
/// standard script, 6 scans) whose last scan is repeated 3000 times.
fn cpu_bomb(side: u32, script: Script) -> Vec<u8> {
    let jpeg = libjpeg::encode_gray_progressive(&gradient(side, side), side, side, 75, script)
        .expect("encodes");
    repeat_last_scan(&jpeg, 3000)
}

#[test]
fn cpu_bomb_fails_on_the_scan_limit_before_decoding() {
    let bomb = cpu_bomb(256, Script::Standard);
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
    let bomb = cpu_bomb(64, Script::NoRefinement);
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
    let planes = libjpeg::reencode_planes(&bomb, &budget, 50, true);
    assert!(planes.is_err_and(limit));
    let pixels = libjpeg::decode(&bomb, &budget, decode::GENERAL_DECODE);
    assert!(pixels.is_err_and(limit));
    let verified = libjpeg::verify(&bomb, &budget, libjpeg::Depth::Coefficients);
    assert!(verified.is_err_and(limit));
}

#[test]
fn cpu_bomb_without_a_scan_limit_stops_at_the_time_budget() {
    // Warning-free repeats (no successive approximation), so only time stops it.
    let bomb = cpu_bomb(512, Script::NoRefinement);
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
    let bomb = cpu_bomb(8000, Script::Standard);
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
