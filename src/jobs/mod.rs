//! Durable jobs on apalis (SQLite or PostgreSQL): one per image, one completion per request run,
//! one delivery per webhook try.
//!
//! Failures are decided once, close to the cause: a handler returns `Ok` for every
//! business outcome (stored, failed for good, or rescheduled), recording it in our own
//! tables. A transient download failure is retried by pushing a *new* job with a
//! `run_at` in the future, so the wait survives restarts and holds no worker slot.
//! A handler returns `Err` only when the database itself failed; apalis then runs the
//! job again (bounded by [`INFRA_ATTEMPTS`]).
//!
//! Every push carries an idempotency key (apalis keeps `UNIQUE(job_type, key)`), so a
//! redelivered job that pushes its follow-up again adds nothing (SQLite ignores the
//! duplicate; on PostgreSQL the push runs under a savepoint and a duplicate is rolled
//! back to it, leaving the caller's transaction usable).

mod backoff;
mod complete;
mod deliver;
mod image;
mod keys;
mod outcomes;
mod poll;
pub mod tidy;

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};

pub use backoff::Backoff;
pub use keys::JobKey;
pub use outcomes::Outcomes;

use crate::{
    config::Settings,
    domain::{EventId, RequestId},
    fetch::Fetcher,
    imaging::TransformPool,
    store::{BlobStore, Db, Pool, StoreError, Tx},
};

/// How often apalis runs a job whose handler failed on infrastructure (database) errors.
pub const INFRA_ATTEMPTS: usize = 10;

/// A job type: its payload and the queue it lives in.
pub trait Job: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    /// The queue name, set explicitly: apalis' default is the Rust type path, and moving
    /// the type would orphan its queue.
    const QUEUE: &'static str;
}

/// Process one image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageJob {
    /// The request.
    pub request_id: RequestId,
    /// 0-based row.
    pub row: u32,
    /// 0-based position in the row.
    pub position: u32,
}

impl Job for ImageJob {
    const QUEUE: &'static str = "pixbatch.images";
}

/// Write the output CSV and final status of one run of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteJob {
    /// The request.
    pub request_id: RequestId,
    /// The run that finished.
    pub run: i64,
    /// Earlier tries of this completion that could not store the output CSV (0 for
    /// the first); each retry is a new job with its own key, due after a backoff.
    #[serde(default)]
    pub retry: u32,
}

impl Job for CompleteJob {
    const QUEUE: &'static str = "pixbatch.completions";
}

/// One delivery try of a webhook event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverJob {
    /// The event (its `webhook-id`).
    pub event_id: EventId,
    /// Tries made before this one; stale duplicates are recognised by it.
    pub attempt: i64,
}

impl Job for DeliverJob {
    const QUEUE: &'static str = "pixbatch.deliveries";
}

/// Pushes a job inside the caller's transaction, due at `run_after` from now.
pub async fn push<J: Job>(
    tx: &mut Tx,
    job: &J,
    idempotency_key: &JobKey,
    run_after: Duration,
) -> Result<(), StoreError> {
    let args = serde_json::to_vec(job)?;
    let run_at = std::time::SystemTime::now() + run_after;
    let task = TaskBuilder::new(args)
        .max_attempts(INFRA_ATTEMPTS)
        .idempotency_key(idempotency_key.as_str())
        .run_at_time(run_at)
        .build();
    push_tasks(tx, J::QUEUE, vec![task]).await
}

