//! SQL for the webhook outbox (`webhook_events`) and its delivery log (`webhook_attempts`).

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{Db, StoreError, Tx, with_pool, with_tx};
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
    /// The run whose completion wrote it (`None`: written before runs were recorded).
    pub run: Option<i64>,
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

/// A `webhook_events` row as stored.
#[derive(FromRow)]
struct EventRow {
    id: String,
    request_id: String,
    url: String,
    payload: String,
    state: String,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    run: Option<i64>,
}

impl TryFrom<EventRow> for EventRecord {
    type Error = StoreError;

    fn try_from(r: EventRow) -> Result<Self, StoreError> {
        Ok(EventRecord {
            id: EventId::from_stored(r.id),
            request_id: r
                .request_id
                .parse()
                .map_err(|e: uuid::Error| StoreError::Corrupt(e.to_string()))?,
            url: r.url,
            payload: r.payload,
            state: r.state.parse().map_err(StoreError::Corrupt)?,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            created_at: r.created_at,
            finished_at: r.finished_at,
            run: r.run,
        })
    }
}

/// A `webhook_attempts` row as stored.
#[derive(FromRow)]
struct AttemptRow {
    event_id: String,
    attempted_at: DateTime<Utc>,
    http_status: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
}

impl Db {
    /// Writes an event into the outbox, in the transaction that finalised its request's
    /// `run`.
    pub async fn insert_event(
        tx: &mut Tx,
        id: &EventId,
        request_id: RequestId,
        run: i64,
        url: &str,
        payload: &str,
    ) -> Result<(), StoreError> {
        let sql = "insert into webhook_events
                          (id, request_id, url, payload, created_at, next_attempt_at, run)
                   values ($1, $2, $3, $4, $5, $6, $7)";
        let now = Utc::now();
        with_tx!(tx, c => {
            sqlx::query(sql)
                .bind(id.as_str())
                .bind(request_id.to_string())
                .bind(url)
                .bind(payload)
                .bind(now)
                .bind(now)
                .bind(run)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// On PostgreSQL, `for share` of the event's request row. A retry updates that row
    /// before it supersedes the request's events, so it now waits for this transaction
    /// (and then sees what it wrote), or this one waits for the retry (and then sees
    /// the new run): a check of the request's run cannot read the old run while a retry
    /// commits beside it. (Read committed reads no lock; SQLite's writers take turns.)
    async fn share_request_of(tx: &mut Tx, event: &EventId) -> Result<(), StoreError> {
        if let Tx::Postgres(t) = tx {
            sqlx::query(
                "select 1 from requests r join webhook_events e on r.id = e.request_id
                  where e.id = $1 for share of r",
            )
            .bind(event.as_str())
            .execute(&mut **t)
            .await?;
        }
        Ok(())
    }

    /// The run of the event's request, when it is newer than the run that wrote the
    /// event and the event is still pending: the request was retried since, and the
    /// event's status no longer holds. An event the retry already gave up has its line
    /// saying so; a try that was out meanwhile does not repeat it.
    pub async fn newer_run(tx: &mut Tx, event: &EventId) -> Result<Option<i64>, StoreError> {
        Self::share_request_of(tx, event).await?;
        let sql = "select r.run from webhook_events e join requests r on r.id = e.request_id
                    where e.id = $1 and e.run < r.run and e.state = 'pending'";
        Ok(with_tx!(tx, c => {
            sqlx::query_scalar(sql)
                .bind(event.as_str())
                .fetch_optional(&mut *c)
                .await?
        }))
    }

    /// The newest run of the event's request that has an event of its own, when it is
    /// newer than the event's run: that event tells the receiver how the request
    /// stands, and this one, sent after it, would tell a status that no longer holds.
    pub async fn newer_event_run(&self, event: &EventId) -> Result<Option<i64>, StoreError> {
        let sql = "select max(o.run) from webhook_events e
                     join webhook_events o on o.request_id = e.request_id and o.run > e.run
                    where e.id = $1";
        Ok(with_pool!(self, p => {
            sqlx::query_scalar::<_, Option<i64>>(sql)
                .bind(event.as_str())
                .fetch_one(p)
                .await?
        }))
    }

    /// Gives up a pending event before its try `expected_attempts + 1` is made, with a
    /// line in its delivery log saying `why` (no try is counted: none was made).
    /// `false` when the event moved on meanwhile.
    pub async fn give_up_event(
        tx: &mut Tx,
        id: &EventId,
        expected_attempts: i64,
        why: &str,
    ) -> Result<bool, StoreError> {
        let now = Utc::now();
        let changed = with_tx!(&mut *tx, c => {
            sqlx::query(
                "update webhook_events set state = 'failed', next_attempt_at = null, finished_at = $1
                  where id = $2 and state = 'pending' and attempts = $3",
            )
            .bind(now)
            .bind(id.as_str())
            .bind(expected_attempts)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        if changed == 1 {
            Self::log_attempt(tx, id, now, None, Some(why), 0).await?;
        }
        Ok(changed == 1)
    }

    /// One line of an event's delivery log.
    async fn log_attempt(
        tx: &mut Tx,
        id: &EventId,
        at: DateTime<Utc>,
        http_status: Option<u16>,
        error: Option<&str>,
        duration_ms: i64,
    ) -> Result<(), StoreError> {
        with_tx!(tx, c => {
            sqlx::query(
                "insert into webhook_attempts (event_id, attempted_at, http_status, error, duration_ms)
                 values ($1, $2, $3, $4, $5)",
            )
            .bind(id.as_str())
            .bind(at)
            .bind(http_status.map(i64::from))
            .bind(error)
            .bind(duration_ms)
            .execute(&mut *c)
            .await?;
        });
        Ok(())
    }

    /// The time a delivery try is signed with: the database's clock, shared by every
    /// worker (on PostgreSQL; SQLite's is this machine's own). Receivers refuse a
    /// `webhook-timestamp` a few minutes off theirs, and one worker whose clock drifted
    /// would otherwise have every try it makes refused.
    pub async fn signing_time(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(match self.pool() {
            crate::store::Pool::Postgres(p) => {
                sqlx::query_scalar("select clock_timestamp()")
                    .fetch_one(p)
                    .await?
            }
            crate::store::Pool::Sqlite(_) => Utc::now(),
        })
    }

    /// One event, or `None`.
    pub async fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let sql = "select * from webhook_events where id = $1";
        let row: Option<EventRow> =
            with_pool!(self, p => sqlx::query_as(sql).bind(id.as_str()).fetch_optional(p).await?);
        row.map(EventRecord::try_from).transpose()
    }

    /// Every event of a request, oldest first: by run (the last is the latest run's),
    /// then by when it was written (a worker's clock, which may be off).
    pub async fn events_of(&self, request: RequestId) -> Result<Vec<EventRecord>, StoreError> {
        let sql = "select * from webhook_events where request_id = $1
                   order by coalesce(run, 0), created_at, id";
        let rows: Vec<EventRow> = with_pool!(self, p => {
            sqlx::query_as(sql).bind(request.to_string()).fetch_all(p).await?
        });
        rows.into_iter().map(EventRecord::try_from).collect()
    }

    /// Every delivery try of a request's events, oldest first.
    pub async fn attempts_of(&self, request: RequestId) -> Result<Vec<AttemptRecord>, StoreError> {
        let sql = "select a.* from webhook_attempts a join webhook_events e on e.id = a.event_id
                    where e.request_id = $1 order by a.id";
        let rows: Vec<AttemptRow> = with_pool!(self, p => {
            sqlx::query_as(sql).bind(request.to_string()).fetch_all(p).await?
        });
        Ok(rows
            .into_iter()
            .map(|r| AttemptRecord {
                event_id: EventId::from_stored(r.event_id),
                attempted_at: r.attempted_at,
                http_status: r.http_status,
                error: r.error,
                duration_ms: r.duration_ms,
            })
            .collect())
    }

    /// Gives up the request's events whose delivery is being retried on schedule (a
    /// try failed), when a retry starts a new run: the run's own event will say how it
    /// ended, and an older one arriving after it (its schedule runs for days) would
    /// tell the receiver a stale status. One not tried yet goes out now, ahead of the
    /// new run's. Each gets a line in its delivery log saying why. Returns how many.
    pub async fn supersede_pending_events(
        tx: &mut Tx,
        request: RequestId,
        run: i64,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let why = superseded_by(run);
        let rid = request.to_string();
        with_tx!(&mut *tx, c => {
            sqlx::query(
                "insert into webhook_attempts (event_id, attempted_at, http_status, error, duration_ms)
                 select id, $1, null, $2, 0 from webhook_events
                  where request_id = $3 and state = 'pending' and attempts > 0",
            )
            .bind(now)
            .bind(&why)
            .bind(&rid)
            .execute(&mut *c)
            .await?;
        });
        let changed = with_tx!(tx, c => {
            sqlx::query(
                "update webhook_events set state = 'failed', next_attempt_at = null, finished_at = $1
                  where request_id = $2 and state = 'pending' and attempts > 0",
            )
            .bind(now)
            .bind(&rid)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        Ok(changed)
    }

    /// Makes a finished event due again for one more try; returns its try count, or
    /// `None` when it is still pending (a try is already scheduled), or when its request
    /// is no longer final at the run that wrote it (a retry committed meanwhile).
    pub async fn redeliver(tx: &mut Tx, id: &EventId) -> Result<Option<i64>, StoreError> {
        Self::share_request_of(tx, id).await?;
        let sql =
            "update webhook_events set state = 'pending', next_attempt_at = $1, finished_at = null
                    where id = $2 and state <> 'pending'
                      and exists (select 1 from requests r
                                   where r.id = webhook_events.request_id
                                     and r.status in ('Completed', 'CompletedWithErrors',
                                                      'Failed', 'Cancelled')
                                     and (webhook_events.run is null
                                          or r.run = webhook_events.run))
                   returning attempts";
        Ok(with_tx!(tx, c => {
            sqlx::query_scalar(sql)
                .bind(Utc::now())
                .bind(id.as_str())
                .fetch_optional(&mut *c)
                .await?
        }))
    }

    /// Logs one try and moves the event on: delivered, failed, or due again at `next`.
    /// The move is guarded on `pending` and on the try count, so a try whose event has
    /// moved on meanwhile (given up by a retry while the try was at the receiver, or
    /// tried by a second copy of its job) changes nothing; it is logged all the same,
    /// since it reached the receiver. Returns whether the event moved.
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
        let finished_at = (state != EventState::Pending).then_some(now);
        let changed = with_tx!(&mut *tx, c => {
            sqlx::query(
                "update webhook_events
                    set attempts = attempts + 1, state = $1, next_attempt_at = $2,
                        finished_at = $3
                  where id = $4 and state = 'pending' and attempts = $5",
            )
            .bind(state.as_str())
            .bind(next)
            .bind(finished_at)
            .bind(id.as_str())
            .bind(expected_attempts)
            .execute(&mut *c)
            .await?
            .rows_affected()
        });
        Self::log_attempt(tx, id, now, http_status, error, duration_ms).await?;
        Ok(changed > 0)
    }
}

/// The delivery log's line for an event given up because its request was retried.
pub fn superseded_by(run: i64) -> String {
    format!("superseded: the request was retried (run {run}); that run's event replaces this one")
}
