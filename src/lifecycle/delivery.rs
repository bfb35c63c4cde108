//! Recording one delivery try of a webhook event and queuing the next one.

use std::time::Duration;

use chrono::Utc;

use super::{DeliverJob, JobKey, Lifecycle, steps::push};
use crate::{
    domain::{EventId, EventState},
    store::{Db, StoreError},
};

/// What one POST of an event gave.
#[derive(Debug, Clone)]
pub struct DeliveryTry {
    /// The receiver's status, when it answered.
    pub http_status: Option<u16>,
    /// Why it did not count as delivered.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
}

impl DeliveryTry {
    /// A 2xx answer.
    pub fn delivered(&self) -> bool {
        self.http_status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl Lifecycle {
    /// Logs try number `tries_before + 1` of `event`; the event is then delivered (a
    /// 2xx), pending with its next try queued due after `next` (when given), or failed
    /// for good. A stale try (the event moved on meanwhile) changes nothing and queues
    /// nothing. Returns the state the try left the event in.
    pub async fn record_delivery(
        &self,
        event: &EventId,
        tries_before: i64,
        attempt: &DeliveryTry,
        next: Option<Duration>,
    ) -> Result<EventState, StoreError> {
        let next = next.filter(|_| !attempt.delivered());
        let state = match next {
            _ if attempt.delivered() => EventState::Delivered,
            Some(_) => EventState::Pending,
            None => EventState::Failed,
        };
        let next_at = next.and_then(|d| chrono::Duration::from_std(d).ok().map(|d| Utc::now() + d));
        let mut tx = self.db.begin_write().await?;
        let recorded = Db::record_delivery(
            &mut tx,
            event,
            tries_before,
            attempt.http_status,
            attempt.error.as_deref(),
            attempt.duration_ms,
            state,
            next_at,
        )
        .await?;
        if recorded && let Some(delay) = next {
            let job = DeliverJob {
                event_id: event.clone(),
                attempt: tries_before + 1,
            };
            push(
                &mut tx,
                &job,
                &JobKey::deliver(event, tries_before + 1),
                delay,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(state)
    }
}
