//! The delivery job: one signed POST of a webhook event, logged, then delivered,
//! given up, or rescheduled as a new job due at the next step of the retry schedule.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::{Attempt, Data};
use tracing::Instrument;

use super::{HandlerResult, JobContext, TryError, infra_error};
use crate::{
    domain::{EventState, FailureCode},
    lifecycle::{DeliverJob, DeliveryTry},
    store::StoreError,
    telemetry::metrics::{self, JobKind, JobTimer},
    webhook,
};

/// Webhook receivers get this long to answer.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// apalis entry point.
pub(super) async fn handle(
    job: DeliverJob,
    ctx: Data<Arc<JobContext>>,
    attempt: Attempt,
) -> HandlerResult {
    // The request is known once the event is read (see `run`).
    let span = tracing::info_span!(
        "deliver",
        event_id = %job.event_id,
        attempt = job.attempt,
        request_id = tracing::field::Empty
    );
    let timer = JobTimer::start(JobKind::Deliver);
    match run(&job, &ctx).instrument(span.clone()).await {
        Ok(outcome) => {
            timer.finish(outcome);
            Ok(())
        }
        Err(e) => {
            timer.finish("error");
            // In the job's span: the one error line of a failing job names it.
            Err(infra_error(e, &attempt).instrument(span).await)
        }
    }
}

/// One try; returns its outcome for the metrics: `delivered`, `retry`, `failed`, or
/// `skipped` for a stale job (also one whose event moved on while its try was out:
/// the try is logged, the event left as it is).
async fn run(job: &DeliverJob, ctx: &JobContext) -> Result<&'static str, StoreError> {
    let Some(event) = ctx.db.event(&job.event_id).await? else {
        return Ok("skipped");
    };
    tracing::Span::current().record("request_id", tracing::field::display(&event.request_id));
    if event.state != EventState::Pending || event.attempts != job.attempt {
        tracing::debug!(state = %event.state, attempts = event.attempts, "stale delivery job");
        return Ok("skipped");
    }
    if ctx
        .lifecycle
        .give_up_if_outrun(&event.id, event.attempts)
        .await?
    {
        tracing::info!("webhook given up before its try: a newer run's event replaces it");
        metrics::webhook_outcome("failed");
        return Ok("failed");
    }
    let body = event.payload.into_bytes();
    let timestamp = ctx.db.signing_time().await?.timestamp();
    let headers = webhook::headers(
        &ctx.settings.webhook.keys,
        event.id.as_str(),
        timestamp,
        &body,
    );
    let started = Instant::now();
    let result = ctx
        .fetcher
        .post_webhook(&event.url, &headers, body, WEBHOOK_TIMEOUT)
        .await;
    let duration_ms = started.elapsed().as_millis() as i64;

    let http_status = result.as_ref().ok().map(|r| r.status);
    let failed: Option<TryError> = match result {
        Ok(r) if (200..300).contains(&r.status) => None,
        Ok(r) if r.status == 410 => Some(TryError::abort(
            FailureCode::ReceiverGone,
            "HTTP 410: receiver gone",
        )),
        Ok(r) => Some(TryError::retry(
            FailureCode::HttpError,
            format!("HTTP {}", r.status),
        )),
        // SPEC §8: only a 410 stops the schedule. Unlike a download, a refused
        // address is worth another try here: the receiver's name may resolve to a
        // public address later, and the schedule bounds the tries.
        Err(e) => Some(TryError::retry(e.code(), e.to_string())),
    };
    let tries_before = event.attempts;
    let next_delay = failed.as_ref().filter(|f| f.is_retry()).and_then(|_| {
        ctx.settings
            .webhook
            .schedule
            .get(tries_before as usize)
            .copied()
    });
    let error = failed.as_ref().map(|f| f.failure().message.clone());
    let attempt = DeliveryTry {
        http_status,
        error,
        duration_ms,
    };
    let state = ctx
        .lifecycle
        .record_delivery(&event.id, tries_before, &attempt, next_delay)
        .await?;
    let delivered = attempt.delivered();
    let (status, error) = (attempt.http_status, attempt.error);
    let outcome = match state {
        None => {
            tracing::info!(
                ?status,
                ?error,
                "webhook try logged; its event had moved on meanwhile"
            );
            // The try reached the receiver (or failed to) all the same; no next try
            // follows from it.
            metrics::webhook_outcome(if delivered { "delivered" } else { "failed" });
            return Ok("skipped");
        }
        Some(EventState::Delivered) => {
            tracing::info!(?status, duration_ms, "webhook delivered");
            "delivered"
        }
        Some(EventState::Pending) => {
            tracing::warn!(
                ?status,
                ?error,
                ?next_delay,
                "webhook try failed; will retry"
            );
            "retry"
        }
        Some(EventState::Failed) => {
            tracing::warn!(?status, ?error, "webhook given up");
            "failed"
        }
    };
    metrics::webhook_outcome(outcome);
    Ok(outcome)
}
