//! A seeded mutation fuzzer for `imaging::transform`, on stable Rust, in-process.
//!
//! Every case mutates one fixture of `tests/fixtures/imaging` or `tests/fixtures/photos`
//! ([`mutate`]) and holds the transform to its contract: no panic escapes (none is
//! even raised in pixbatch's own code), it stays within the time budget, and it ends
//! in a clean error or a JPEG that libjpeg decodes without a warning, baseline 4:2:0
//! unless the input was kept as it is. Peak RSS stays bounded over the run.
//!
//! `cargo test --test fuzz` runs a few thousand cases (CI, under a minute); `just fuzz` runs a release
//! build for as long as asked. Environment: `PIXBATCH_FUZZ_CASES` (default 3000),
//! `PIXBATCH_FUZZ_SECS` (default 45), `PIXBATCH_FUZZ_SEED` (default fixed), whichever
//! limit comes first ends the run. A failing case is written to
//! `tests/fixtures/imaging/fuzz/` (its name holds the seed and case), where
//! [`fuzz_fixtures_replay`] holds every case that ever failed to the same contract.

mod mutate;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pixbatch::imaging::{
    self, ImagingError, Limits, Quality, Route, TransformOptions, thread_cpu_time,
};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// The default seed: runs are reproducible unless told otherwise.
const DEFAULT_SEED: u64 = 0x5EED_0016_F022_u64;

/// Peak resident memory allowed over a run (the limits below keep a case's own
/// buffers to a few hundred megabytes at most).
const MAX_RSS_BYTES: u64 = 1536 << 20;

/// What a case may spend beyond its budget: libjpeg checks once per row of blocks,
/// the `image` decoders only between steps.
const TIME_SLACK: Duration = Duration::from_millis(1500);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fuzz_dir() -> PathBuf {
    root().join("tests/fixtures/imaging/fuzz")
}

/// Every image fixture (the corpus the fuzzer mutates).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["tests/fixtures/imaging", "tests/fixtures/photos"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("fixture directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).expect("fixture");
            if imaging::sniff(&bytes).is_some() {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                out.push((name.into_owned(), bytes));
            }
        }
    }
    assert!(out.len() > 30, "fixtures found: {}", out.len());
    out
}

/// The limits of every case: the service's, with a smaller pixel cap so that a
/// mutated header cannot make a case allocate gigabytes.
fn limits() -> Limits {
    Limits {
        max_pixels: 16_000_000,
        ..Limits::default()
    }
}

thread_local! {
    /// The location of the last panic raised on this thread during a case.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static IN_CASE: RefCell<bool> = const { RefCell::new(false) };
}

/// Records panics raised during a case (decoders of dependencies do panic on some
/// input, and transform catches that) instead of printing them; others as usual.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(|c| *c.borrow()) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC.with(|p| *p.borrow_mut() = Some(location));
            } else {
                default(info);
            }
        }));
    });
}

/// How a case ended, for the summary.
fn outcome(result: &Result<imaging::Transformed, ImagingError>) -> String {
    match result {
        Ok(t) if t.report.kept_original => "ok: kept original".into(),
        Ok(t) if t.report.fast_path => "ok: fast path".into(),
        Ok(_) => "ok: re-encoded".into(),
        Err(ImagingError::Decode { .. }) => "error: decode".into(),
        Err(ImagingError::Corrupt(_)) => "error: corrupt image data".into(),
        Err(ImagingError::TooManyScans { .. }) => "error: too many scans".into(),
        Err(ImagingError::OverBudget { .. }) => "error: over time budget".into(),
        Err(ImagingError::TooManyPixels { .. }) => "error: too many pixels".into(),
        Err(ImagingError::UnsupportedFormat) => "error: unsupported format".into(),
        Err(ImagingError::Encode(_)) => "error: encode".into(),
    }
}

/// The frame header of a JPEG: (SOF marker, components with their sampling).
fn sof(jpeg: &[u8]) -> Option<(u8, Vec<(u8, u8)>)> {
    let seg = mutate::segments(jpeg)
        .into_iter()
        .take_while(|s| s.marker != 0xDA)
        .find(|s| matches!(s.marker, 0xC0..=0xC3))?;
    let body = jpeg.get(seg.at + 4..seg.at + seg.len)?;
    let count = usize::from(*body.get(5)?);
    let comps = body
        .get(6..6 + 3 * count)?
        .chunks_exact(3)
        .map(|c| (c[1] >> 4, c[1] & 15))
        .collect();
    Some((seg.marker, comps))
}