/// Pushes many jobs of one type, due now, inside the caller's transaction.
pub async fn push_many<J: Job>(
    tx: &mut Tx,
    jobs: impl IntoIterator<Item = (J, JobKey)>,
) -> Result<(), StoreError> {
    let tasks = jobs
        .into_iter()
        .map(|(job, key)| {
            Ok(TaskBuilder::new(serde_json::to_vec(&job)?)
                .max_attempts(INFRA_ATTEMPTS)
                .idempotency_key(key.as_str())
                .build())
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    push_tasks(tx, J::QUEUE, tasks).await
}

/// Jobs per INSERT in [`push_sqlite_batch`]: 7 bound values each, far under SQLite's
/// 32766 parameters.
const SQLITE_PUSH_CHUNK: usize = 1000;

/// The rows `apalis_sqlite::queries::push_tasks` writes, with the same values and the
/// same `on conflict … do nothing`, but many per statement: it runs one INSERT per job,
/// and a 10k-row upload spent most of its time there (1.6 s to the 202).
async fn push_sqlite_batch(
    tx: &mut sqlx::SqliteConnection,
    queue: &str,
    tasks: &[apalis_sqlite::SqliteTask],
) -> Result<(), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for chunk in tasks.chunks(SQLITE_PUSH_CHUNK) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "insert into Jobs (job, id, job_type, status, attempts, max_attempts, run_at, \
             priority, metadata, idempotency_key) ",
        );
        q.push_values(chunk, |mut row, task| {
            let id = task
                .task_id()
                .as_ref()
                .map_or_else(|| ulid::Ulid::generate().to_string(), |id| id.to_string());
            row.push_bind(task.args.clone())
                .push_bind(id)
                .push_bind(queue.to_owned())
                .push("'Pending'")
                .push("0")
                .push_bind(task.max_attempts().unwrap_or(25) as i64)
                .push_bind(task.run_at().map_or(now, |t| t as i64))
                .push_bind(task.priority().unwrap_or_default() as i64)
                .push_bind(serde_json::to_string(task.metadata()).unwrap_or_default())
                .push_bind(task.idempotency_key().map(str::to_owned));
        });
        q.push(" on conflict (job_type, idempotency_key) do nothing");
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

async fn push_tasks(
    tx: &mut Tx,
    queue: &str,
    tasks: Vec<apalis_sqlite::SqliteTask>,
) -> Result<(), StoreError> {
    if tasks.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Sqlite(t) => push_sqlite_batch(t, queue, &tasks).await?,
        Tx::Postgres(t) => {
            // apalis-postgres has the unique index but no `on conflict do nothing`: a
            // duplicate key fails the insert, which would abort the whole transaction.
            sqlx::query("savepoint pixbatch_push")
                .execute(&mut **t)
                .await?;
            match apalis_postgres::queries::push_tasks(&mut **t, queue, tasks).await {
                Ok(()) => {
                    sqlx::query("release savepoint pixbatch_push")
                        .execute(&mut **t)
                        .await?;
                }
                Err(apalis_postgres::Error::Database(sqlx::Error::Database(e)))
                    if e.is_unique_violation() =>
                {
                    tracing::debug!(queue, "job already pushed (same idempotency key)");
                    sqlx::query("rollback to savepoint pixbatch_push")
                        .execute(&mut **t)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// What every handler needs.
#[derive(Debug)]
pub struct JobContext {
    /// Our tables.
    pub db: Db,
    /// Outputs.
    pub blobs: BlobStore,
    /// Downloads and webhook posts.
    pub fetcher: Fetcher,
    /// Validated configuration.
    pub settings: Settings,
    /// Runs CPU work (decode + encode) on one thread per core, off the async threads.
    pub cpu: TransformPool,
    /// Records image outcomes, many per transaction ([`Outcomes::start`] on `db`).
    pub outcomes: Outcomes,
}

impl JobContext {
    /// The absolute URL under which a blob is served.
    pub fn file_url(&self, key: &str) -> String {
        format!("{}/files/{key}", self.settings.public_base_url)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.settings.fetch.backoff_base,
            cap: self.settings.fetch.backoff_cap,
        }
    }
}

/// A handler's failure: only infrastructure errors reach apalis.
type HandlerResult = Result<(), BoxDynError>;

/// After an infrastructure error, wait a little before handing the job back, so a
/// database outage is not met with a tight loop of immediate re-runs.
async fn infra_error(e: StoreError) -> BoxDynError {
    tracing::error!(error = %e, "job hit an infrastructure error; it will run again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    Box::new(e)
}

/// A worker name unique per process start: SQLite refuses a worker that re-registers
/// under a name seen within the heartbeat interval, and hangs silently when it does.
fn worker_name(role: &str, queue: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!(
        "{role}-{host}-{}-{:08x}-{queue}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// How one queue is polled on either backend.
pub(crate) enum Queue<J> {
    Sqlite(SqliteStorage<J>),
    Postgres(PostgresStorage<J>),
}

pub(crate) fn queue<J: Job>(db: &Db, settings: &Settings, batch: usize) -> Queue<J> {
    let heartbeat = settings.jobs.heartbeat;
    match db.queue_pool() {
        Pool::Sqlite(p) => Queue::Sqlite(
            SqliteStorage::new(p).with_config(
                apalis_sqlite::Config::default()
                    .queue(J::QUEUE)
                    .batch_size(batch.max(1))
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(2),
            ),
        ),
        Pool::Postgres(p) => Queue::Postgres(
            PostgresStorage::new(p).with_config(
                apalis_postgres::Config::default()
                    .queue(J::QUEUE)
                    .batch_size(batch.max(1))
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(2),
            ),
        ),
    }
}

/// Registers one worker per process for queue `J` with `handler`, on either backend.
/// Idle workers look for due jobs every `JOB_POLL_INTERVAL` (see [`poll::Tick`]); on
/// PostgreSQL that also covers delayed retries coming due, which no notification announces.
macro_rules! register {
    ($monitor:expr, $queue:expr, $name:expr, $concurrency:expr, $ctx:expr, $poll:expr, $handler:path) => {{
        let (name, ctx, poll) = ($name, $ctx, $poll);
        match $queue {
            Queue::Sqlite(s) => $monitor.register(move |restarts| {
                WorkerBuilder::new(restarted(&name, restarts))
                    .backend(s.clone().poll_with_strategy(poll::Tick::new(poll)))
                    .concurrency($concurrency)
                    .data(ctx.clone())
                    .build($handler)
            }),
            Queue::Postgres(s) => $monitor.register(move |restarts| {
                WorkerBuilder::new(restarted(&name, restarts))
                    .backend(s.clone().poll_with_strategy(poll::Tick::new(poll)))
                    .concurrency($concurrency)
                    .data(ctx.clone())
                    .build($handler)
            }),
        }
    }};
}

/// Builds the monitor running the three workers of this process.
pub fn monitor(ctx: Arc<JobContext>, role: &str) -> Monitor {
    let settings = &ctx.settings;
    let poll = settings.jobs.poll_interval;
    let concurrency = settings.jobs.worker_concurrency;
    let images = queue::<ImageJob>(&ctx.db, settings, concurrency);
    let completions = queue::<CompleteJob>(&ctx.db, settings, 2);
    let deliveries = queue::<DeliverJob>(&ctx.db, settings, 4);
    let shutdown_timeout = settings.jobs.shutdown_timeout;
    let monitor = Monitor::new();
    let monitor = register!(
        monitor,
        images,
        worker_name(role, "images"),
        concurrency,
        ctx.clone(),
        poll,
        image::handle
    );
    let monitor = register!(
        monitor,
        completions,
        worker_name(role, "completions"),
        2,
        ctx.clone(),
        poll,
        complete::handle
    );
    let monitor = register!(
        monitor,
        deliveries,
        worker_name(role, "deliveries"),
        4,
        ctx.clone(),
        poll,
        deliver::handle
    );
    // A worker stops when the queue fails it (a database error while fetching, e.g.
    // while PostgreSQL restarts); start it again, under a new name (SQLite refuses a
    // recent name).
    monitor
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "worker stopped; restarting it");
            true
        })
        .shutdown_timeout(shutdown_timeout)
}

/// The name of a worker after `restarts` restarts.
fn restarted(name: &str, restarts: usize) -> String {
    if restarts == 0 {
        name.to_owned()
    } else {
        format!("{name}-r{restarts}")
    }
}
