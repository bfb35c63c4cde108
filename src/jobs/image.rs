//! The image job: fetch, transform on the CPU pool, store, and record the outcome
//! through the fan-in that enqueues the completion after the last image.

use std::{sync::Arc, time::Duration};

use apalis::prelude::Data;
use tracing::Instrument;

use super::{CompleteJob, HandlerResult, ImageJob, JobContext, infra_error, push};
use crate::{
    domain::{ImageState, RequestStatus},
    imaging::{self, MaxBytes, PoolError, Quality, TransformOptions},
    store::{BlobKey, Db, FanIn, ImageOutcomeUpdate, StoreError},
    telemetry::metrics::{self, JobKind, JobTimer},
};

/// Why one try of an image failed, decided once: retry later, or fail for good.
#[derive(Debug)]
enum TryError {
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    Fail(String),
}

/// How one run of an image job ended, for the jobs metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Stored (with its same-URL duplicates).
    Stored,
    /// Failed for good.
    Failed,
    /// A transient failure; a later try is queued.
    Retry,
    /// Nothing to do: already finished, cancelled, or gone.
    Skipped,
}

impl Handled {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Failed => "failed",
            Self::Retry => "retry",
            Self::Skipped => "skipped",
        }
    }
}

/// apalis entry point.
pub(super) async fn handle(job: ImageJob, ctx: Data<Arc<JobContext>>) -> HandlerResult {
    let span = tracing::info_span!("image", request_id = %job.request_id, row = job.row, position = job.position, url = tracing::field::Empty);
    let timer = JobTimer::start(JobKind::Image);
    match run(&job, &ctx).instrument(span).await {
        Ok(handled) => {
            timer.finish(handled.as_str());
            Ok(())
        }
        Err(e) => {
            timer.finish("error");
            Err(infra_error(e).await)
        }
    }
}

async fn run(job: &ImageJob, ctx: &JobContext) -> Result<Handled, StoreError> {
    let Some(work) = ctx
        .db
        .image_work(job.request_id, job.row, job.position)
        .await?
    else {
        tracing::warn!("image no longer exists; dropping job");
        return Ok(Handled::Skipped);
    };
    tracing::Span::current().record("url", work.input_url.as_str());
    if work.state != ImageState::Pending || work.request_status.is_final() {
        tracing::debug!(state = %work.state, status = %work.request_status, "nothing to do");
        return Ok(Handled::Skipped);
    }
    if work.request_status == RequestStatus::Pending {
        ctx.db.mark_started(job.request_id).await?;
    }
    let attempt = work.attempts as u32 + 1;
    let quality = Quality::parse(&work.quality).unwrap_or(ctx.settings.default_quality);
    let max_bytes = work
        .max_bytes
        .and_then(|m| MaxBytes::parse(&m.to_string()).ok());

    // Images of this request with the same URL share this job's outcome: one download.
    let duplicates = ctx
        .db
        .duplicates_of(job.request_id, job.row, job.position, &work.input_url)
        .await?;
    let mut targets = vec![(job.row, job.position)];
    targets.extend(duplicates);

    match process(job, ctx, &work.input_url, quality, max_bytes, &targets).await {
        Ok(outcome) => {
            if let ImageOutcomeUpdate::Succeeded {
                input_bytes,
                output_bytes,
                ..
            } = &outcome
            {
                tracing::info!(attempt, input_bytes, output_bytes, "image stored");
            }
            finish(job, ctx, &targets, &outcome).await?;
            Ok(Handled::Stored)
        }
        Err(TryError::Retry {
            message,
            retry_after,
        }) if attempt < ctx.settings.raw.fetch_attempts => {
            let delay = ctx.backoff().next_delay(attempt, retry_after);
            tracing::info!(attempt, error = %message, ?delay, "transient failure; retrying later");
            let mut tx = ctx.db.begin_write().await?;
            if Db::record_retry(&mut tx, job.request_id, job.row, job.position, &message).await? {
                let key = format!(
                    "image:{}:{}:{}:run{}:try{}",
                    job.request_id, job.row, job.position, work.run, attempt
                );
                push(&mut tx, job, &key, delay).await?;
            }
            tx.commit().await?;
            Ok(Handled::Retry)
        }
        Err(TryError::Retry { message, .. }) => {
            let error = format!("{message} (gave up after {attempt} tries)");
            tracing::warn!(attempt, %error, "image failed");
            finish(job, ctx, &targets, &ImageOutcomeUpdate::Failed { error }).await?;
            Ok(Handled::Failed)
        }
        Err(TryError::Fail(error)) => {
            tracing::warn!(attempt, %error, "image failed");
            finish(job, ctx, &targets, &ImageOutcomeUpdate::Failed { error }).await?;
            Ok(Handled::Failed)
        }
    }
}

