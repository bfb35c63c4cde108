//! The delivery job: one signed POST of a webhook event, logged, then delivered,
//! given up, or rescheduled as a new job due at the next step of the retry schedule.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::Data;
use chrono::Utc;
use tracing::Instrument;

use super::{DeliverJob, HandlerResult, JobContext, JobKey, infra_error, push};
use crate::{
    domain::EventState,
    store::{Db, StoreError},
    telemetry::metrics::{self, JobKind, JobTimer},
    webhook,
};

/// Webhook receivers get this long to answer.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// apalis entry point.
pub(super) async fn handle(job: DeliverJob, ctx: Data<Arc<JobContext>>) -> HandlerResult {
    let span = tracing::info_span!("deliver", event_id = %job.event_id, attempt = job.attempt);
    let timer = JobTimer::start(JobKind::Deliver);
    match run(&job, &ctx).instrument(span).await {
        Ok(outcome) => {
            timer.finish(outcome);
            Ok(())
        }
        Err(e) => {
            timer.finish("error");
            Err(infra_error(e).await)
        }
    }
}

/// One try; returns its outcome for the metrics: `delivered`, `retry`, `failed`, or
/// `skipped` for a stale job.
async fn run(job: &DeliverJob, ctx: &JobContext) -> Result<&'static str, StoreError> {
    let Some(event) = ctx.db.event(&job.event_id).await? else {
        return Ok("skipped");
    };
    if event.state != EventState::Pending || event.attempts != job.attempt {
        tracing::debug!(state = %event.state, attempts = event.attempts, "stale delivery job");
        return Ok("skipped");
    }
    let body = event.payload.into_bytes();
    let timestamp = Utc::now().timestamp();
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

    let (status, error, retry) = match &result {
        Ok(r) if (200..300).contains(&r.status) => (Some(r.status), None, false),
        Ok(r) if r.status == 410 => (
            Some(r.status),
            Some("HTTP 410: receiver gone".to_owned()),
            false,
        ),
        Ok(r) => (Some(r.status), Some(format!("HTTP {}", r.status)), true),
        Err(e) => (None, Some(e.to_string()), e.is_transient()),
    };
    let tries_before = event.attempts;
    let next_delay = if retry {
        ctx.settings
            .webhook
            .schedule
            .get(tries_before as usize)
            .copied()
    } else {
        None
    };
    let state = match (status, next_delay) {
        (Some(s), _) if (200..300).contains(&s) => EventState::Delivered,
        (_, Some(_)) => EventState::Pending,
        _ => EventState::Failed,
    };
    let next_at =
        next_delay.and_then(|d| chrono::Duration::from_std(d).ok().map(|d| Utc::now() + d));

    let mut tx = ctx.db.begin_write().await?;
    let recorded = Db::record_delivery(
        &mut tx,
        &event.id,
        tries_before,
        status,
        error.as_deref(),
        duration_ms,
        state,
        next_at,
    )
    .await?;
    if recorded && let Some(delay) = next_delay {
        let next = DeliverJob {
            event_id: event.id.clone(),
            attempt: tries_before + 1,
        };
        let key = JobKey::deliver(&event.id, tries_before + 1);
        push(&mut tx, &next, &key, delay).await?;
    }
    tx.commit().await?;
    let outcome = match state {
        EventState::Delivered => {
            tracing::info!(?status, duration_ms, "webhook delivered");
            "delivered"
        }
        EventState::Pending => {
            tracing::warn!(
                ?status,
                ?error,
                ?next_delay,
                "webhook try failed; will retry"
            );
            "retry"
        }
        EventState::Failed => {
            tracing::warn!(?status, ?error, "webhook given up");
            "failed"
        }
    };
    metrics::webhook_outcome(outcome);
    Ok(outcome)
}
