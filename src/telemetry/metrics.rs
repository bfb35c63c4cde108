//! Prometheus metrics through the `metrics` facade: what the workers and the API
//! record, and the text `/metrics` serves.
//!
//! The recorder is process-global, so [`install`] is idempotent: the server installs it
//! at start, `/metrics` asks for the same handle, and unit tests may call it again.
//! Every label value is a `&'static str` chosen here or a route template, never a URL
//! or an id, so the number of series stays bounded whatever the traffic.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::FailureCode;

/// Always 1, labelled with what the codec runs here (`kernels`, `cpu`, `chroma`:
/// [`crate::imaging::Codec`]).
pub const CODEC_INFO: &str = "pixbatch_codec_info";
/// Jobs picked up, by `kind`.
pub const JOBS_STARTED: &str = "pixbatch_jobs_started_total";
/// Jobs finished, by `kind` and `outcome`.
pub const JOBS_FINISHED: &str = "pixbatch_jobs_finished_total";
/// Job run time, by `kind` and `outcome`.
pub const JOB_DURATION: &str = "pixbatch_job_duration_seconds";
/// Image bytes downloaded.
pub const BYTES_FETCHED: &str = "pixbatch_fetched_bytes_total";
/// Images whose earlier output was copied instead of transformed, by `via`
/// (`not_modified`: the origin answered 304; `same_bytes`: it sent the same bytes).
pub const IMAGES_REUSED: &str = "pixbatch_images_reused_total";
/// Image bytes a 304 saved downloading (the size of the unchanged source).
pub const BYTES_NOT_FETCHED: &str = "pixbatch_not_fetched_bytes_total";
/// Bytes written to the store, by `kind` (`image`, `csv`).
pub const BYTES_WRITTEN: &str = "pixbatch_written_bytes_total";
/// Failed blob writes, by `op` (`put`, `probe`) and `kind` (`no_space`, `read_only`,
/// `too_large`, `permission`, `remote`, `io`).
pub const STORAGE_ERRORS: &str = "pixbatch_storage_errors_total";
/// Jobs waiting or running, by `queue` and `status` (refreshed on every scrape).
pub const QUEUE_DEPTH: &str = "pixbatch_queue_depth";
/// Failed image tries, by `code` (a [`FailureCode`]) and `retry` (`true` when
/// another try follows, `false` when the image failed for good).
pub const IMAGE_FAILURES: &str = "pixbatch_image_failures_total";
/// Webhook delivery tries, by `outcome`.
pub const WEBHOOK_DELIVERIES: &str = "pixbatch_webhook_deliveries_total";
/// HTTP requests answered, by `method`, `route` and `status`.
pub const HTTP_REQUESTS: &str = "pixbatch_http_requests_total";
/// Time to the response head, by `method` and `route`.
pub const HTTP_DURATION: &str = "pixbatch_http_request_duration_seconds";

/// Histogram buckets in seconds: an image job takes tens of milliseconds to a
/// download timeout; an HTTP answer a millisecond to a large upload.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Records [`CODEC_INFO`] (once the recorder is installed).
pub fn codec_info(codec: &crate::imaging::Codec) {
    gauge!(
        CODEC_INFO,
        "kernels" => codec.kernels,
        "cpu" => codec.cpu,
        "chroma" => codec.chroma.as_str()
    )
    .set(1.0);
}

/// Installs the global recorder once and returns its handle (the same on every call).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let handle = match builder().install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                // Another recorder is already global (an embedding program's): keep
                // serving a valid, if empty, document rather than failing.
                tracing::warn!(error = %e, "metrics recorder not installed");
                builder().build_recorder().handle()
            }
        };
        describe();
        // Histograms keep raw samples until upkeep folds them in; scrapes do that too,
        // but a server nobody scrapes must not grow without bound.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "metrics upkeep thread not started");
        }
        handle
    })
}

