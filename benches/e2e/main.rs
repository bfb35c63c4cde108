//! End-to-end benchmark of pixbatch (issue 10): `cargo bench --bench e2e [-- --quick]`,
//! or `just bench`.
//!
//! 1. The real release binary on SQLite fetches one request of N images (500; 60 with
//!    `--quick`) from a local image server (this process, 127.0.0.1) that serves the
//!    corpus photos under distinct URLs after 0 ms and then 100 ms of latency.
//! 2. The same on PostgreSQL: `pixbatch api` plus 1, then 2 `pixbatch worker`
//!    processes on a scratch database of the server at `BENCH_POSTGRES_URL` (default
//!    `postgres://postgres@127.0.0.1:5432/test`; skipped, and said so, when none answers).
//! 3. Uploads: 10k- and 100k-row CSVs with `dry_run=true`, and a real 10k-row upload
//!    timed to its 202 (its URLs point at a closed port).
//! 4. The reference: a sequential Python worker (requests + Pillow, `reference.py`)
//!    on a subset of the same URLs, same server, same latencies.
//!
//! 5. The queue (`queue.rs`): 2k / 20k / 100k images that fail at once (the fetch
//!    guard refuses their private address) and 100k 8×8 JPEGs, on `serve` and on
//!    `api` + 1 worker on PostgreSQL: images/s against the smallest request, status
//!    and images-page p99 meanwhile, peak RSS; completion, retry and cancel of 100k.
//!
//! Plus the codec alone: `pixbatch convert --threads 1` over the photos. Prints a
//! table (Markdown) and PASS/MISS per target; exits 0 whatever the verdicts.
//!
//! Env: `BENCH_QUICK=1` (= `--quick`), `BENCH_CORPUS` (default `../shared/corpus`
//! from the repo root), `BENCH_PYTHON` (a python3 that already has requests and
//! Pillow: skips the throwaway venv), `PIXBATCH_BIN` (default: the release binary
//! cargo built for this bench). For experiments: `BENCH_IMAGES=N` (images per run),
//! `BENCH_SERVER_ENV=K=V,K=V` (extra env for the server in the image runs),
//! `BENCH_SKIP=codec,e2e,postgres,reference,upload,queue` (parts to leave out; in the
//! queue section also `serve`, its SQLite runs, and `tiny`, its tiny-JPEG run), `BENCH_TRACE=1` (per-image
//! GET and done times on stderr), `BENCH_SETTLE=S` (idle seconds before each image
//! run's upload), `BENCH_WAIT_QUIET=S` (longest wait for a quiet machine first; 60).

mod imgserver;
mod queue;
mod server;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use imgserver::{ImageServer, Photo};
use server::{Pixbatch, Setup, load_average, machine_busy_seconds, sample, sample_all};

const MIB: f64 = 1024.0 * 1024.0;
/// "Bounded": the server's peak RSS in an image run is at most this many times the
/// memory of the work it may hold at once (see `rss_bound`).
const RSS_SLACK: f64 = 1.25;
/// Target: peak RSS of the 100k-row dry-run upload.
const UPLOAD_RSS_TARGET_MIB: f64 = 200.0;
/// Poll period of the images API during a run.
const POLL: Duration = Duration::from_millis(100);

struct Opts {
    quick: bool,
    images: usize,
    ref_images: usize,
    dry_rows: [usize; 2],
    real_rows: usize,
    latencies: [u64; 2],
    corpus: PathBuf,
    bin: PathBuf,
    cores: usize,
    /// Extra env for `pixbatch serve` in the image runs (`BENCH_SERVER_ENV`).
    server_env: Vec<(String, String)>,
    /// Parts to leave out (`BENCH_SKIP`: codec, e2e, postgres, reference, upload, queue,
    /// serve, tiny).
    skip: Vec<String>,
    /// The PostgreSQL server for the scale-out runs (`BENCH_POSTGRES_URL`).
    postgres_url: String,
    /// Request sizes of the queue section (`BENCH_QUEUE_SIZES=2000,20000`).
    queue_sizes: Vec<usize>,
}

impl Opts {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let corpus = std::env::var_os("BENCH_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../shared/corpus"));
        let bin = std::env::var_os("PIXBATCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_pixbatch")));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let server_env = std::env::var("BENCH_SERVER_ENV")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let postgres_url = std::env::var("BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let skip = std::env::var("BENCH_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let mut opts = if quick {
            Self {
                quick,
                images: 60,
                ref_images: 21,
                dry_rows: [1_000, 10_000],
                real_rows: 1_000,
                latencies: [0, 100],
                corpus,
                bin,
                cores,
                server_env,
                skip,
                postgres_url: postgres_url.clone(),
                queue_sizes: vec![1_000, 10_000],
            }
        } else {
            Self {
                quick,
                images: 500,
                ref_images: 63,
                dry_rows: [10_000, 100_000],
                real_rows: 10_000,
                latencies: [0, 100],
                corpus,
                bin,
                cores,
                server_env,
                skip,
                postgres_url: postgres_url.clone(),
                queue_sizes: vec![2_000, 20_000, 100_000],
            }
        };
        if let Ok(v) = std::env::var("BENCH_QUEUE_SIZES") {
            opts.queue_sizes = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
        }
        if let Some(n) = std::env::var("BENCH_IMAGES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            opts.images = n;
        }
        opts
    }

    fn runs(&self, part: &str) -> bool {
        !self.skip.iter().any(|s| s == part)
    }
}