/// One try: download, transform off the async threads, store under the key of every
/// target (this image and its same-URL duplicates).
async fn process(
    job: &ImageJob,
    ctx: &JobContext,
    url: &str,
    quality: Quality,
    max_bytes: Option<MaxBytes>,
    targets: &[(u32, u32)],
) -> Result<ImageOutcomeUpdate, TryError> {
    let downloaded = ctx.fetcher.download(url).await.map_err(|e| {
        if e.is_transient() {
            TryError::Retry {
                message: e.to_string(),
                retry_after: e.retry_after(),
            }
        } else {
            TryError::Fail(e.to_string())
        }
    })?;
    let input_bytes = downloaded.bytes.len() as i64;
    metrics::bytes_fetched(downloaded.bytes.len() as u64);
    let options = TransformOptions {
        quality,
        default_quality: match ctx.settings.default_quality {
            Quality::Absolute(q) => q,
            Quality::Relative(_) | Quality::Auto(_) => 50,
        },
        limits: ctx.settings.raw.image_limits(),
        max_bytes,
    };
    let bytes = downloaded.bytes;
    let transformed = ctx
        .cpu
        .run(move || imaging::transform(&bytes, &options))
        .await
        .map_err(|e| match e {
            PoolError::ShutDown => TryError::Retry {
                message: e.to_string(),
                retry_after: None,
            },
            PoolError::Panicked(_) => TryError::Fail(e.to_string()),
        })?
        .map_err(|e| TryError::Fail(e.to_string()))?;

    // A storage failure (a full disk, a read-only mount, S3 down) is transient: the
    // try is retried with backoff, and nothing is recorded as stored until every
    // target's file is durable. Its message (`storage: …`) is what the images API shows.
    let output = bytes::Bytes::from(transformed.bytes);
    for &(row, position) in targets {
        let key = BlobKey::image(job.request_id, row, position);
        ctx.blobs
            .put(&key, output.clone())
            .await
            .map_err(|e| TryError::Retry {
                message: e.to_string(),
                retry_after: None,
            })?;
        metrics::bytes_written("image", output.len() as u64);
    }
    let report = &transformed.report;
    Ok(ImageOutcomeUpdate::Succeeded {
        input_bytes,
        output_bytes: output.len() as i64,
        width: i64::from(report.width),
        height: i64::from(report.height),
        report: serde_json::to_value(report).unwrap_or_default(),
    })
}

/// Records the outcome; the last image of the run pushes the completion in the same
/// transaction, keyed by request and run so it is pushed once.
async fn finish(
    job: &ImageJob,
    ctx: &JobContext,
    targets: &[(u32, u32)],
    outcome: &ImageOutcomeUpdate,
) -> Result<(), StoreError> {
    let mut tx = ctx.db.begin_write().await?;
    let fan_in = Db::finish_images(&mut tx, job.request_id, targets, outcome).await?;
    if let FanIn::LastOfRun { run } = fan_in {
        let complete = CompleteJob {
            request_id: job.request_id,
            run,
            retry: 0,
        };
        let key = format!("complete:{}:run{run}", job.request_id);
        push(&mut tx, &complete, &key, Duration::ZERO).await?;
    }
    tx.commit().await?;
    if fan_in == FanIn::AlreadyFinished {
        tracing::debug!("image already finished by an earlier delivery of this job");
    }
    Ok(())
}
