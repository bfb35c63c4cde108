//! `pixbatch convert`: the service's per-image transform on local files, one report
//! line per file and a summary. Useful on its own, and how codec speed is measured
//! from outside the service.

use std::{
    collections::HashMap,
    ffi::{OsStr, OsString},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;

use super::write_whole;
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
    /// Directory for the outputs (`NAME.jpg` each, `NAME` the input's file name without
    /// its extension). Refused before any work when two inputs would write the same
    /// output or an output would replace an input.
    #[arg(long)]
    pub out: PathBuf,
    /// Largest image accepted, in pixels.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Largest file accepted, in bytes (as the service's `MAX_IMAGE_BYTES`); a larger
    /// one (or a device that never ends) is refused without being read whole.
    #[arg(long, default_value_t = imaging::Limits::default().max_input_bytes)]
    pub max_input_bytes: u64,
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
    let targets = targets(&args.files, &args.out)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let options = TransformOptions {
        quality: args.quality,
        default_quality: 50,
        limits: Limits {
            max_pixels: args.max_pixels,
            max_input_bytes: args.max_input_bytes,
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
    super::tell!("{codec}");
    let next = AtomicUsize::new(0);
    let lines = Mutex::new(Vec::with_capacity(args.files.len()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.min(args.files.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(path), Some(target)) = (args.files.get(i), targets.get(i)) else {
                        break;
                    };
                    let line = convert_one(i, path, target, &options, route);
                    super::tell!("{}", line.text);
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

/// Each input's output, `OUT/NAME.jpg`; an error naming the files when two inputs
/// would write one output (the second would silently replace the first) or an output
/// is an input (a photo replaced by its quality-50 copy).
///
/// Paths are compared as the filesystem sees them: an existing output that is an input
/// under another spelling (`IMG.jpg` for `IMG.JPG` on a case-insensitive disk, a link)
/// is found by its file identity, and two outputs whose names differ only in case
/// count as one, which they are on such a disk.
fn targets(files: &[PathBuf], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out_dir = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    let inputs: HashMap<PathBuf, &PathBuf> = files
        .iter()
        .filter_map(|f| Some((f.canonicalize().ok()?, f)))
        .collect();
    let identities: HashMap<(u64, u64), &PathBuf> = files
        .iter()
        .filter_map(|f| Some((super::file_identity(f)?, f)))
        .collect();
    let mut taken: HashMap<Vec<u8>, &PathBuf> = HashMap::new();
    let mut problems = Vec::new();
    let mut targets = Vec::with_capacity(files.len());
    for (index, file) in files.iter().enumerate() {
        // The input's own name, bytes and all: a name that is not UTF-8 (a Latin-1
        // `caf\xe9.png`) was written as `caf\u{FFFD}.jpg`, and two such names as one.
        let mut name = file
            .file_stem()
            .map_or_else(|| OsString::from(index.to_string()), OsStr::to_os_string);
        name.push(".jpg");
        let target = out.join(&name);
        let resolved = out_dir.join(&name);
        let same_input = inputs
            .get(&resolved)
            .or_else(|| super::file_identity(&resolved).and_then(|id| identities.get(&id)));
        // Compared as a case-insensitive disk would: Unicode case folding where the
        // name is text, ASCII's on the bytes of one that is not.
        let folded = match resolved.to_str() {
            Some(text) => text.to_lowercase().into_bytes(),
            None => resolved.as_os_str().as_encoded_bytes().to_ascii_lowercase(),
        };
        if let Some(input) = same_input {
            problems.push(format!(
                "{}: its output {} would replace the input {}",
                file.display(),
                target.display(),
                input.display()
            ));
        } else if let Some(first) = taken.get(&folded) {
            problems.push(format!(
                "{}: its output {} is also {}'s",
                file.display(),
                target.display(),
                first.display()
            ));
        } else {
            taken.insert(folded, file);
        }
        targets.push(target);
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "nothing converted: {} (choose another --out, or convert such files separately)",
            problems.join("; ")
        );
    }
    Ok(targets)
}

/// The file's bytes, refused once past `limit` without reading further.
fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "larger than {limit} bytes (--max-input-bytes)"
        )));
    }
    Ok(bytes)
}