/// Runs one input through the transform and checks the contract; `Err` says how
/// it was broken.
fn check(input: &[u8], options: &TransformOptions, route: Route) -> Result<String, String> {
    PANIC.with(|p| p.borrow_mut().take());
    IN_CASE.with(|c| *c.borrow_mut() = true);
    let start = thread_cpu_time();
    let result = std::panic::catch_unwind(|| imaging::transform_with(input, options, route));
    let spent = thread_cpu_time() - start;
    IN_CASE.with(|c| *c.borrow_mut() = false);
    let panicked_at = PANIC.with(|p| p.borrow_mut().take());
    let result =
        result.map_err(|_| format!("a panic escaped transform, raised at {panicked_at:?}"))?;
    if let Some(location) = panicked_at.filter(|l| l.starts_with("src/")) {
        return Err(format!("panic in pixbatch's own code at {location}"));
    }
    // The budget of the header's size (unknown when the header is unreadable:
    // then the base alone, plus the pixel cap's share).
    let pixels = imaging::sniff(input)
        .and_then(|f| imaging::dimensions(input, f).ok())
        .map_or(options.limits.max_pixels, |(w, h)| {
            u64::from(w) * u64::from(h)
        });
    let budget = options
        .limits
        .time
        .for_pixels(pixels.min(options.limits.max_pixels));
    if spent > budget.saturating_add(TIME_SLACK) {
        return Err(format!("took {spent:?} of CPU time, budget {budget:?}"));
    }
    if let Ok(out) = &result {
        check_output(input, out)?;
    }
    if result.as_ref().is_err_and(|e| e.to_string().is_empty()) {
        return Err("an error without a message".into());
    }
    Ok(outcome(&result))
}

/// What every output must be: a JPEG libjpeg decodes without a warning, and either
/// the input itself (a JPEG kept as it is) or baseline 4:2:0.
fn check_output(input: &[u8], out: &imaging::Transformed) -> Result<(), String> {
    imaging::verify_jpeg(&out.bytes).map_err(|e| format!("output does not decode cleanly: {e}"))?;
    if out.report.kept_original {
        if out.bytes != input || imaging::sniff(input) != Some(imaging::Format::Jpeg) {
            return Err("kept original is not the input JPEG".into());
        }
    } else if sof(&out.bytes) != Some((0xC0, vec![(2, 2), (1, 1), (1, 1)])) {
        return Err(format!(
            "output is not baseline 4:2:0: {:?}",
            sof(&out.bytes)
        ));
    }
    Ok(())
}

/// Options of one case: mostly q50, sometimes any quality or a relative one.
fn case_options(rng: &mut impl Rng) -> (TransformOptions, Route) {
    let quality = match rng.random_range(0..10) {
        0..=5 => Quality::Absolute(50),
        6..=8 => Quality::Absolute(rng.random_range(1..=100)),
        _ => Quality::Relative(rng.random_range(10..=100)),
    };
    let route = if rng.random_bool(0.25) {
        Route::GeneralOnly
    } else {
        Route::Auto
    };
    let options = TransformOptions {
        quality,
        default_quality: 50,
        limits: limits(),
        max_bytes: None,
    };
    (options, route)
}

