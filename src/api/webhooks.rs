//! The webhook delivery log and redelivery.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};

use super::{ApiTags, AppState, ProblemResponse};
use crate::domain::EventState;

/// One completion event.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct EventBody {
    /// The `webhook-id`, the same on every try.
    id: String,
    /// Where it is sent.
    url: String,
    /// `pending`, `delivered` or `failed`.
    state: EventState,
    /// Tries so far.
    attempts: i64,
    /// When the next try is due, while pending.
    next_attempt_at: Option<DateTime<Utc>>,
    /// When it was written.
    created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    finished_at: Option<DateTime<Utc>>,
    /// The exact JSON body sent.
    payload: serde_json::Value,
}

/// One delivery try.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AttemptBody {
    /// The event tried.
    event_id: String,
    /// When.
    attempted_at: DateTime<Utc>,
    /// The HTTP status answered, if any.
    http_status: Option<i64>,
    /// What went wrong, when it did.
    error: Option<String>,
    /// How long the try took, in milliseconds.
    duration_ms: i64,
}

/// A request's events and every try.
#[derive(Debug, Object)]
pub struct DeliveryLog {
    /// Events, oldest first.
    events: Vec<EventBody>,
    /// Tries, oldest first.
    attempts: Vec<AttemptBody>,
}

/// Answers of the delivery log.
#[derive(Debug, ApiResponse)]
pub enum LogResponse {
    /// The log.
    #[oai(status = 200)]
    Ok(Json<DeliveryLog>),
}

/// A redelivery was queued.
#[derive(Debug, Object)]
pub struct Redelivery {
    /// The event sent again, with the same `webhook-id`.
    event_id: String,
}

/// Answers of redeliver.
#[derive(Debug, ApiResponse)]
pub enum RedeliverResponse {
    /// Queued; the log (`Location`) shows the try.
    #[oai(status = 202)]
    Accepted(Json<Redelivery>, #[oai(header = "Location")] String),
}

/// Webhook endpoints.
pub struct WebhooksApi(pub Arc<AppState>);

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Webhook delivery log
    ///
    /// Every completion event of the request and every delivery try: time, HTTP status
    /// or error, duration.
    #[oai(path = "/requests/:request_id/webhooks", method = "get")]
    async fn log(&self, request_id: Path<String>) -> Result<LogResponse, ProblemResponse> {
        let r = self.0.request(&request_id).await?;
        let events = self
            .0
            .db
            .events_of(r.id)
            .await?
            .into_iter()
            .map(|e| EventBody {
                id: e.id.to_string(),
                url: e.url,
                state: e.state,
                attempts: e.attempts,
                next_attempt_at: e.next_attempt_at.filter(|_| e.state == EventState::Pending),
                created_at: e.created_at,
                finished_at: e.finished_at,
                payload: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
            })
            .collect();
        let attempts = self
            .0
            .db
            .attempts_of(r.id)
            .await?
            .into_iter()
            .map(|a| AttemptBody {
                event_id: a.event_id.to_string(),
                attempted_at: a.attempted_at,
                http_status: a.http_status,
                error: a.error,
                duration_ms: a.duration_ms,
            })
            .collect();
        Ok(LogResponse::Ok(Json(DeliveryLog { events, attempts })))
    }

    /// Redeliver the completion event
    ///
    /// Sends the request's latest event again, with the same `webhook-id` (receivers
    /// dedupe on it). A failed redelivery is retried on the remaining steps of
    /// `WEBHOOK_RETRY_SCHEDULE`. 409 when there is no event yet, while a retried run
    /// goes on, after a cancel until its event is written, or when a try is already
    /// scheduled.
    #[oai(path = "/requests/:request_id/webhooks/redeliver", method = "post")]
    async fn redeliver(
        &self,
        request_id: Path<String>,
    ) -> Result<RedeliverResponse, ProblemResponse> {
        let id = AppState::request_id(&request_id)?;
        let event = self.0.lifecycle.redeliver(id).await?;
        Ok(RedeliverResponse::Accepted(
            Json(Redelivery {
                event_id: event.to_string(),
            }),
            format!("{}/requests/{id}/webhooks", self.0.settings.public_base_url),
        ))
    }
}
