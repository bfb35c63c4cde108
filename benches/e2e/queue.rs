//! The queue section: requests whose images need (almost) no image work, so every
//! image job is queue and database work, at several request sizes on each backend.
//!
//! - `refused`: every URL points at a private address outside `ALLOW_PRIVATE_NETWORKS`
//!   (`http://10.0.0.1/…`), so the fetch guard refuses it before any connection and
//!   the image fails at once.
//! - `tiny`: every URL is a distinct 8×8 JPEG from this process' image server.
//!
//! Per run: the upload's answer time, images/s from the 202 to the final status, the
//! p99 of `GET /status` and of one page of `/requests/{id}/images` polled meanwhile,
//! and the server's peak RSS. On the largest `refused` request also: the completion
//! job's time (the output CSV of every row), then `POST …/retry` of every failed
//! image and `POST …/cancel` of that run, each timed to its answer.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::server::{Pixbatch, Setup, sample_all};
use crate::{imgserver::ImageServer, percentile};

/// What the images of a queue run are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Refused,
    Tiny,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::Tiny => "tiny",
        }
    }
}

/// The operations timed on the largest request.
#[derive(Clone, Debug)]
pub struct BigOps {
    /// The completion job (reads every row, writes and stores the output CSV), s.
    pub complete_s: f64,
    /// Size of that CSV, bytes.
    pub csv_bytes: usize,
    /// `POST /requests/{id}/retry` of every failed image, to its answer, s.
    pub retry_s: f64,
    /// `POST /requests/{id}/cancel` while that retry runs, to its answer, s.
    pub cancel_s: f64,
}

/// One queue run.
#[derive(Clone, Debug)]
pub struct QueueRun {
    pub setup: String,
    pub kind: Kind,
    pub images: usize,
    /// Upload to its 202, s.
    pub accept_s: f64,
    /// 202 to the final status, s.
    pub drain_s: f64,
    pub status_p99_ms: f64,
    pub page_p99_ms: f64,
    /// Server processes' peak RSS (VmHWM, summed), bytes.
    pub hwm: u64,
    /// Server CPU (all processes) during the drain, s.
    pub cpu_s: f64,
    pub big: Option<BigOps>,
}

impl QueueRun {
    pub fn rate(&self) -> f64 {
        self.images as f64 / self.drain_s.max(1e-9)
    }
}

/// The CSV: one image per row.
fn csv(kind: Kind, img: &ImageServer, run: &str, n: usize) -> Vec<u8> {
    let mut csv = String::with_capacity(n * 64);
    csv.push_str("Serial Number,Product Name,Input Image Urls\n");
    for i in 0..n {
        let url = match kind {
            Kind::Refused => format!("http://10.0.0.1/{run}/{i}.jpg"),
            Kind::Tiny => img.tiny_url(run, i),
        };
        let _ = writeln!(csv, "{},Product {},{url}", i + 1, i + 1);
    }
    csv.into_bytes()
}

async fn timed_get(srv: &Pixbatch, path: &str) -> anyhow::Result<(serde_json::Value, f64)> {
    let t = Instant::now();
    let v = srv.get_json(path).await?;
    Ok((v, t.elapsed().as_secs_f64() * 1e3))
}

async fn timed_post(srv: &Pixbatch, path: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let resp = srv.http.post(format!("{}{path}", srv.base)).send().await?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {path}: {status} {body}");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Polls `/status` and one page of images every 100 ms until the status is one of
/// `until`; returns (status JSON, status latencies, page latencies, peak RSS).
async fn drain(
    srv: &Pixbatch,
    id: &str,
    n: usize,
    until: &[&str],
    deadline: Duration,
) -> anyhow::Result<(serde_json::Value, Vec<f64>, Vec<f64>, u64)> {
    let pids = srv.pids();
    let (mut st_ms, mut page_ms, mut hwm) = (Vec::new(), Vec::new(), 0u64);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for k in 0usize.. {
        tick.tick().await;
        let (status, ms) = timed_get(srv, &format!("/status/{id}")).await?;
        st_ms.push(ms);
        // A page somewhere in the request, moving along it.
        let offset = (k * 997) % n.max(1);
        let (_, ms) = timed_get(
            srv,
            &format!("/requests/{id}/images?offset={offset}&limit=100"),
        )
        .await?;
        page_ms.push(ms);
        hwm = hwm.max(sample_all(&pids)?.hwm);
        let now = status["status"].as_str().unwrap_or_default();
        if until.iter().any(|u| u.eq_ignore_ascii_case(now)) {
            return Ok((status, st_ms, page_ms, hwm));
        }
        if t0.elapsed() > deadline {
            bail!("not finished after {deadline:?}: {status}");
        }
    }
    unreachable!()
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 99.0).unwrap_or(f64::NAN)
}