/// The photographic JPEGs of the corpus (every `*.jpg` not starting with `var_`),
/// sorted by name; `None` when there are none.
fn load_corpus(dir: &Path) -> anyhow::Result<Option<Vec<Photo>>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".jpg") && !name.starts_with("var_")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Ok(None);
    }
    let mut photos = Vec::with_capacity(paths.len());
    for p in paths {
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()?
            .into_dimensions()
            .with_context(|| format!("reading the header of {}", p.display()))?;
        photos.push(Photo {
            name: p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned(),
            bytes: bytes.into(),
            megapixels: f64::from(w) * f64::from(h) / 1e6,
        });
    }
    Ok(Some(photos))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

// ---------------------------------------------------------------------------
// Codec alone

/// `pixbatch convert --threads 1` over the photos, twice: the better `mp_per_s`, and
/// the CPU the whole machine was busy with meanwhile, in cores.
async fn codec_single_core(
    bin: &Path,
    corpus: &Path,
    photos: &[Photo],
) -> anyhow::Result<(f64, f64)> {
    let out = tempfile::tempdir()?;
    let mut best: f64 = 0.0;
    let (t0, busy0) = (Instant::now(), machine_busy_seconds());
    for _ in 0..2 {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("convert")
            .arg("--threads")
            .arg("1")
            .arg("--out")
            .arg(out.path())
            .args(photos.iter().map(|p| corpus.join(&p.name)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(300), cmd.output())
            .await
            .context("pixbatch convert took over 300 s")??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("summary\t"))
            .with_context(|| format!("no summary line from convert ({})", output.status))?;
        let mps: f64 = summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("mp_per_s="))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no mp_per_s in {summary:?}"))?;
        best = best.max(mps);
    }
    Ok((
        best,
        (machine_busy_seconds() - busy0) / t0.elapsed().as_secs_f64(),
    ))
}

