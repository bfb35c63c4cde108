//! Recording one delivery try of a webhook event and queuing the next one.

use std::time::Duration;

use chrono::Utc;

use super::{DeliverJob, JobKey, Lifecycle, steps::push};
use crate::{
    domain::{EventId, EventState},
    store::{self, Db, StoreError},
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
    /// Gives up `event` before its try `tries_before + 1` when a newer run of its
    /// request has an event of its own (a retry's run finished while this one waited
    /// for its try): sent after that one, it would tell the receiver a status that no
    /// longer holds. Its log says so. Whether it was given up.
    pub async fn give_up_if_outrun(
        &self,
        event: &EventId,
        tries_before: i64,
    ) -> Result<bool, StoreError> {
        let Some(run) = self.db.newer_event_run(event).await? else {
            return Ok(false);
        };
        let mut tx = self.db.begin_write().await?;
        let given_up =
            Db::give_up_event(&mut tx, event, tries_before, &store::superseded_by(run)).await?;
        tx.commit().await?;
        Ok(given_up)
    }

    /// Logs try number `tries_before + 1` of `event`; the event is then delivered (a
    /// 2xx), pending with its next try queued due after `next` (when given), or failed
    /// for good. A failed try of an event whose request was retried since is its last
    /// (superseded, as a retry gives up the events already being retried): its next try
    /// would bring the receiver a status that no longer holds, after the new run's.
    /// A stale try (the event moved on meanwhile) is logged, changes nothing and
    /// queues nothing. Returns the state the try left the event in, `None` for a stale one.
    pub async fn record_delivery(
        &self,
        event: &EventId,
        tries_before: i64,
        attempt: &DeliveryTry,
        next: Option<Duration>,
    ) -> Result<Option<EventState>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let mut next = next.filter(|_| !attempt.delivered());
        let mut error = attempt.error.clone();
        if next.is_some()
            && let Some(run) = Db::newer_run(&mut tx, event).await?
        {
            next = None;
            let why = store::superseded_by(run);
            error = Some(match error {
                Some(e) => format!("{e}; {why}"),
                None => why,
            });
        }
        let state = match next {
            _ if attempt.delivered() => EventState::Delivered,
            Some(_) => EventState::Pending,
            None => EventState::Failed,
        };
        let next_at = next.and_then(|d| chrono::Duration::from_std(d).ok().map(|d| Utc::now() + d));
        let recorded = Db::record_delivery(
            &mut tx,
            event,
            tries_before,
            attempt.http_status,
            error.as_deref(),
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
        Ok(recorded.then_some(state))
    }
}
