//! The completion job: writes the output CSV, sets the final status and writes the
//! webhook event into the outbox, the last two in one transaction. Idempotent: a
//! redelivered completion rewrites the same CSV bytes and then finds the run final.

use std::{sync::Arc, time::Duration};

use apalis::prelude::Data;
use tracing::Instrument;

use super::{CompleteJob, DeliverJob, HandlerResult, JobContext, infra_error, push};
use crate::{
    csv::{ImageOutcome, OutputRow, write_output},
    domain::{EventId, ImageState, RequestStatus},
    store::{BlobKey, Db, RequestRecord, StoreError},
    telemetry::metrics::{self, JobKind, JobTimer},
    webhook::{CompletionEvent, ImageCounts},
};

/// apalis entry point.
pub(super) async fn handle(job: CompleteJob, ctx: Data<Arc<JobContext>>) -> HandlerResult {
    let span = tracing::info_span!("complete", request_id = %job.request_id, run = job.run);
    let timer = JobTimer::start(JobKind::Complete);
    match run(&job, &ctx).instrument(span).await {
        Ok(true) => {
            timer.finish("completed");
            Ok(())
        }
        Ok(false) => {
            timer.finish("skipped");
            Ok(())
        }
        Err(e) => {
            timer.finish("error");
            Err(infra_error(e).await)
        }
    }
}

/// Runs the completion; `false` when there was nothing to do (stale or repeated).
async fn run(job: &CompleteJob, ctx: &JobContext) -> Result<bool, StoreError> {
    let Some(request) = ctx.db.request(job.request_id).await? else {
        return Ok(false);
    };
    let cancelled = match request.status {
        _ if request.run != job.run => None,
        RequestStatus::Pending | RequestStatus::Processing if request.remaining == 0 => Some(false),
        RequestStatus::Cancelled if request.output_key.is_none() => Some(true),
        _ => None,
    };
    let Some(cancelled) = cancelled else {
        tracing::debug!(status = %request.status, "run already completed or superseded");
        return Ok(false);
    };
    let source = ctx.db.output_source(job.request_id).await?;
    let outcomes: Vec<Vec<ImageOutcome>> = source
        .rows
        .iter()
        .map(|(_, images)| {
            images
                .iter()
                .map(|(state, key, error)| match (state, key) {
                    (ImageState::Succeeded, Some(key)) => ImageOutcome::Stored(ctx.file_url(key)),
                    (ImageState::Failed, _) => {
                        ImageOutcome::Failed(error.clone().unwrap_or_else(|| "failed".into()))
                    }
                    (ImageState::Cancelled, _) => ImageOutcome::Failed("cancelled".into()),
                    _ => ImageOutcome::Pending,
                })
                .collect()
        })
        .collect();
    let with_errors = request.failed > 0 || cancelled;
    let rows = source
        .rows
        .iter()
        .zip(&outcomes)
        .map(|((cells, _), outputs)| OutputRow { cells, outputs });
    let csv = write_output(&request.header, rows, with_errors)
        .map_err(|e| StoreError::Corrupt(format!("output CSV: {e}")))?;
    let key = BlobKey::output_csv(job.request_id);
    let csv_len = csv.len() as u64;
    if let Err(e) = ctx.blobs.put(&key, bytes::Bytes::from(csv)).await {
        // Not final until the CSV is stored: try again later, durably (a new job due
        // after a backoff, like an image retry), for as long as the store refuses.
        let retry = job.retry + 1;
        let delay = ctx.backoff().next_delay(retry, None);
        tracing::warn!(error = %e, retry, ?delay, "could not store the output CSV; the request stays unfinished and the completion runs again");
        let mut tx = ctx.db.begin_write().await?;
        let again = CompleteJob {
            retry,
            ..job.clone()
        };
        let key = format!("complete:{}:run{}:retry{retry}", job.request_id, job.run);
        push(&mut tx, &again, &key, delay).await?;
        tx.commit().await?;
        return Ok(false);
    }
    // Every image of the run is final: any partial file left is from a crashed write.
    match ctx.blobs.remove_partials(job.request_id).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed partial files of interrupted writes"),
        Err(e) => tracing::warn!(error = %e, "could not remove partial files"),
    }
    metrics::bytes_written("csv", csv_len);

    let mut tx = ctx.db.begin_write().await?;
    let finished = if cancelled {
        Db::finalize_cancelled(&mut tx, job.request_id, job.run, key.as_str()).await?
    } else {
        Db::finalize_request(&mut tx, job.request_id, job.run, key.as_str()).await?
    };
    let Some(finished) = finished else {
        return Ok(false);
    };
    let webhook_url = finished
        .webhook_url
        .clone()
        .or_else(|| ctx.settings.webhook.default_url.clone());
    if let Some(url) = webhook_url {
        let event_id = EventId::new();
        let payload = serde_json::to_string(&event_payload(ctx, &finished))?;
        Db::insert_event(&mut tx, &event_id, job.request_id, &url, &payload).await?;
        let key = format!("deliver:{event_id}:try0");
        let deliver = DeliverJob {
            event_id,
            attempt: 0,
        };
        push(&mut tx, &deliver, &key, Duration::ZERO).await?;
    }
    tx.commit().await?;
    tracing::info!(status = %finished.status, succeeded = finished.succeeded, failed = finished.failed, "request finished");
    Ok(true)
}

/// The webhook body for a finished request.
pub(crate) fn event_payload(ctx: &JobContext, r: &RequestRecord) -> CompletionEvent {
    CompletionEvent {
        kind: CompletionEvent::TYPE.to_owned(),
        request_id: r.id.as_uuid(),
        status: r.status,
        output_csv: r.output_key.as_deref().map(|k| ctx.file_url(k)),
        images: ImageCounts {
            total: r.total,
            succeeded: r.succeeded,
            failed: r.failed,
            reused: r.reused,
        },
        finished_at: r.finished_at.unwrap_or_else(chrono::Utc::now),
    }
}