fn builder() -> PrometheusBuilder {
    // Only fails on an empty bucket list, which this is not.
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

fn describe() {
    describe_counter!(JOBS_STARTED, "Jobs picked up by a worker, by kind.");
    describe_counter!(
        JOBS_FINISHED,
        "Jobs finished, by kind and outcome (see the README's metrics table)."
    );
    describe_histogram!(JOB_DURATION, Unit::Seconds, "Job run time.");
    describe_counter!(BYTES_FETCHED, Unit::Bytes, "Image bytes downloaded.");
    describe_counter!(BYTES_WRITTEN, Unit::Bytes, "Bytes written to the store.");
    describe_counter!(
        IMAGES_REUSED,
        "Images whose earlier output was copied instead of transformed, by via (not_modified, same_bytes)."
    );
    describe_counter!(
        BYTES_NOT_FETCHED,
        Unit::Bytes,
        "Image bytes not downloaded because the origin answered 304 Not Modified."
    );
    describe_counter!(
        STORAGE_ERRORS,
        "Failed blob writes, by op (put, probe) and kind (no_space, read_only, too_large, permission, remote, io)."
    );
    describe_gauge!(
        CODEC_INFO,
        "1, labelled with the codec's kernels here (avx2, sse2, neon, or scalar when libjpeg was built without SIMD), the CPU's best extension and the chroma route (dct, planes)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Jobs pending (due or delayed), queued or running, by queue and status."
    );
    describe_counter!(
        IMAGE_FAILURES,
        "Failed image tries, by code (timeout, http_error, undecodable, ...) and retry (true: another try follows; false: failed for good)."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery tries, by outcome (delivered, retry, failed)."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to the response head.");
}

/// The Prometheus text exposition of everything recorded in this process.
pub fn render() -> String {
    let handle = install();
    handle.run_upkeep();
    handle.render()
}

/// The three job types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// One image: fetch, transform, store.
    Image,
    /// A request's completion: output CSV, final status, webhook event.
    Complete,
    /// One webhook delivery try.
    Deliver,
}

impl JobKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Complete => "complete",
            Self::Deliver => "deliver",
        }
    }
}

/// Counts a job as started when created and as finished, with its duration, by
/// [`JobTimer::finish`].
#[derive(Debug)]
pub struct JobTimer {
    kind: JobKind,
    started: Instant,
}

impl JobTimer {
    /// A job of `kind` starts now.
    pub fn start(kind: JobKind) -> Self {
        counter!(JOBS_STARTED, "kind" => kind.as_str()).increment(1);
        Self {
            kind,
            started: Instant::now(),
        }
    }

    /// The job ended with `outcome` (a fixed word per kind, e.g. `stored`).
    pub fn finish(self, outcome: &'static str) {
        let kind = self.kind.as_str();
        counter!(JOBS_FINISHED, "kind" => kind, "outcome" => outcome).increment(1);
        histogram!(JOB_DURATION, "kind" => kind, "outcome" => outcome)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// An image download of `n` bytes.
pub fn bytes_fetched(n: u64) {
    counter!(BYTES_FETCHED).increment(n);
}

/// How an image's earlier output came to be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReusedVia {
    /// The origin answered `304 Not Modified`.
    NotModified,
    /// The origin sent a body with the same content hash.
    SameBytes,
}

/// `images` images (one URL and its same-request duplicates) reused; `not_fetched`
/// bytes not downloaded thanks to a 304.
pub fn images_reused(via: ReusedVia, images: u64, not_fetched: u64) {
    let via = match via {
        ReusedVia::NotModified => "not_modified",
        ReusedVia::SameBytes => "same_bytes",
    };
    counter!(IMAGES_REUSED, "via" => via).increment(images);
    counter!(BYTES_NOT_FETCHED).increment(not_fetched);
}

/// `n` bytes written to the store, of `kind` (`image` or `csv`).
pub fn bytes_written(kind: &'static str, n: u64) {
    counter!(BYTES_WRITTEN, "kind" => kind).increment(n);
}

/// One blob write (`op`: `put` or `probe`) failed with an error of `kind`.
pub fn storage_error(op: &'static str, kind: &'static str) {
    counter!(STORAGE_ERRORS, "op" => op, "kind" => kind).increment(1);
}

/// Counts one failed image try.
pub fn image_failure(code: FailureCode, retry: bool) {
    let retry = if retry { "true" } else { "false" };
    counter!(IMAGE_FAILURES, "code" => code.as_str(), "retry" => retry).increment(1);
}

/// One webhook try ended `delivered`, `retry` or `failed`.
pub fn webhook_outcome(outcome: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// Sets the depth of one queue in one status.
pub fn queue_depth(queue: &str, status: &'static str, jobs: i64) {
    gauge!(QUEUE_DEPTH, "queue" => queue.to_owned(), "status" => status).set(jobs as f64);
}

/// The queue's depth could not be counted: NaN, which no alert on a count mistakes
/// for one.
pub fn queue_depth_unknown(queue: &str, status: &'static str) {
    gauge!(QUEUE_DEPTH, "queue" => queue.to_owned(), "status" => status).set(f64::NAN);
}

/// One HTTP request answered. `route` must be a template, never a raw path.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    counter!(
        HTTP_REQUESTS,
        "method" => method,
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_renders_what_was_recorded() {
        let a = install() as *const PrometheusHandle;
        let b = install() as *const PrometheusHandle;
        assert_eq!(a, b);
        JobTimer::start(JobKind::Image).finish("stored");
        bytes_fetched(10);
        let text = render();
        assert!(
            text.contains(r#"pixbatch_jobs_finished_total{kind="image",outcome="stored"}"#),
            "{text}"
        );
        assert!(
            text.contains("pixbatch_job_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("pixbatch_fetched_bytes_total"), "{text}");
    }
}