/// Peak resident set of this process (Linux: `VmHWM`), when known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn fuzz_transform() {
    install_panic_hook();
    let cases: u64 = env_or("PIXBATCH_FUZZ_CASES", 3000);
    let secs: f64 = env_or("PIXBATCH_FUZZ_SECS", 45.0);
    let seed: u64 = env_or("PIXBATCH_FUZZ_SEED", DEFAULT_SEED);
    let corpus = corpus();
    let started = Instant::now();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut mutations: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut run = 0;
    println!("fuzz: seed {seed:#x}, up to {cases} cases or {secs} s");
    while run < cases && started.elapsed().as_secs_f64() < secs {
        // One generator per case, from (seed, case): any case replays on its own.
        let mut rng =
            Xoshiro256PlusPlus::seed_from_u64(seed ^ run.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (name, original) = &corpus[rng.random_range(0..corpus.len())];
        let (input, applied) = mutate::mutate(original, &mut rng);
        for m in &applied {
            *mutations.entry(m).or_default() += 1;
        }
        let (options, route) = case_options(&mut rng);
        match check(&input, &options, route) {
            Ok(kind) => *outcomes.entry(kind).or_default() += 1,
            Err(why) => {
                let file = fuzz_dir().join(format!("seed{seed:x}-case{run}-{name}.bin"));
                let saved = std::fs::write(&file, &input).map(|()| file.display().to_string());
                let message = format!(
                    "case {run} (seed {seed:#x}, {name}, {applied:?}, {route:?}, {:?}): {why}; input saved: {saved:?}",
                    options.quality
                );
                println!("FAIL {message}");
                failures.push(message);
            }
        }
        run += 1;
    }
    let elapsed = started.elapsed();
    let rss = peak_rss();
    println!(
        "fuzz: {run} cases in {:.1} s, {} failed, peak RSS {} MiB",
        elapsed.as_secs_f64(),
        failures.len(),
        rss.map_or("?".into(), |b| (b >> 20).to_string())
    );
    for (kind, n) in &outcomes {
        println!("  {n:>7}  {kind}");
    }
    for (mutation, n) in &mutations {
        println!("  {n:>7}  mutation: {mutation}");
    }
    assert!(failures.is_empty(), "seed {seed:#x}: {failures:#?}");
    assert!(run > 0, "no case ran");
    if let Some(rss) = rss {
        assert!(rss < MAX_RSS_BYTES, "peak RSS {} MiB", rss >> 20);
    }
}

/// Every input that ever failed the fuzzer, held to the same contract.
#[test]
fn fuzz_fixtures_replay() {
    install_panic_hook();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fuzz_dir())
        .expect("the fuzz cases' folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.sort();
    // The hand-made hostile cases at least: a replay of nothing proves nothing.
    assert!(
        paths.len() >= 5,
        "{} cases in {}",
        paths.len(),
        fuzz_dir().display()
    );
    let options = TransformOptions {
        quality: Quality::Absolute(50),
        default_quality: 50,
        limits: limits(),
        max_bytes: None,
    };
    let mut failures = Vec::new();
    for path in &paths {
        let input = std::fs::read(path).expect("fuzz fixture");
        for route in [Route::Auto, Route::GeneralOnly] {
            if let Err(why) = check(&input, &options, route) {
                failures.push(format!("{} {route:?}: {why}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The output check catches what it is there to catch.
#[test]
fn the_output_check_rejects_what_must_not_be_stored() {
    let options = TransformOptions {
        quality: Quality::Absolute(50),
        default_quality: 50,
        limits: limits(),
        max_bytes: None,
    };
    let photo = std::fs::read(root().join("tests/fixtures/imaging/photo_q85.jpg")).expect("photo");
    let good = imaging::transform(&photo, &options).expect("transforms");
    assert_eq!(check_output(&photo, &good), Ok(()));
    // Damaged bytes, as the never-larger rule used to keep them.
    let mut cut = photo[..photo.len() / 2].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    let mut kept = good.clone();
    kept.bytes = cut.clone();
    kept.report.kept_original = true;
    assert!(
        check_output(&cut, &kept)
            .unwrap_err()
            .contains("does not decode cleanly")
    );
    // A kept original that is not the input.
    let mut other = good.clone();
    other.report.kept_original = true;
    assert!(
        check_output(&photo, &other)
            .unwrap_err()
            .contains("not the input")
    );
    // A clean JPEG that is not baseline 4:2:0 (the progressive 4:4:4 fixture).
    let progressive =
        std::fs::read(root().join("tests/fixtures/imaging/progressive_444.jpg")).expect("fixture");
    let mut wrong = good;
    wrong.bytes = progressive;
    assert!(
        check_output(&photo, &wrong)
            .unwrap_err()
            .contains("not baseline 4:2:0")
    );
}
