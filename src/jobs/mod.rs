//! Durable jobs on apalis (SQLite or PostgreSQL): one per image, one completion per request run,
//! one delivery per webhook try.
//!
//! Failures are decided once, close to the cause: a handler returns `Ok` for every
//! business outcome (stored, failed for good, or rescheduled), recording it in our own
//! tables. A transient download failure is retried by pushing a *new* job with a
//! `run_at` in the future, so the wait survives restarts and holds no worker slot.
//! A handler returns `Err` only when the database itself failed; apalis then runs the
//! job again, after [`INFRA_BACKOFF`], up to [`crate::lifecycle::INFRA_ATTEMPTS`] times.
//!
//! The handlers are adapters: each decodes its job, does the slow part (download and
//! transform, write the output CSV, POST the webhook) and hands what happened to
//! [`crate::lifecycle`], which records it and pushes the follow-up jobs.

mod backoff;
mod complete;
mod deliver;
mod image;
mod outcome;
mod poll;
pub mod tidy;

use std::{sync::Arc, time::Duration};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;

pub use backoff::Backoff;
pub use outcome::TryError;

use crate::{
    config::Settings,
    fetch::Fetcher,
    imaging::TransformPool,
    lifecycle::{CompleteJob, DeliverJob, ImageJob, Job, Lifecycle, Outcomes},
    store::{BlobStore, Db, Pool, StoreError},
};

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
    /// Every other change of a request's state.
    pub lifecycle: Lifecycle,
}

impl JobContext {
    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.settings.fetch.backoff_base,
            cap: self.settings.fetch.backoff_cap,
        }
    }
}

/// A handler's failure: only infrastructure errors reach apalis.
type HandlerResult = Result<(), BoxDynError>;

/// How long a job waits after an infrastructure error before it is handed back to
/// apalis, which runs it again at once: doubling from 1 s to 30 s (under the default
/// `SHUTDOWN_TIMEOUT`), so a database outage is met neither with a tight loop of
/// re-runs nor with a job given up after a few seconds of it.
const INFRA_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(30),
};

/// Logs an infrastructure error and waits [`INFRA_BACKOFF`] for this run of the job.
async fn infra_error(e: StoreError, attempt: &Attempt) -> BoxDynError {
    let run = u32::try_from(attempt.current()).unwrap_or(u32::MAX).max(1);
    let delay = INFRA_BACKOFF.next_delay(run, None);
    tracing::error!(error = %e, run, ?delay, "job hit an infrastructure error; it will run again");
    tokio::time::sleep(delay).await;
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