fn convert_one(
    index: usize,
    path: &Path,
    target: &Path,
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
    let input = match read_at_most(path, options.limits.max_input_bytes) {
        Ok(b) => b,
        Err(e) => return fail(format!("{name}\terror\t{e}")),
    };
    let t = Instant::now();
    let cpu = imaging::thread_cpu_time();
    // A panic would be a bug of ours: this file fails, the others go on, and the run
    // ends with its summary (as the service's pool reports `transform_crashed`).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        imaging::transform_with(&input, options, route)
    }));
    let Ok(result) = result else {
        return fail(format!("{name}\terror\tthe transform crashed"));
    };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let cpu_ms = imaging::thread_cpu_time().saturating_sub(cpu).as_secs_f64() * 1000.0;
    match result {
        Ok(done) => {
            if let Err(e) = write_whole(target, &done.bytes) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_without_being_read_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("eleven");
        std::fs::write(&file, b"eleven byte").expect("write");
        assert_eq!(read_at_most(&file, 11).expect("fits"), b"eleven byte");
        let err = read_at_most(&file, 10).expect_err("over");
        assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
        // A device that never ends is cut off at the limit.
        let err = read_at_most(Path::new("/dev/zero"), 1 << 20).expect_err("endless");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    /// Two inputs with one name, or an output over its input, stop the run before any
    /// work; distinct names map to `OUT/NAME.jpg`.
    #[test]
    fn outputs_never_collide_nor_replace_an_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, b, out) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("out"),
        );
        for d in [&a, &b, &out] {
            std::fs::create_dir_all(d).expect("dir");
        }
        let photo = |d: &Path, name: &str| {
            let p = d.join(name);
            std::fs::write(&p, b"not read here").expect("file");
            p
        };
        let (a1, b1, a2) = (photo(&a, "1.jpg"), photo(&b, "1.png"), photo(&a, "2.jpg"));

        let ok = targets(&[a1.clone(), a2.clone()], &out).expect("distinct names");
        assert_eq!(ok, vec![out.join("1.jpg"), out.join("2.jpg")]);

        let same_name = targets(&[a1.clone(), b1.clone()], &out).expect_err("one name");
        assert!(same_name.to_string().contains("is also"), "{same_name}");

        let over_input = targets(std::slice::from_ref(&a1), &a).expect_err("its own folder");
        assert!(
            over_input.to_string().contains("would replace the input"),
            "{over_input}"
        );
        // Also when the folder is named another way.
        let other_way = a.join("..").join("a");
        assert!(targets(std::slice::from_ref(&a1), &other_way).is_err());

        // An existing output that is an input under another name (as `IMG.jpg` is
        // `IMG.JPG` on a case-insensitive disk; here a hard link) is found by identity.
        let upper = photo(&b, "IMG.JPG");
        std::fs::hard_link(&upper, b.join("IMG.jpg")).expect("link");
        let aliased = targets(std::slice::from_ref(&upper), &b).expect_err("an alias");
        assert!(
            aliased.to_string().contains("would replace the input"),
            "{aliased}"
        );
        // Two outputs whose names differ only in case are one on such a disk.
        let (lower, capital) = (photo(&a, "photo.png"), photo(&b, "Photo.jpg"));
        let folded = targets(&[lower, capital], &out).expect_err("one name on such a disk");
        assert!(folded.to_string().contains("is also"), "{folded}");
    }

    /// A name that is not UTF-8 keeps its bytes in its output's name, and two such
    /// names are two outputs (both were `\u{FFFD}t\u{FFFD}.jpg`: one name, refused).
    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_keep_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out");
        let latin1 = |bytes: &[u8]| dir.path().join(OsStr::from_bytes(bytes));
        let (ete, ata) = (latin1(b"\xe9t\xe9.png"), latin1(b"\xe0t\xe0.png"));
        let got = targets(&[ete, ata], &out).expect("two names");
        assert_eq!(
            got,
            vec![
                out.join(OsStr::from_bytes(b"\xe9t\xe9.jpg")),
                out.join(OsStr::from_bytes(b"\xe0t\xe0.jpg"))
            ]
        );
    }

    #[test]
    fn an_output_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("x.jpg");
        std::fs::write(&target, b"earlier run").expect("earlier");
        write_whole(&target, b"new").expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
        // Nothing staged is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        // Into a folder that is gone: an error, no file.
        let gone = dir.path().join("gone").join("y.jpg");
        assert!(write_whole(&gone, b"new").is_err());
        assert!(!gone.exists());
        // A name of 255 bytes, the most a filesystem takes: its staged name fits too.
        let long = dir.path().join(format!("{}.jpg", "n".repeat(251)));
        write_whole(&long, b"long").expect("a name the disk takes");
        assert_eq!(std::fs::read(&long).expect("read"), b"long");
    }
}
