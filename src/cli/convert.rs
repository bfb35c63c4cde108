//! `pixbatch convert`: the service's per-image transform on local files, one report
//! line per file and a summary. Useful on its own, and how codec speed is measured
//! from outside the service.

use std::{
    io::Write,
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;

use crate::imaging::{self, Limits, MaxBytes, Quality, Route, TimeBudget, TransformOptions};

/// Options of `pixbatch convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Output quality: 1–100, `relative:N%`, or `auto` / `auto:N` (the lowest
    /// quality whose output reaches SSIMULACRA2 N, up to two decimals; 70 for `auto`).
    #[arg(long, default_value = "50", value_parser = Quality::parse)]
    pub quality: Quality,
    /// Most bytes per output (`150000`, `150KB`, `2MB`; KB = 1000 bytes): the highest
    /// quality that fits, downscaled when even the lowest does not.
    #[arg(long, value_parser = MaxBytes::parse)]
    pub max_bytes: Option<MaxBytes>,
    /// Worker threads; the number of cores when unset.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory for the outputs (`NAME.jpg` each).
    #[arg(long)]
    pub out: PathBuf,
    /// Largest image accepted, in pixels.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Most scans a JPEG may have (as the service's `MAX_IMAGE_SCANS`).
    #[arg(long, default_value_t = imaging::DEFAULT_MAX_SCANS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_scans: u32,
    /// CPU time every file may use (as the service's `IMAGE_TIME_BUDGET`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub time_budget: Duration,
    /// Extra CPU time per million pixels (as the service's `IMAGE_TIME_PER_MEGAPIXEL`).
    #[arg(long, default_value = "40ms", value_parser = humantime::parse_duration)]
    pub time_per_megapixel: Duration,
    /// Never take the JPEG → JPEG fast path (for benchmarks: `benches/imaging`).
    #[arg(long, hide = true)]
    pub no_fast_path: bool,
    /// Input files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

struct Line {
    index: usize,
    text: String,
    ok: bool,
    megapixels: f64,
    bytes_in: u64,
    bytes_out: u64,
    cpu_ms: f64,
    /// Outputs whose SSIMULACRA2 target was missed.
    target_missed: bool,
    downscaled: bool,
}

/// Converts every file; exits non-zero when any failed.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let options = TransformOptions {
        quality: args.quality,
        default_quality: 50,
        limits: Limits {
            max_pixels: args.max_pixels,
            max_input_bytes: u64::MAX,
            max_scans: args.max_scans,
            time: TimeBudget {
                base: args.time_budget,
                per_megapixel: args.time_per_megapixel,
            },
        },
        max_bytes: args.max_bytes,
    };
    let route = if args.no_fast_path {
        Route::GeneralOnly
    } else {
        Route::Auto
    };
    let codec = imaging::Codec::get();
    eprintln!("{codec}");
    let next = AtomicUsize::new(0);
    let lines = Mutex::new(Vec::with_capacity(args.files.len()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.min(args.files.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = args.files.get(i) else { break };
                    let line = convert_one(i, path, &args.out, &options, route);
                    eprintln!("{}", line.text);
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut lines = lines.into_inner().unwrap_or_default();
    lines.sort_by_key(|l| l.index);
    let out = &mut std::io::stdout().lock();
    for l in &lines {
        writeln!(out, "{}", l.text)?;
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    let mp: f64 = lines.iter().map(|l| l.megapixels).sum();
    let (bin, bout): (u64, u64) = lines
        .iter()
        .fold((0, 0), |(a, b), l| (a + l.bytes_in, b + l.bytes_out));
    let cpu: f64 = lines.iter().map(|l| l.cpu_ms).sum();
    let missed = lines.iter().filter(|l| l.target_missed).count();
    let downscaled = lines.iter().filter(|l| l.downscaled).count();
    writeln!(
        out,
        "summary\tfiles={} failed={failed} threads={threads} seconds={elapsed:.3} megapixels={mp:.2} mp_per_s={:.2} bytes_in={bin} bytes_out={bout} ratio={:.4} cpu_ms={cpu:.1} target_missed={missed} downscaled={downscaled} codec={} chroma={}",
        lines.len(),
        mp / elapsed.max(1e-9),
        bout as f64 / (bin.max(1)) as f64,
        codec.kernels,
        codec.chroma.as_str(),
    )?;
    if failed > 0 {
        anyhow::bail!("{failed} file(s) failed");
    }
    Ok(())
}

fn convert_one(
    index: usize,
    path: &PathBuf,
    out: &std::path::Path,
    options: &TransformOptions,
    route: Route,
) -> Line {
    let name = path.display().to_string();
    let fail = |text: String| Line {
        index,
        text,
        ok: false,
        megapixels: 0.0,
        bytes_in: 0,
        bytes_out: 0,
        cpu_ms: 0.0,
        target_missed: false,
        downscaled: false,
    };
    let input = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return fail(format!("{name}\terror\t{e}")),
    };
    let t = Instant::now();
    let cpu = imaging::thread_cpu_time();
    let result = imaging::transform_with(&input, options, route);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let cpu_ms = imaging::thread_cpu_time().saturating_sub(cpu).as_secs_f64() * 1000.0;
    match result {
        Ok(done) => {
            let stem = path
                .file_stem()
                .map_or_else(|| format!("{index}"), |s| s.to_string_lossy().into_owned());
            let target = out.join(format!("{stem}.jpg"));
            if let Err(e) = std::fs::write(&target, &done.bytes) {
                return fail(format!("{name}\terror\twriting {}: {e}", target.display()));
            }
            let r = &done.report;
            Line {
                index,
                text: format!(
                    "{name}\tok\t{:?} {}x{}\t{} -> {} bytes\tq{}\t{ms:.1} ms{}\tcpu={cpu_ms:.1}ms tries={} binding={}{}{}{}",
                    r.input_format,
                    r.width,
                    r.height,
                    r.input_bytes,
                    r.output_bytes,
                    r.quality,
                    if r.kept_original {
                        "\tkept original"
                    } else if r.fast_path {
                        "\tfast path"
                    } else {
                        ""
                    },
                    r.tries,
                    binding_name(r.binding),
                    r.score.map_or(String::new(), |s| format!(" score={s:.2}")),
                    // Said only when the score is of a window, not the whole image.
                    r.scored_pixels
                        .filter(|&p| p < u64::from(r.width) * u64::from(r.height))
                        .map_or(String::new(), |p| format!(" scored_pixels={p}")),
                    if r.downscaled { " downscaled" } else { "" },
                ),
                ok: true,
                megapixels: f64::from(r.width) * f64::from(r.height) / 1e6,
                bytes_in: r.input_bytes,
                bytes_out: r.output_bytes,
                cpu_ms,
                target_missed: r.target_missed(),
                downscaled: r.downscaled,
            }
        }
        Err(e) => fail(format!("{name}\terror\t{e}")),
    }
}

/// The report's name of a binding limit (as the images API spells it).
fn binding_name(b: imaging::Binding) -> &'static str {
    match b {
        imaging::Binding::Quality => "quality",
        imaging::Binding::Target => "target",
        imaging::Binding::MaxBytes => "max_bytes",
        imaging::Binding::QualityRange => "quality_range",
    }
}