/// One request of `n` images of `kind` on a fresh server laid out as `setup`;
/// `big` times the completion, a retry and a cancel as well.
pub async fn run(
    bin: &Path,
    setup: &Setup,
    img: &ImageServer,
    kind: Kind,
    n: usize,
    big: bool,
) -> anyhow::Result<QueueRun> {
    let extra = [
        ("MAX_CSV_BYTES", "104857600"),
        ("MAX_ROWS", "100000"),
        // Queue work only: no retries of refused fetches, no webhook.
        ("RUST_LOG", "warn"),
    ];
    let srv = Pixbatch::start_as(bin, setup, &extra).await?;
    let pids = srv.pids();
    let run = format!("q{}-{}-{n}", pids[0], kind.label());
    let body = csv(kind, img, &run, n);
    let (code, answer, accept) = srv.upload(body, &[]).await?;
    if code != 202 {
        bail!("upload answered {code}: {answer}");
    }
    let id = answer["request_id"]
        .as_str()
        .context("no request_id")?
        .to_owned();
    let cpu0 = sample_all(&pids)?.cpu_seconds;
    let t0 = Instant::now();
    let deadline = Duration::from_secs(120) + Duration::from_millis(20 * n as u64);
    let (status, st_ms, page_ms, hwm) = drain(
        &srv,
        &id,
        n,
        &["completed", "failed", "cancelled"],
        deadline,
    )
    .await?;
    let drain_s = t0.elapsed().as_secs_f64();
    let cpu_s = sample_all(&pids)?.cpu_seconds - cpu0;
    let want = match kind {
        Kind::Refused => "failed",
        Kind::Tiny => "completed",
    };
    if !status["status"]
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(want))
    {
        bail!("expected {want}, got {status}");
    }
    let mut out = QueueRun {
        setup: setup.label(),
        kind,
        images: n,
        accept_s: accept.as_secs_f64(),
        drain_s,
        status_p99_ms: p99(st_ms),
        page_p99_ms: p99(page_ms),
        hwm,
        cpu_s,
        big: None,
    };
    if big {
        let complete_s = srv
            .metric_sum(
                "pixbatch_job_duration_seconds_sum{kind=\"complete\",outcome=\"completed\"}",
            )
            .await?;
        let csv_bytes = srv
            .http
            .get(format!("{}/requests/{id}/output.csv", srv.base))
            .send()
            .await?
            .bytes()
            .await?
            .len();
        let retry_s = timed_post(&srv, &format!("/requests/{id}/retry")).await?;
        // Let the retried run get going, then cancel it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cancel_s = timed_post(&srv, &format!("/requests/{id}/cancel")).await?;
        let (_, _, _, hwm) = drain(&srv, &id, n, &["cancelled", "failed"], deadline).await?;
        out.hwm = out.hwm.max(hwm);
        out.big = Some(BigOps {
            complete_s,
            csv_bytes,
            retry_s,
            cancel_s,
        });
    }
    srv.stop().await?;
    Ok(out)
}

/// The section's Markdown table, with each run's rate as a ratio to the smallest
/// request of its setup and kind.
pub fn table(runs: &[QueueRun]) -> String {
    let mut t = String::from(
        "| setup | images | kind | upload 202, s | 202 → final, s | images/s | × smallest | server CPU µs/image | status p99, ms | page p99, ms | peak RSS, MiB |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let base = runs
            .iter()
            .filter(|b| b.setup == r.setup && b.kind == r.kind)
            .min_by_key(|b| b.images)
            .map_or(f64::NAN, QueueRun::rate);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.2} | {:.1} | {:.0} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} |",
            r.setup,
            r.images,
            r.kind.label(),
            r.accept_s,
            r.drain_s,
            r.rate(),
            r.rate() / base,
            r.cpu_s / r.images as f64 * 1e6,
            r.status_p99_ms,
            r.page_p99_ms,
            r.hwm as f64 / (1024.0 * 1024.0)
        );
    }
    for r in runs {
        if let Some(b) = &r.big {
            let _ = writeln!(
                t,
                "\n{} images, {}: completion (output CSV, {:.1} MB) {:.2} s; retry of every failed image {:.2} s; cancel {:.2} s",
                r.images,
                r.setup,
                b.csv_bytes as f64 / 1e6,
                b.complete_s,
                b.retry_s,
                b.cancel_s
            );
        }
    }
    t
}

/// PASS/MISS lines for the queue targets.
pub fn verdicts(runs: &[QueueRun]) -> Vec<(String, bool)> {
    let mut v = Vec::new();
    for r in runs {
        let base = runs
            .iter()
            .filter(|b| b.setup == r.setup && b.kind == r.kind)
            .min_by_key(|b| b.images);
        if let Some(b) = base
            && b.images < r.images
        {
            let ratio = r.rate() / b.rate();
            v.push((
                format!(
                    "queue, {}, {}: {} images at ≥ 0.8× the rate of {} ({ratio:.2}×)",
                    r.setup,
                    r.kind.label(),
                    r.images,
                    b.images
                ),
                ratio >= 0.8,
            ));
        }
        if r.kind == Kind::Refused {
            v.push((
                format!(
                    "queue, {}: {} refused images ≥ 1000 images/s ({:.0})",
                    r.setup,
                    r.images,
                    r.rate()
                ),
                r.rate() >= 1000.0,
            ));
        }
        v.push((
            format!(
                "queue, {}, {} images: status p99 {:.1} ms and page p99 {:.1} ms < 50 ms, peak RSS {:.0} MiB < 300",
                r.setup,
                r.images,
                r.status_p99_ms,
                r.page_p99_ms,
                r.hwm as f64 / (1024.0 * 1024.0)
            ),
            r.status_p99_ms < 50.0 && r.page_p99_ms < 50.0 && r.hwm < 300 << 20,
        ));
        if let Some(b) = &r.big {
            v.push((
                format!(
                    "queue, {}, {} images: output CSV {:.2} s < 5, retry {:.2} s < 5, cancel {:.2} s < 2",
                    r.setup, r.images, b.complete_s, b.retry_s, b.cancel_s
                ),
                b.complete_s < 5.0 && b.retry_s < 5.0 && b.cancel_s < 2.0,
            ));
        }
    }
    v
}
