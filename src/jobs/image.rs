//! The image job: fetch, transform on the CPU pool, store, and record the outcome
//! through the fan-in that enqueues the completion after the last image.
//!
//! Reuse: when an earlier image with the same URL and the same settings fingerprint
//! left a record in `sources` (and the request allows reuse), the fetch is
//! conditional. On `304`, or on a body with the same content hash, that image's output
//! is copied to this image's own key instead of being decoded and encoded again. If
//! the earlier output is gone, the image is done in full. The record is replaced with
//! every success, in the transaction that marks it, so it always names a complete
//! output and the newest copy of it.

use std::sync::Arc;

use apalis::prelude::{Attempt, Data};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::{HandlerResult, JobContext, TryError, infra_error};
use crate::{
    domain::{Failure, FailureCode, ImageState, RequestStatus},
    fetch::{Conditional, FetchError, Validators},
    imaging::{self, Quality, TransformOptions},
    lifecycle::{ImageJob, Recorded},
    store::{BlobKey, ImageOutcomeUpdate, ImageWork, Source, SourceFacts, StoreError, Writable},
    telemetry::metrics::{self, JobKind, JobTimer, ReusedVia},
};

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
pub(super) async fn handle(
    job: ImageJob,
    ctx: Data<Arc<JobContext>>,
    attempt: Attempt,
) -> HandlerResult {
    let span = tracing::info_span!("image", request_id = %job.request_id, row = job.row, position = job.position, url = tracing::field::Empty);
    let timer = JobTimer::start(JobKind::Image);
    match run(&job, &ctx).instrument(span.clone()).await {
        Ok(handled) => {
            timer.finish(handled.as_str());
            Ok(())
        }
        Err(e) => {
            timer.finish("error");
            // In the job's span: the one error line of a failing job names it.
            Err(infra_error(e, &attempt).instrument(span).await)
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
    tracing::Span::current().record("url", crate::fetch::loggable(&work.input_url));
    if work.state != ImageState::Pending || work.request_status.is_final() {
        tracing::debug!(state = %work.state, status = %work.request_status, "nothing to do");
        return Ok(Handled::Skipped);
    }
    if job.is_stale(work.run, work.attempts) {
        tracing::debug!(
            run = work.run,
            tries = work.attempts,
            "a later try or run has been scheduled; nothing to do"
        );
        return Ok(Handled::Skipped);
    }
    if work.request_status == RequestStatus::Pending {
        ctx.lifecycle.image_started(job.image()).await?;
    }
    let attempt = work.attempts as u32 + 1;
    // Of the tries, this one included, those counted against `FETCH_ATTEMPTS`.
    let budgeted = budgeted_tries(&work, attempt);
    if let Writable::No(reason) = ctx.blobs.refusing().await {
        let failure = Failure::new(FailureCode::StorageUnavailable, reason);
        return wait_for_store(job, ctx, &work, attempt, failure).await;
    }

    // Images of this request with the same URL share this job's outcome: one download.
    let duplicates = ctx
        .db
        .duplicates_of(job.request_id, job.row, job.position, &work.input_url)
        .await?;
    let mut targets = vec![(job.row, job.position)];
    targets.extend(duplicates);

    let options = TransformOptions {
        quality: work.quality,
        default_quality: match ctx.settings.default_quality {
            Quality::Absolute(q) => q,
            Quality::Relative(_) | Quality::Auto(_) => 50,
        },
        limits: ctx.settings.limits.image,
        max_bytes: work.max_bytes,
    };
    let settings = options.fingerprint();
    let prior = if work.reuse {
        ctx.db.source(&work.input_url, &settings).await?
    } else {
        None
    };
    let image = Image {
        url: &work.input_url,
        options,
        settings,
        prior,
        reuse: work.reuse,
    };

    match process(job, ctx, &image, &targets).await {
        Ok(Processed::MovedOn) => Ok(Handled::Skipped),
        Ok(Processed::Unchecked(e)) => Err(e),
        Ok(Processed::Done(outcome, reused)) => {
            let outcome = *outcome;
            let stored = match &outcome {
                ImageOutcomeUpdate::Succeeded {
                    input_bytes,
                    output_bytes,
                    reused_from,
                    ..
                } => Some((
                    *input_bytes,
                    *output_bytes,
                    reused_from.map(|r| r.to_string()),
                )),
                ImageOutcomeUpdate::Failed(_) => None,
            };
            if finish(job, ctx, work.run, &targets, outcome).await? == Recorded::AlreadyFinished {
                return Ok(Handled::Skipped);
            }
            // Said once recorded: a try whose image had left `pending` meanwhile (a
            // cancel, an earlier delivery) changed nothing, and is counted `skipped`.
            if let Some((input_bytes, output_bytes, reused_from)) = stored {
                tracing::info!(
                    attempt,
                    input_bytes,
                    output_bytes,
                    reused_from,
                    "image stored"
                );
            }
            if let Some(Reused { via, not_fetched }) = reused {
                metrics::images_reused(via, targets.len() as u64, not_fetched);
            }
            Ok(Handled::Stored)
        }
        Err(TryError::Retry { failure, after }) if budgeted < ctx.settings.fetch.attempts => {
            let delay = ctx.backoff().next_delay(budgeted, after);
            try_again_later(job, ctx, work.run, attempt, &failure, delay, false).await
        }
        Err(TryError::Retry { failure, .. }) => {
            // The budget's tries: those that waited for the store are not among them.
            let failure = Failure {
                message: format!("{failure} (gave up after {budgeted} tries)"),
                ..failure
            };
            fail(job, ctx, work.run, &targets, attempt, failure).await
        }
        Err(TryError::Abort(failure)) => fail(job, ctx, work.run, &targets, attempt, failure).await,
        Err(TryError::StoreRefused(failure)) => {
            wait_for_store(job, ctx, &work, attempt, failure).await
        }
    }
}

/// Tries of an image counted against `FETCH_ATTEMPTS`, this one (`attempt`) included:
/// all but those that waited for the blob store ([`wait_for_store`]).
fn budgeted_tries(work: &ImageWork, attempt: u32) -> u32 {
    attempt.saturating_sub(u32::try_from(work.storage_tries).unwrap_or(0))
}

/// Queues the image again for the blob store, counted apart from its
/// `FETCH_ATTEMPTS`: the store is the service's own, and the image waits for it as the
/// output CSV does, the backoff growing to `FETCH_BACKOFF_CAP`. Two ways here: the
/// store is known to refuse writes (what `/readyz` reports, from the last write or a
/// probe), so the try does no work (a download and a transform would only be thrown
/// away); or the try's own write was refused as any would be
/// ([`TryError::StoreRefused`]: a disk with a few blocks left takes the probe but no
/// output). A write that may have been refused for its own file (too large, a
/// folder's permission) spends the budget.
async fn wait_for_store(
    job: &ImageJob,
    ctx: &JobContext,
    work: &ImageWork,
    attempt: u32,
    failure: Failure,
) -> Result<Handled, StoreError> {
    let delay = ctx.backoff().next_delay(attempt, None);
    try_again_later(job, ctx, work.run, attempt, &failure, delay, true).await
}

/// Queues the image's next try after `delay` ([`Lifecycle::retry_image_later`]);
/// logged and counted once queued. `Skipped` when nothing was queued: the image had
/// left `pending` meanwhile (a cancel, an earlier delivery).
///
/// [`Lifecycle::retry_image_later`]: crate::lifecycle::Lifecycle::retry_image_later
async fn try_again_later(
    job: &ImageJob,
    ctx: &JobContext,
    run: i64,
    attempt: u32,
    failure: &Failure,
    delay: std::time::Duration,
    waited_for_store: bool,
) -> Result<Handled, StoreError> {
    let queued = ctx
        .lifecycle
        .retry_image_later(job.image(), run, attempt, failure, delay, waited_for_store)
        .await?;
    if !queued {
        return Ok(Handled::Skipped);
    }
    if waited_for_store {
        tracing::info!(attempt, error = %failure, ?delay, "the blob store refuses writes; waiting for it");
    } else {
        tracing::info!(attempt, code = %failure.code, error = %failure, ?delay, "transient failure; retrying later");
    }
    metrics::image_failure(failure.code, true);
    Ok(Handled::Retry)
}

/// What one try works on: the URL, how to transform it, and what an earlier image
/// of the same URL and settings left behind.
struct Image<'a> {
    url: &'a str,
    options: TransformOptions,
    /// [`TransformOptions::fingerprint`] of `options`.
    settings: String,
    /// The record of an earlier image with this URL and settings (only when reusing).
    prior: Option<Source>,
    /// Whether the request reuses earlier outputs.
    reuse: bool,
}

/// One try: download (conditionally when there is an earlier record), then either copy
/// the earlier output or transform off the async threads, and store under the key of
/// every target (this image and its same-URL duplicates).
async fn process(
    job: &ImageJob,
    ctx: &JobContext,
    image: &Image<'_>,
    targets: &[(u32, u32)],
) -> Result<Processed, TryError> {
    let validators = image
        .prior
        .as_ref()
        .map(|p| Validators {
            etag: p.etag.clone(),
            last_modified: p.last_modified.clone(),
            url: p.validated_url.clone(),
        })
        .unwrap_or_default();
    let fetched = ctx
        .fetcher
        .download_conditional(image.url, &validators)
        .await?;
    let downloaded = match (fetched, &image.prior) {
        (Conditional::Modified(d), _) => d,
        (Conditional::NotModified { .. }, Some(prior)) => {
            let facts = SourceFacts {
                url: image.url.to_owned(),
                settings: image.settings.clone(),
                etag: prior.etag.clone(),
                last_modified: prior.last_modified.clone(),
                validated_url: prior.validated_url.clone(),
                content_hash: prior.content_hash.clone(),
            };
            if let Some(stop) = write_check(job, ctx).await {
                return Ok(stop);
            }
            if let Some(outcome) = reuse(job, ctx, prior, targets, facts).await? {
                let reused = Reused {
                    via: ReusedVia::NotModified,
                    not_fetched: prior.input_bytes.max(0) as u64,
                };
                return Ok(Processed::Done(Box::new(outcome), Some(reused)));
            }
            tracing::info!(from = %prior.request_id, "earlier output is gone; fetching in full");
            ctx.fetcher.download(image.url).await?
        }
        // Validators are only sent when there is a record.
        (Conditional::NotModified { .. }, None) => {
            return Err(FetchError::UnexpectedNotModified.into());
        }
    };
    let input_bytes = downloaded.bytes.len() as i64;
    metrics::bytes_fetched(downloaded.bytes.len() as u64);
    let bytes = downloaded.bytes;
    let hashed = bytes.clone();
    let content_hash = ctx
        .cpu
        .run(move || format!("{:x}", Sha256::digest(&hashed)))
        .await?;
    let facts = SourceFacts {
        url: image.url.to_owned(),
        settings: image.settings.clone(),
        etag: downloaded.validators.etag,
        last_modified: downloaded.validators.last_modified,
        validated_url: downloaded.validators.url,
        content_hash,
    };
    if image.reuse
        && let Some(prior) = &image.prior
        && prior.content_hash == facts.content_hash
    {
        if let Some(stop) = write_check(job, ctx).await {
            return Ok(stop);
        }
        if let Some(outcome) = reuse(job, ctx, prior, targets, facts.clone()).await? {
            let reused = Reused {
                via: ReusedVia::SameBytes,
                not_fetched: 0,
            };
            return Ok(Processed::Done(Box::new(outcome), Some(reused)));
        }
        tracing::info!(from = %prior.request_id, "earlier output is gone; transforming");
    }

    let options = image.options;
    let transformed = ctx
        .cpu
        .run(move || imaging::transform(&bytes, &options))
        .await??;

    let output = bytes::Bytes::from(transformed.bytes);
    if let Some(stop) = write_check(job, ctx).await {
        return Ok(stop);
    }
    for &(row, position) in targets {
        let key = BlobKey::image(job.request_id, row, position);
        ctx.blobs
            .put(&key, output.clone())
            .await
            .map_err(TryError::storage)?;
        metrics::bytes_written("image", output.len() as u64);
    }
    let report = &transformed.report;
    let outcome = Box::new(ImageOutcomeUpdate::Succeeded {
        input_bytes,
        output_bytes: output.len() as i64,
        width: i64::from(report.width),
        height: i64::from(report.height),
        report: serde_json::to_value(report).unwrap_or_default(),
        reused_from: None,
        source: Some(facts),
    });
    Ok(Processed::Done(outcome, None))
}

/// An earlier output copied instead of a transform.
struct Reused {
    via: ReusedVia,
    /// Input bytes not downloaded (a 304).
    not_fetched: u64,
}

/// What a try's work came to.
enum Processed {
    /// Every output written: the outcome to record, and how an earlier output was
    /// reused (counted once the outcome is recorded).
    Done(Box<ImageOutcomeUpdate>, Option<Reused>),
    /// A takeover or a retry moved the image on while this try worked: nothing written.
    MovedOn,
    /// The image could not be looked at before the writes: nothing written, and the
    /// job runs again.
    Unchecked(StoreError),
}

/// `None` when the try may still write its outputs: its image is pending at the job's
/// run and try. Every run writes the same key (SPEC §5.8), so a try that ran on after
/// its job was taken over and finished, or after a retry started a new run, would put
/// its bytes over the file the newer try recorded (its own record is refused, its file
/// would not be). Asked just before the writes, after the download and the transform
/// that take a try's time. A database that does not answer writes nothing either: the
/// try may be such a straggler, and its record could not be made anyway; the job runs
/// again ([`Processed::Unchecked`]).
async fn write_check(job: &ImageJob, ctx: &JobContext) -> Option<Processed> {
    match ctx
        .db
        .image_work(job.request_id, job.row, job.position)
        .await
    {
        Ok(Some(w)) => {
            let current = w.state == ImageState::Pending
                && !w.request_status.is_final()
                && !job.is_stale(w.run, w.attempts);
            if current {
                return None;
            }
            tracing::info!(
                state = %w.state,
                run = w.run,
                tries = w.attempts,
                "the image moved on while this try worked; nothing written"
            );
            Some(Processed::MovedOn)
        }
        Ok(None) => Some(Processed::MovedOn),
        Err(e) => Some(Processed::Unchecked(e)),
    }
}

/// Copies the earlier output to every target's key (no decode, no encode); `None`
/// when it is gone (its request was deleted or its files expired), and the caller
/// does the image in full. A copy interrupted by a crash is simply made again by the
/// redelivered job: nothing is recorded until every copy is in place.
async fn reuse(
    job: &ImageJob,
    ctx: &JobContext,
    prior: &Source,
    targets: &[(u32, u32)],
    facts: SourceFacts,
) -> Result<Option<ImageOutcomeUpdate>, TryError> {
    let Ok(from) = BlobKey::parse(&prior.output_key) else {
        return Ok(None);
    };
    for &(row, position) in targets {
        let to = BlobKey::image(job.request_id, row, position);
        if to == from {
            continue;
        }
        if !ctx
            .blobs
            .copy(&from, &to)
            .await
            .map_err(TryError::storage)?
        {
            return Ok(None);
        }
    }
    Ok(Some(ImageOutcomeUpdate::Succeeded {
        input_bytes: prior.input_bytes,
        output_bytes: prior.output_bytes,
        width: prior.width,
        height: prior.height,
        report: prior.report.clone(),
        reused_from: Some(prior.request_id),
        source: Some(facts),
    }))
}

/// Fails the image (and its same-URL duplicates) for good.
async fn fail(
    job: &ImageJob,
    ctx: &JobContext,
    run: i64,
    targets: &[(u32, u32)],
    attempt: u32,
    failure: Failure,
) -> Result<Handled, StoreError> {
    let (code, message) = (failure.code, failure.to_string());
    if finish(job, ctx, run, targets, ImageOutcomeUpdate::Failed(failure)).await?
        == Recorded::AlreadyFinished
    {
        return Ok(Handled::Skipped);
    }
    tracing::warn!(attempt, code = %code, error = %message, "image failed");
    metrics::image_failure(code, false);
    Ok(Handled::Failed)
}

/// Records the outcome in run `run` (the one the job read at its start) through the
/// process's group commit; the batch that records the last image of a run also pushes
/// its completion. Returns once committed.
async fn finish(
    job: &ImageJob,
    ctx: &JobContext,
    run: i64,
    targets: &[(u32, u32)],
    outcome: ImageOutcomeUpdate,
) -> Result<Recorded, StoreError> {
    let recorded = ctx
        .outcomes
        .record(job.request_id, run, targets, outcome)
        .await?;
    if recorded == Recorded::AlreadyFinished {
        tracing::debug!("image already finished (an earlier delivery, or a cancel)");
    }
    Ok(recorded)
}