/// Peak RSS of `pixbatch convert --threads 1` over every photo in turn: what one CPU
/// slot of the server needs in its steady state (the largest photo's working set, and
/// what a transform thread keeps between images: see `imaging::coefficients`), plus a
/// few MiB of process baseline. Sampled from /proc every 5 ms while it runs.
async fn slot_working_set(
    bin: &Path,
    corpus: &Path,
    photos: &[Photo],
) -> anyhow::Result<(u64, String)> {
    let largest = photos
        .iter()
        .max_by(|a, b| a.megapixels.total_cmp(&b.megapixels))
        .context("no photos")?;
    let out = tempfile::tempdir()?;
    let mut child = tokio::process::Command::new(bin)
        .arg("convert")
        .arg("--threads")
        .arg("1")
        .arg("--out")
        .arg(out.path())
        .args(photos.iter().map(|p| corpus.join(&p.name)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("convert exited at once")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut hwm = 0;
    while child.try_wait()?.is_none() {
        if let Ok(s) = sample(&pid) {
            hwm = hwm.max(s.hwm);
        }
        if Instant::now() > deadline {
            bail!("convert of the photos took over 300 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((
        hwm,
        format!(
            "the {} photos in turn (largest {}, {:.1} MP)",
            photos.len(),
            largest.name,
            largest.megapixels
        ),
    ))
}

// ---------------------------------------------------------------------------
// End to end

#[derive(Default)]
struct E2e {
    setup: Setup,
    latency_ms: u64,
    images: usize,
    succeeded: usize,
    failed: usize,
    timed_out: bool,
    wall: f64,
    /// Upload → the last image seen done, seconds.
    last_done: f64,
    /// Upload → the first image GET at the image server, seconds.
    first_get: f64,
    megapixels: f64,
    p50: Option<f64>,
    p95: Option<f64>,
    hwm: u64,
    /// VmRSS of the fresh server before the upload.
    rss_idle: u64,
    /// VmHWM when half the images were done.
    hwm_half: u64,
    /// RSS when 25, 50, 75 and 100 % of the images were done.
    rss_at: [u64; 4],
    server_cores: f64,
    driver_cores: f64,
    /// Every process on the machine, ours included.
    machine_cores: f64,
    max_parallel_gets: usize,
    gets: usize,
    bytes_in: i64,
    bytes_out: i64,
    max_attempts: i64,
}

impl E2e {
    fn images_per_s(&self) -> f64 {
        self.succeeded as f64 / self.wall.max(1e-9)
    }
    fn mp_per_s(&self) -> f64 {
        self.megapixels / self.wall.max(1e-9)
    }
    /// Images per second up to the last image stored (no completion step).
    fn stored_per_s(&self) -> f64 {
        self.succeeded as f64 / self.last_done.max(1e-9)
    }
    fn stored_mp_per_s(&self) -> f64 {
        self.megapixels / self.last_done.max(1e-9)
    }
}

fn is_final(status: &str) -> bool {
    matches!(
        status,
        "Completed" | "CompletedWithErrors" | "Failed" | "Cancelled"
    )
}

/// Every image of a request (all pages).
async fn all_images(srv: &Pixbatch, id: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let page = srv
            .get_json(&format!("/requests/{id}/images?offset={offset}&limit=1000"))
            .await?;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_offset"].as_u64() {
            Some(n) => offset = n,
            None => return Ok(out),
        }
    }
}

async fn e2e_run(
    opts: &Opts,
    setup: &Setup,
    img: &ImageServer,
    photos: &[Photo],
    latency_ms: u64,
) -> anyhow::Result<E2e> {
    let n = opts.images;
    let extra: Vec<(&str, &str)> = opts
        .server_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let srv = Pixbatch::start_as(&opts.bin, setup, &extra).await?;
    let pids = srv.pids();
    let run = format!("e2e{}-{latency_ms}", srv.pids()[0]);
    let urls: Vec<String> = (0..n)
        .map(|i| img.url(latency_ms, &run, i, &photos[i % photos.len()].name))
        .collect();
    let mut csv = String::from("Serial Number,Product Name,Input Image Urls\n");
    for (i, u) in urls.iter().enumerate() {
        let _ = writeln!(csv, "{},Product {},{u}", i + 1, i + 1);
    }
    img.reset_counters();
    if let Some(settle) = std::env::var("BENCH_SETTLE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    }

    let (srv0, me0, busy0) = (sample_all(&pids)?, sample("self")?, machine_busy_seconds());
    let t0 = Instant::now();
    let (code, body, _) = srv.upload(csv.into_bytes(), &[]).await?;
    if code != 202 {
        bail!("upload answered {code}: {body}");
    }
    let id = body["request_id"]
        .as_str()
        .context("no request_id")?
        .to_owned();

    // Poll: the images still open (from the first unfinished one, in row order), and
    // the status; remember when each image was first seen finished.
    let deadline = t0 + Duration::from_secs(60) + Duration::from_millis(500 * n as u64);
    let mut done: Vec<Option<Instant>> = vec![None; n];
    let mut first_open = 0usize;
    let mut rss_at = [0u64; 4];
    let mut hwm_half = 0u64;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timed_out = false;
    let (t_end, srv1, me1) = loop {
        tick.tick().await;
        if first_open < n {
            let page = srv
                .get_json(&format!(
                    "/requests/{id}/images?offset={first_open}&limit=1000"
                ))
                .await?;
            let now = Instant::now();
            for (k, item) in page["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let idx = first_open + k;
                if idx < n && done[idx].is_none() && item["state"].as_str() != Some("pending") {
                    done[idx] = Some(now);
                }
            }
            while first_open < n && done[first_open].is_some() {
                first_open += 1;
            }
        }
        let finished = done.iter().filter(|d| d.is_some()).count();
        let s = sample_all(&pids)?;
        for (q, slot) in rss_at.iter_mut().enumerate() {
            if *slot == 0 && finished * 4 >= n * (q + 1) {
                *slot = s.rss;
            }
        }
        if hwm_half == 0 && finished * 2 >= n {
            hwm_half = s.hwm;
        }
        let status = srv.get_json(&format!("/status/{id}")).await?;
        if is_final(status["status"].as_str().unwrap_or_default()) {
            break (Instant::now(), sample_all(&pids)?, sample("self")?);
        }
        if Instant::now() > deadline {
            timed_out = true;
            break (Instant::now(), sample_all(&pids)?, sample("self")?);
        }
    };
    let wall = (t_end - t0).as_secs_f64();
    let machine_cores = (machine_busy_seconds() - busy0) / wall;

    let images = all_images(&srv, &id).await?;
    let mut r = E2e {
        setup: setup.clone(),
        latency_ms,
        images: n,
        timed_out,
        wall,
        hwm: srv1.hwm,
        rss_idle: srv0.rss,
        hwm_half,
        rss_at,
        server_cores: (srv1.cpu_seconds - srv0.cpu_seconds) / wall,
        driver_cores: (me1.cpu_seconds - me0.cpu_seconds) / wall,
        machine_cores,
        max_parallel_gets: img.max_in_flight(),
        gets: img.requests(),
        ..E2e::default()
    };
    let mut latencies = Vec::new();
    let trace = std::env::var_os("BENCH_TRACE").is_some();
    r.first_get = urls
        .iter()
        .filter_map(|u| img.first_arrival(u))
        .min()
        .map_or(f64::NAN, |a| a.saturating_duration_since(t0).as_secs_f64());
    r.last_done = done
        .iter()
        .flatten()
        .max()
        .map_or(f64::NAN, |d| d.saturating_duration_since(t0).as_secs_f64());
    for (idx, item) in images.iter().enumerate() {
        r.max_attempts = r.max_attempts.max(item["attempts"].as_i64().unwrap_or(0));
        match item["state"].as_str() {
            Some("succeeded") => {
                r.succeeded += 1;
                let (w, h) = (
                    item["width"].as_f64().unwrap_or(0.0),
                    item["height"].as_f64().unwrap_or(0.0),
                );
                r.megapixels += w * h / 1e6;
                r.bytes_in += item["input_bytes"].as_i64().unwrap_or(0);
                r.bytes_out += item["output_bytes"].as_i64().unwrap_or(0);
                let url = item["input_url"].as_str().unwrap_or_default();
                if let (Some(start), Some(Some(end))) = (img.first_arrival(url), done.get(idx)) {
                    latencies.push(end.saturating_duration_since(start).as_secs_f64());
                    if trace {
                        eprintln!(
                            "trace\t{idx}\t{}\t{:.2} MP\tGET at {:.3} s\tseen done at {:.3} s",
                            url.rsplit('/').next().unwrap_or_default(),
                            w * h / 1e6,
                            start.saturating_duration_since(t0).as_secs_f64(),
                            end.saturating_duration_since(t0).as_secs_f64()
                        );
                    }
                }
            }
            Some("failed") => r.failed += 1,
            _ => {}
        }
    }
    latencies.sort_by(f64::total_cmp);
    r.p50 = percentile(&latencies, 50.0);
    r.p95 = percentile(&latencies, 95.0);
    if r.failed > 0 || timed_out {
        eprintln!(
            "  warning: {} failed, timed out: {timed_out}; server log tail:\n{}",
            r.failed,
            srv.log_tail()
        );
    }
    srv.stop().await?;
    Ok(r)
}

/// One image uploaded to a server that has been idle for `idle`: how long until its
/// GET and until the request's final status. Shows whether idle workers notice new
/// work within `JOB_POLL_INTERVAL` (or only on their next heartbeat).
async fn idle_pickup(
    opts: &Opts,
    img: &ImageServer,
    photos: &[Photo],
    idle: Duration,
) -> anyhow::Result<(f64, f64)> {
    let srv = Pixbatch::start(&opts.bin, &[]).await?;
    tokio::time::sleep(idle).await;
    let url = img.url(0, "idle", 0, &photos[0].name);
    let csv = format!("Serial Number,Product Name,Input Image Urls\n1,Product 1,{url}\n");
    let t0 = Instant::now();
    let (code, body, _) = srv.upload(csv.into_bytes(), &[]).await?;
    if code != 202 {
        bail!("upload answered {code}: {body}");
    }
    let id = body["request_id"].as_str().context("no request_id")?;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let status = srv.get_json(&format!("/status/{id}")).await?;
        if is_final(status["status"].as_str().unwrap_or_default()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("not final after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = t0.elapsed().as_secs_f64();
    let get = img
        .first_arrival(&url)
        .map_or(f64::NAN, |a| a.saturating_duration_since(t0).as_secs_f64());
    Ok((get, done))
}

// ---------------------------------------------------------------------------
// Uploads

struct UploadCase {
    label: String,
    rows: usize,
    csv_mib: f64,
    status: u16,
    seconds: f64,
    rss_before: u64,
    hwm: u64,
}

fn big_csv(rows: usize, port: u16) -> Vec<u8> {
    let mut csv = String::with_capacity(rows * 80 + 64);
    csv.push_str("Serial Number,Product Name,Input Image Urls\n");
    for i in 1..=rows {
        let _ = writeln!(
            csv,
            "{i},Product {i:06},http://127.0.0.1:{port}/catalog/images/{i:08}.jpg"
        );
    }
    csv.into_bytes()
}

async fn upload_case(opts: &Opts, rows: usize, dry_run: bool) -> anyhow::Result<UploadCase> {
    let port = server::closed_port()?;
    let extra: &[(&str, &str)] = if dry_run {
        &[]
    } else {
        // No pause knob: one worker, and every fetch fails at once for good.
        &[("WORKER_CONCURRENCY", "1"), ("FETCH_ATTEMPTS", "1")]
    };
    let srv = Pixbatch::start(&opts.bin, extra).await?;
    let pid = srv.pids()[0].clone();
    let csv = big_csv(rows, port);
    let csv_mib = csv.len() as f64 / MIB;
    let before = sample(&pid)?;
    let fields: &[(&str, &str)] = if dry_run { &[("dry_run", "true")] } else { &[] };
    let (status, body, took) = srv.upload(csv, fields).await?;
    let after = sample(&pid)?;
    let expected = if dry_run { 200 } else { 202 };
    if status != expected {
        eprintln!("  warning: upload of {rows} rows answered {status}: {body}");
    }
    Ok(UploadCase {
        label: format!(
            "{}k rows, {}",
            rows / 1000,
            if dry_run {
                "dry run"
            } else {
                "real (to the 202)"
            }
        ),
        rows,
        csv_mib,
        status,
        seconds: took.as_secs_f64(),
        rss_before: before.rss,
        hwm: after.hwm,
    })
}

// ---------------------------------------------------------------------------
// The Python reference

struct PythonEnv {
    python: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

async fn run_logged(cmd: &mut tokio::process::Command, limit: Duration) -> anyhow::Result<()> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{cmd:?} took over {limit:?}"))??;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(10).collect();
        bail!(
            "{cmd:?}: {}\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// `BENCH_PYTHON`, or a throwaway venv with the pinned requests and Pillow.
async fn python_env() -> anyhow::Result<PythonEnv> {
    if let Some(p) = std::env::var_os("BENCH_PYTHON") {
        return Ok(PythonEnv {
            python: p.into(),
            _dir: None,
        });
    }
    let dir = tempfile::tempdir()?;
    let venv = dir.path().join("venv");
    run_logged(
        tokio::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
        Duration::from_secs(120),
    )
    .await?;
    let reqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e/reference-requirements.txt");
    run_logged(
        tokio::process::Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
                "-r",
            ])
            .arg(reqs),
        Duration::from_secs(300),
    )
    .await?;
    Ok(PythonEnv {
        python: venv.join("bin/python"),
        _dir: Some(dir),
    })
}

struct Reference {
    images: usize,
    ok: usize,
    seconds: f64,
    megapixels: f64,
    p50: Option<f64>,
    p95: Option<f64>,
    machine_cores: f64,
    versions: String,
}

impl Reference {
    fn images_per_s(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
    fn mp_per_s(&self) -> f64 {
        self.megapixels / self.seconds.max(1e-9)
    }
}

async fn reference_run(
    opts: &Opts,
    py: &PythonEnv,
    img: &ImageServer,
    photos: &[Photo],
    latency_ms: u64,
) -> anyhow::Result<Reference> {
    let n = opts.ref_images;
    let dir = tempfile::tempdir()?;
    let run = format!("ref{latency_ms}");
    let urls: Vec<String> = (0..n)
        .map(|i| img.url(latency_ms, &run, i, &photos[i % photos.len()].name))
        .collect();
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n"))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/e2e/reference.py");
    let mut cmd = tokio::process::Command::new(&py.python);
    cmd.arg(script)
        .arg(&list)
        .arg(dir.path().join("out"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let limit = Duration::from_secs(60 + 2 * n as u64);
    let (t0, busy0) = (Instant::now(), machine_busy_seconds());
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("reference took over {limit:?}"))??;
    let machine_cores = (machine_busy_seconds() - busy0) / t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(v) = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
    else {
        bail!(
            "reference printed no result ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ok = v["ok"].as_u64().unwrap_or(0) as usize;
    if ok < n {
        eprintln!("  warning: reference failed some images: {}", v["errors"]);
    }
    let mut per: Vec<f64> = v["per_image_seconds"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    per.sort_by(f64::total_cmp);
    Ok(Reference {
        images: n,
        ok,
        seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
        megapixels: (0..n).map(|i| photos[i % photos.len()].megapixels).sum(),
        p50: percentile(&per, 50.0),
        p95: percentile(&per, 95.0),
        machine_cores,
        versions: format!(
            "Python {}, Pillow {}, requests {}",
            v["python"].as_str().unwrap_or("?"),
            v["pillow"].as_str().unwrap_or("?"),
            v["requests"].as_str().unwrap_or("?")
        ),
    })
}

/// Waits (up to `BENCH_WAIT_QUIET` seconds, 60 by default) until the other processes
/// on the machine use under 0.25 cores over 3 s, so that they skew less.
async fn wait_for_quiet_machine() {
    let limit = std::env::var("BENCH_WAIT_QUIET")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(limit);
    loop {
        let (t0, b0) = (Instant::now(), machine_busy_seconds());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let busy = (machine_busy_seconds() - b0) / t0.elapsed().as_secs_f64();
        if busy < 0.25 {
            println!("  machine quiet ({busy:.2} cores busy): starting");
            return;
        }
        if Instant::now() >= deadline {
            println!(
                "  other processes keep {busy:.2} cores busy; going on anyway (see the \"machine CPU busy\" rows)"
            );
            return;
        }
        println!("  waiting for a quieter machine: {busy:.2} cores busy");
    }
}

// ---------------------------------------------------------------------------
// Report

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / MIB)
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "n/a".into(), |s| format!("{s:.2}"))
}

fn verdict(label: &str, value: Option<f64>, target: &str, pass: impl Fn(f64) -> bool) {
    match value {
        Some(v) if v.is_finite() => println!(
            "{}  {label} = {v:.2} (target {target})",
            if pass(v) { "PASS" } else { "MISS" }
        ),
        _ => println!("n/a   {label} (target {target}): not measured"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let opts = Opts::from_env();
    let Some(photos) = load_corpus(&opts.corpus)? else {
        println!(
            "e2e bench: no corpus photos (*.jpg not starting with var_) in {}; nothing to do.\n\
             Set BENCH_CORPUS to a directory of JPEG photos to run it.",
            opts.corpus.display()
        );
        return Ok(());
    };
    if !opts.bin.exists() {
        bail!(
            "{} not found: run `cargo build --release` first (or set PIXBATCH_BIN)",
            opts.bin.display()
        );
    }
    let corpus_mp: f64 = photos.iter().map(|p| p.megapixels).sum();
    println!(
        "pixbatch end-to-end bench{}: {} photos from {} (mean {:.2} MP), {} cores, binary {}",
        if opts.quick { " (quick)" } else { "" },
        photos.len(),
        opts.corpus.display(),
        corpus_mp / photos.len() as f64,
        opts.cores,
        opts.bin.display()
    );
    if !opts.server_env.is_empty() {
        println!(
            "  extra server env for the image runs: {:?}",
            opts.server_env
        );
    }
    wait_for_quiet_machine().await;
    let started = Instant::now();
    let load_start = load_average();
    let img = ImageServer::start(&photos).await?;

    let py = if opts.runs("reference") {
        println!("- reference: setting up Python (throwaway venv; not timed)");
        match python_env().await {
            Ok(p) => Some(p),
            Err(e) => {
                println!("  reference skipped: could not set up Python: {e:#}");
                None
            }
        }
    } else {
        None
    };

    let mut codec_machine = f64::NAN;
    let codec = if !opts.runs("codec") {
        None
    } else {
        println!("- codec alone: pixbatch convert --threads 1 over the photos (best of 2)");
        Some(codec_single_core(&opts.bin, &opts.corpus, &photos).await)
    };
    let codec = match codec {
        None => None,
        Some(Ok((v, machine))) => {
            println!("  {v:.1} MP/s on one core (machine busy {machine:.2} cores meanwhile)");
            codec_machine = machine;
            Some(v)
        }
        Some(Err(e)) => {
            println!("  failed: {e:#}");
            None
        }
    };
    let slot = if opts.runs("codec") || opts.runs("e2e") {
        match slot_working_set(&opts.bin, &opts.corpus, &photos).await {
            Ok((bytes, photo)) => {
                println!(
                    "- one CPU slot's memory: convert --threads 1 of {photo} peaks at {} MiB RSS",
                    mib(bytes)
                );
                Some((bytes, photo))
            }
            Err(e) => {
                println!("  memory of one CPU slot not measured: {e:#}");
                None
            }
        }
    } else {
        None
    };

    let mut setups = vec![Setup::Serve];
    if opts.runs("e2e") && opts.runs("postgres") {
        match server::postgres_reachable(&opts.postgres_url).await {
            Ok(()) => setups.extend([1, 2].map(|workers| Setup::Postgres {
                admin_url: opts.postgres_url.clone(),
                workers,
            })),
            Err(e) => println!(
                "- PostgreSQL runs skipped: no server at {} ({e:#}); set BENCH_POSTGRES_URL",
                opts.postgres_url
            ),
        }
    }
    let runs: Vec<(&Setup, u64)> = setups
        .iter()
        .flat_map(|s| opts.latencies.iter().map(move |&lat| (s, lat)))
        .filter(|_| opts.runs("e2e"))
        .collect();
    let mut e2e = Vec::new();
    for (setup, lat) in runs {
        println!(
            "- end to end, {}: {} images, image server latency {lat} ms",
            setup.label(),
            opts.images
        );
        match e2e_run(&opts, setup, &img, &photos, lat).await {
            Ok(r) => {
                println!(
                    "  {:.1} images/s, {:.1} MP/s, {:.1} s, {} ok / {} failed",
                    r.images_per_s(),
                    r.mp_per_s(),
                    r.wall,
                    r.succeeded,
                    r.failed
                );
                e2e.push(r);
            }
            Err(e) => println!("  failed: {e:#}"),
        }
    }

    let idle = Duration::from_secs(5);
    let mut pickup = None;
    if opts.runs("e2e") {
        println!(
            "- idle pickup: 1 image uploaded to a server idle for {} s",
            idle.as_secs()
        );
        match idle_pickup(&opts, &img, &photos, idle).await {
            Ok((get, done)) => {
                println!("  GET after {get:.2} s, final status after {done:.2} s");
                pickup = Some((get, done));
            }
            Err(e) => println!("  failed: {e:#}"),
        }
    }

    let mut refs = Vec::new();
    if let Some(py) = &py {
        for &lat in &opts.latencies {
            println!(
                "- reference: sequential Python worker, {} images, latency {lat} ms",
                opts.ref_images
            );
            match reference_run(&opts, py, &img, &photos, lat).await {
                Ok(r) => {
                    println!(
                        "  {:.2} images/s, {:.1} MP/s ({})",
                        r.images_per_s(),
                        r.mp_per_s(),
                        r.versions
                    );
                    refs.push((lat, r));
                }
                Err(e) => println!("  failed: {e:#}"),
            }
        }
    }

    let mut uploads = Vec::new();
    let cases = [
        (opts.dry_rows[0], true),
        (opts.dry_rows[1], true),
        (opts.real_rows, false),
    ];
    for (rows, dry) in cases.into_iter().filter(|_| opts.runs("upload")) {
        println!(
            "- upload: {rows} rows{}",
            if dry { ", dry run" } else { ", real" }
        );
        match upload_case(&opts, rows, dry).await {
            Ok(u) => {
                println!(
                    "  {} in {:.3} s, peak RSS {} MiB",
                    u.status,
                    u.seconds,
                    mib(u.hwm)
                );
                uploads.push(u);
            }
            Err(e) => println!("  failed: {e:#}"),
        }
    }

    let mut queue_runs = Vec::new();
    if opts.runs("queue") {
        let mut setups = Vec::new();
        if opts.runs("serve") {
            setups.push(Setup::Serve);
        }
        match server::postgres_reachable(&opts.postgres_url).await {
            Ok(()) if opts.runs("postgres") => setups.push(Setup::Postgres {
                admin_url: opts.postgres_url.clone(),
                workers: 1,
            }),
            Ok(()) => {}
            Err(e) => println!(
                "- queue on PostgreSQL skipped: no server at {} ({e:#})",
                opts.postgres_url
            ),
        }
        let largest = *opts.queue_sizes.iter().max().unwrap_or(&0);
        let cases = opts
            .queue_sizes
            .iter()
            .map(|&n| (queue::Kind::Refused, n))
            .chain(opts.runs("tiny").then_some((queue::Kind::Tiny, largest)));
        for setup in &setups {
            for (kind, n) in cases.clone() {
                let big = kind == queue::Kind::Refused && n == largest;
                println!("- queue, {}: {n} images, {kind:?}", setup.label());
                match queue::run(&opts.bin, setup, &img, kind, n, big).await {
                    Ok(r) => {
                        println!(
                            "  {:.0} images/s ({:.1} s), status p99 {:.1} ms, page p99 {:.1} ms",
                            r.rate(),
                            r.drain_s,
                            r.status_p99_ms,
                            r.page_p99_ms
                        );
                        queue_runs.push(r);
                    }
                    Err(e) => println!("  failed: {e:#}"),
                }
            }
        }
    }

    // ---- table
    println!();
    println!(
        "## Results ({} images per run, reference {} images; {:.0} s in all; load average {:.1} at start, {:.1} at end)",
        opts.images,
        opts.ref_images,
        started.elapsed().as_secs_f64(),
        load_start,
        load_average()
    );
    println!();
    let find = |lat: u64| {
        e2e.iter()
            .find(|r| r.setup == Setup::Serve && r.latency_ms == lat)
    };
    let find_ref = |lat: u64| refs.iter().find(|(l, _)| *l == lat).map(|(_, r)| r);
    let mut head = String::from("| end to end |");
    let mut rule = String::from("|---|");
    for r in &e2e {
        let _ = write!(head, " {}, {} ms |", r.setup.label(), r.latency_ms);
        rule.push_str("---|");
    }
    println!("{head}\n{rule}");
    type Cell<'a> = Box<dyn Fn(&E2e) -> String + 'a>;
    let rows: Vec<(&str, Cell)> = vec![
        (
            "pixbatch images/s (to final status)",
            Box::new(|r| format!("{:.1}", r.images_per_s())),
        ),
        (
            "pixbatch MP/s (to final status)",
            Box::new(|r| format!("{:.1}", r.mp_per_s())),
        ),
        (
            "images/s, MP/s to the last image stored",
            Box::new(|r| format!("{:.1}, {:.1}", r.stored_per_s(), r.stored_mp_per_s())),
        ),
        (
            "upload → first GET / last image stored / final status, s",
            Box::new(|r| format!("{:.2} / {:.1} / {:.1}", r.first_get, r.last_done, r.wall)),
        ),
        (
            "images ok / failed (most tries)",
            Box::new(|r| {
                format!(
                    "{} / {}{} ({})",
                    r.succeeded,
                    r.failed,
                    if r.timed_out { " TIMED OUT" } else { "" },
                    r.max_attempts
                )
            }),
        ),
        (
            "per image p50 / p95, s ¹",
            Box::new(|r| format!("{} / {}", secs(r.p50), secs(r.p95))),
        ),
        (
            "server peak RSS (VmHWM; summed over processes) at 50 % done → end, MiB",
            Box::new(|r| format!("{} → {}", mib(r.hwm_half), mib(r.hwm))),
        ),
        (
            "server RSS (summed) at 25/50/75/100 % done, MiB",
            Box::new(|r| {
                r.rss_at
                    .iter()
                    .map(|b| mib(*b))
                    .collect::<Vec<_>>()
                    .join(" / ")
            }),
        ),
        (
            "server CPU (all processes), cores (utime+stime / wall)",
            Box::new(|r| format!("{:.2}", r.server_cores)),
        ),
        (
            "MP per server CPU-second (codec alone: its MP/s)",
            Box::new(|r| format!("{:.1}", r.megapixels / (r.server_cores * r.wall).max(1e-9))),
        ),
        (
            "bench process CPU (image server + polling), cores",
            Box::new(|r| format!("{:.2}", r.driver_cores)),
        ),
        (
            "machine CPU busy (every process), cores",
            Box::new(|r| format!("{:.2}", r.machine_cores)),
        ),
        (
            "image GETs / most in parallel",
            Box::new(|r| format!("{} / {}", r.gets, r.max_parallel_gets)),
        ),
        (
            "bytes in → out, MB",
            Box::new(|r| {
                format!(
                    "{:.0} → {:.0}",
                    r.bytes_in as f64 / 1e6,
                    r.bytes_out as f64 / 1e6
                )
            }),
        ),
    ];
    for (label, cell) in &rows {
        let mut line = format!("| {label} |");
        for r in &e2e {
            let _ = write!(line, " {} |", cell(r));
        }
        println!("{line}");
    }
    type RefCell = fn(&Reference) -> String;
    let ref_rows: [(&str, RefCell); 4] = [
        ("reference images/s (sequential Python) ²", |r| {
            format!("{:.2}", r.images_per_s())
        }),
        ("reference MP/s", |r| format!("{:.1}", r.mp_per_s())),
        (
            "reference per image p50 / p95 (get + open + save), s",
            |r| format!("{} / {}", secs(r.p50), secs(r.p95)),
        ),
        ("machine CPU busy during the reference, cores", |r| {
            format!("{:.2}", r.machine_cores)
        }),
    ];
    for (label, cell) in ref_rows {
        let mut line = format!("| {label} |");
        for r in &e2e {
            let value = if r.setup == Setup::Serve {
                find_ref(r.latency_ms).map_or_else(|| "n/a".into(), cell)
            } else {
                String::new()
            };
            let _ = write!(line, " {value} |");
        }
        println!("{line}");
    }
    println!();
    println!(
        "| codec alone (`pixbatch convert --threads 1`, {} photos, best of 2) | {} MP/s on one core (machine busy {:.2} cores) |",
        photos.len(),
        codec.map_or_else(|| "n/a".into(), |v| format!("{v:.1}")),
        codec_machine
    );
    println!("|---|---|");
    if let Some((get, done)) = pickup {
        println!(
            "| idle pickup: 1 image uploaded to a server idle for {} s | GET after {get:.2} s, final status after {done:.2} s |",
            idle.as_secs()
        );
    }
    println!();
    println!("| upload | CSV, MiB | answer | time to answer, s | server RSS before → peak, MiB |");
    println!("|---|---|---|---|---|");
    for u in &uploads {
        println!(
            "| {} | {:.1} | {} | {:.3} | {} → {} |",
            u.label,
            u.csv_mib,
            u.status,
            u.seconds,
            mib(u.rss_before),
            mib(u.hwm)
        );
    }
    println!();
    println!(
        "¹ per image = first GET of its URL at the bench's image server → first poll of \
         /requests/{{id}}/images (every {} ms) showing it succeeded: latency wait, download, \
         queueing for a CPU slot, decode + encode, store and database update; resolution \
         0–{} ms late.",
        POLL.as_millis(),
        POLL.as_millis()
    );
    if let Some((_, r)) = refs.first() {
        println!(
            "² one process, per image: requests.get, Pillow open, save quality 50 to a file \
             ({}); {} of the same URLs, so the same photo mix.",
            r.versions, r.images
        );
    }

    // ---- targets
    println!();
    println!("## Targets");
    let (lo, hi) = (opts.latencies[0], opts.latencies[1]);
    let ips = |lat| find(lat).map(E2e::images_per_s);
    let stored = |lat| find(lat).map(E2e::stored_per_s);
    verdict(
        &format!("images/s at {hi} ms ÷ images/s at {lo} ms"),
        ips(hi).zip(ips(lo)).map(|(a, b)| a / b),
        "≥ 0.95",
        |v| v >= 0.95,
    );
    verdict(
        "  the same, to the last image stored",
        stored(hi).zip(stored(lo)).map(|(a, b)| a / b),
        "≥ 0.95",
        |v| v >= 0.95,
    );
    verdict(
        &format!(
            "MP/s end to end at {lo} ms ÷ ({} cores × codec single-core MP/s)",
            opts.cores
        ),
        find(lo)
            .map(E2e::mp_per_s)
            .zip(codec)
            .map(|(a, c)| a / (opts.cores as f64 * c)),
        "≥ 0.80",
        |v| v >= 0.8,
    );
    verdict(
        "  the same, to the last image stored",
        find(lo)
            .map(E2e::stored_mp_per_s)
            .zip(codec)
            .map(|(a, c)| a / (opts.cores as f64 * c)),
        "≥ 0.80",
        |v| v >= 0.8,
    );
    verdict(
        &format!("images/s at {hi} ms ÷ reference images/s at {hi} ms"),
        ips(hi)
            .zip(find_ref(hi).map(Reference::images_per_s))
            .map(|(a, b)| a / b),
        "≥ 8",
        |v| v >= 8.0,
    );
    verdict(
        "  the same, to the last image stored",
        stored(hi)
            .zip(find_ref(hi).map(Reference::images_per_s))
            .map(|(a, b)| a / b),
        "≥ 8",
        |v| v >= 8.0,
    );
    for u in &uploads {
        if u.rows == 10_000 {
            verdict(
                &format!("{} upload answered in, s", u.label),
                Some(u.seconds).filter(|_| u.status < 300),
                "< 1",
                |v| v < 1.0,
            );
        }
    }
    if let Some(u) = uploads.iter().find(|u| u.rows == opts.dry_rows[1]) {
        verdict(
            &format!("{} upload, server peak RSS, MiB", u.label),
            Some(u.hwm as f64 / MIB).filter(|_| u.status < 300),
            &format!("< {UPLOAD_RSS_TARGET_MIB:.0}"),
            |v| v < UPLOAD_RSS_TARGET_MIB,
        );
    }
    let concurrency = opts
        .server_env
        .iter()
        .find(|(k, _)| k == "WORKER_CONCURRENCY")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or((opts.cores * pixbatch::config::IMAGE_JOBS_PER_CORE) as u64);
    let max_input = photos
        .iter()
        .map(|p| p.bytes.len() as u64)
        .max()
        .unwrap_or(0);
    for r in e2e.iter().filter(|r| r.setup == Setup::Serve) {
        let Some((slot_bytes, _)) = &slot else { break };
        // What the server may hold at once: idle footprint, one decode/encode per
        // core, and every job in flight holding its downloaded input.
        let work = r.rss_idle + opts.cores as u64 * slot_bytes + concurrency * max_input;
        let bound = RSS_SLACK * work as f64 / MIB;
        verdict(
            &format!(
                "{}-image run at {} ms: server peak RSS, MiB (bound = {RSS_SLACK} × (idle {} + {} cores × slot {} + {concurrency} jobs × input {:.1}) MiB)",
                r.images,
                r.latency_ms,
                mib(r.rss_idle),
                opts.cores,
                mib(*slot_bytes),
                max_input as f64 / MIB
            ),
            Some(r.hwm as f64 / MIB),
            &format!("≤ {bound:.0}: bounded by the work in flight"),
            |v| v <= bound,
        );
    }
    // The scale-out runs, against `serve` on the same run (no targets: on one machine
    // the processes share its cores, so this shows the cost of the split, not scaling).
    let scale: Vec<&E2e> = e2e.iter().filter(|r| r.setup != Setup::Serve).collect();
    if !scale.is_empty() {
        println!();
        println!("## PostgreSQL runs ÷ serve on SQLite (same run, same images)");
        for r in scale {
            if let Some(base) = find(r.latency_ms) {
                println!(
                    "{} at {} ms: images/s × {:.2}, server CPU × {:.2}, peak RSS (sum over processes) × {:.2}",
                    r.setup.label(),
                    r.latency_ms,
                    r.images_per_s() / base.images_per_s(),
                    r.server_cores / base.server_cores.max(1e-9),
                    r.hwm as f64 / (base.hwm as f64).max(1.0)
                );
            }
        }
    }
    if !queue_runs.is_empty() {
        println!();
        println!(
            "## Queue: images that need no image work (the fetch guard refuses them), or 8×8 JPEGs"
        );
        println!();
        print!("{}", queue::table(&queue_runs));
        println!();
        for (label, ok) in queue::verdicts(&queue_runs) {
            println!("{}  {label}", if ok { "PASS" } else { "MISS" });
        }
    }
    if opts.quick {
        println!("(quick run: smaller sizes than the targets are stated for)");
    }
    Ok(())
}
