//! SQL for the webhook outbox (`webhook_events`) and its delivery log (`webhook_attempts`).

use chrono::{DateTime, Utc};
use sqlx::{Row, sqlite::SqliteRow};

use super::{Db, StoreError, Tx};
use crate::domain::{EventId, EventState, RequestId};

/// A stored webhook event.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The `webhook-id`.
    pub id: EventId,
    /// Its request.
    pub request_id: RequestId,
    /// Target URL.
    pub url: String,
    /// The exact body sent.
    pub payload: String,
    /// Delivery state.
    pub state: EventState,
    /// Tries so far.
    pub attempts: i64,
    /// When the next try is due, while pending.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One delivery try.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The event tried.
    pub event_id: EventId,
    /// When.
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status answered, if any.
    pub http_status: Option<i64>,
    /// The error, when there was no answer or it was not a success.
    pub error: Option<String>,
    /// How long the try took.
    pub duration_ms: i64,
}

fn event_from_row(r: &SqliteRow) -> Result<EventRecord, StoreError> {
    let state: String = r.try_get("state")?;
    let request_id: String = r.try_get("request_id")?;
    Ok(EventRecord {
        id: EventId::from_stored(r.try_get("id")?),
        request_id: request_id
            .parse()
            .map_err(|e: uuid::Error| StoreError::Corrupt(e.to_string()))?,
        url: r.try_get("url")?,
        payload: r.try_get("payload")?,
        state: state.parse().map_err(StoreError::Corrupt)?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

impl Db {
    /// Writes an event into the outbox, in the transaction that finalised its request.
    pub async fn insert_event(
        tx: &mut Tx,
        id: &EventId,
        request_id: RequestId,
        url: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into webhook_events (id, request_id, url, payload, created_at, next_attempt_at)
             values (?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(request_id.to_string())
        .bind(url)
        .bind(payload)
        .bind(Utc::now())
        .bind(Utc::now())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// One event, or `None`.
    pub async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query("select * from webhook_events where id = ?")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Every event of a request, oldest first.
    pub async fn events_of(&self, request: RequestId) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "select * from webhook_events where request_id = ? order by created_at, id",
        )
        .bind(request.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Every delivery try of a request's events, oldest first.
    pub async fn attempts_of(&self, request: RequestId) -> Result<Vec<AttemptRecord>, StoreError> {
        let rows = sqlx::query(
            "select a.* from webhook_attempts a join webhook_events e on e.id = a.event_id
              where e.request_id = ? order by a.id",
        )
        .bind(request.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    event_id: EventId::from_stored(r.try_get("event_id")?),
                    attempted_at: r.try_get("attempted_at")?,
                    http_status: r.try_get("http_status")?,
                    error: r.try_get("error")?,
                    duration_ms: r.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    /// Makes a finished event due again for one more try; returns its try count, or
    /// `None` when it is still pending (a try is already scheduled).
    pub async fn redeliver(tx: &mut Tx, id: &EventId) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "update webhook_events set state = 'pending', next_attempt_at = ?, finished_at = null
              where id = ? and state <> 'pending'
             returning attempts",
        )
        .bind(Utc::now())
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| r.try_get("attempts").map_err(StoreError::from))
            .transpose()
    }

    /// Logs one try and moves the event on: delivered, failed, or due again at `next`.
    /// Guarded on `pending` and on the try count, so a redelivered job cannot log twice.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_delivery(
        tx: &mut Tx,
        id: &EventId,
        expected_attempts: i64,
        http_status: Option<u16>,
        error: Option<&str>,
        duration_ms: i64,
        state: EventState,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let changed = sqlx::query(
            "update webhook_events
                set attempts = attempts + 1, state = ?, next_attempt_at = ?,
                    finished_at = case when ? = 'pending' then null else ? end
              where id = ? and state = 'pending' and attempts = ?",
        )
        .bind(state.as_str())
        .bind(next)
        .bind(state.as_str())
        .bind(now)
        .bind(id.as_str())
        .bind(expected_attempts)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        sqlx::query(
            "insert into webhook_attempts (event_id, attempted_at, http_status, error, duration_ms)
             values (?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(http_status.map(i64::from))
        .bind(error)
        .bind(duration_ms)
        .execute(&mut **tx)
        .await?;
        Ok(true)
    }
}
