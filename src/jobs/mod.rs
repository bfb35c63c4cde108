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
mod drain;
mod image;
mod outcome;
mod poll;
pub mod tidy;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use tokio_util::sync::CancellationToken;

pub use backoff::Backoff;
use drain::Drained;
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

/// How many heartbeats a worker may miss before its jobs are taken up by another:
/// two, plus as many as the longest stretch a live worker stays silent through. The
/// queue beats only between jobs it hands out: not while a worker drains its jobs
/// after SIGTERM (up to `SHUTDOWN_TIMEOUT`), nor while jobs it has fetched wait for a
/// free slot (about a job's length, whose download alone may take `FETCH_TIMEOUT`).
/// With two beats only (30 s by default), a draining or busy worker's jobs were run a
/// second time by another worker while it still ran them: guarded, so done once in
/// effect, but downloaded and written twice. A compromise, not a bound (the two
/// silences can follow each other), paid for by a later takeover after a crash: 60 s
/// with the defaults.
fn missed_heartbeats(heartbeat: Duration, shutdown: Duration, fetch: Duration) -> usize {
    let silent = shutdown.max(fetch).as_secs_f64();
    2 + (silent / heartbeat.as_secs_f64().max(1.0)).ceil() as usize
}

pub(crate) fn queue<J: Job>(db: &Db, settings: &Settings, batch: usize) -> Queue<J> {
    queue_on(db.queue_pool(), settings, batch)
}

/// [`queue`] on `pool`: the dashboard reads through the read pool (on SQLite the queue
/// pool is the one write connection, which its whole-table aggregates would hold).
pub(crate) fn queue_on<J: Job>(pool: &Pool, settings: &Settings, batch: usize) -> Queue<J> {
    let heartbeat = settings.jobs.heartbeat;
    let missed = missed_heartbeats(
        heartbeat,
        settings.jobs.shutdown_timeout,
        settings.fetch.timeout,
    );
    match pool {
        Pool::Sqlite(p) => Queue::Sqlite(
            SqliteStorage::new(p).with_config(
                apalis_sqlite::Config::default()
                    .queue(J::QUEUE)
                    .batch_size(batch.max(1))
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(missed),
            ),
        ),
        Pool::Postgres(p) => Queue::Postgres(
            PostgresStorage::new(p).with_config(
                apalis_postgres::Config::default()
                    .queue(J::QUEUE)
                    .batch_size(batch.max(1))
                    .heartbeat_interval(heartbeat)
                    .missed_heartbeats(missed),
            ),
        ),
    }
}

/// `backend`, waiting `pause` before it first polls (a restarted worker's backoff).
macro_rules! paced {
    ($backend:expr, $pause:expr) => {{
        let pause = $pause;
        $backend.before_start(move |_| async move {
            tokio::time::sleep(pause).await;
            Ok(())
        })
    }};
}

/// Registers one worker per process for queue `J` with `handler`, on either backend.
/// Idle workers look for due jobs every `JOB_POLL_INTERVAL` (see [`poll::Tick`]); on
/// PostgreSQL that also covers delayed retries coming due, which no notification announces.
/// (A macro rather than a function: each backend's storage is its own type, and the
/// worker built on it another; the `@on` arm is the one body both arms expand.)
macro_rules! register {
    ($monitor:expr, $queue:expr, $name:expr, $concurrency:expr, $ctx:expr, $poll:expr, $stopping:expr, $handler:path) => {{
        let (name, ctx, poll, stopping) = ($name, $ctx, $poll, $stopping.clone());
        let pacer = Pacer::default();
        match $queue {
            Queue::Sqlite(s) => {
                register!(@on $monitor, s, name, $concurrency, ctx, poll, stopping, pacer, $handler)
            }
            Queue::Postgres(s) => {
                register!(@on $monitor, s, name, $concurrency, ctx, poll, stopping, pacer, $handler)
            }
        }
    }};
    (@on $monitor:expr, $storage:ident, $name:ident, $concurrency:expr, $ctx:ident, $poll:ident, $stopping:ident, $pacer:ident, $handler:path) => {
        $monitor.register(move |restarts| {
            let pause = $pacer.pause(restarts, Instant::now());
            let polled = $storage.clone().poll_with_strategy(poll::Tick::new($poll));
            WorkerBuilder::new(restarted(&$name, restarts))
                .backend(Drained::new(paced!(polled, pause), $stopping.clone()))
                .concurrency($concurrency)
                .data($ctx.clone())
                .build($handler)
        })
    };
}

/// Webhook tries in flight per process. A try mostly waits on the merchant's server
/// (up to [`deliver::WEBHOOK_TIMEOUT`]) and holds a socket and a few kilobytes, so
/// the limit is set by how many stalling receivers may not delay everyone else's
/// events: with 4, four receivers that never answer held every slot, and the other
/// merchants' webhooks went out only at 24 a minute.
const DELIVERY_CONCURRENCY: usize = 32;

/// Builds the monitor running the three workers of this process; their queues wind
/// down as soon as `stopping` is cancelled (see [`drain`]).
pub fn monitor(ctx: Arc<JobContext>, role: &str, stopping: &CancellationToken) -> Monitor {
    let settings = &ctx.settings;
    let poll = settings.jobs.poll_interval;
    let concurrency = settings.jobs.worker_concurrency;
    let images = queue::<ImageJob>(&ctx.db, settings, concurrency);
    let completions = queue::<CompleteJob>(&ctx.db, settings, 2);
    let deliveries = queue::<DeliverJob>(&ctx.db, settings, DELIVERY_CONCURRENCY);
    let shutdown_timeout = settings.jobs.shutdown_timeout;
    let monitor = Monitor::new();
    let monitor = register!(
        monitor,
        images,
        worker_name(role, "images"),
        concurrency,
        ctx.clone(),
        poll,
        stopping,
        image::handle
    );
    let monitor = register!(
        monitor,
        completions,
        worker_name(role, "completions"),
        2,
        ctx.clone(),
        poll,
        stopping,
        complete::handle
    );
    let monitor = register!(
        monitor,
        deliveries,
        worker_name(role, "deliveries"),
        DELIVERY_CONCURRENCY,
        ctx.clone(),
        poll,
        stopping,
        deliver::handle
    );
    // A worker stops when the queue fails it (a database error while fetching, e.g.
    // while PostgreSQL restarts), once its jobs in flight are done (`drain`); start it
    // again, under a new name (SQLite refuses a recent name).
    monitor
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "worker stopped; restarting it");
            true
        })
        .shutdown_timeout(shutdown_timeout)
}

/// How long a streak of restarts is remembered: a restart this long after the last
/// one starts a new streak, with the shortest pause.
const CALM: Duration = Duration::from_secs(600);

/// Paces the restarts of one worker after queue errors: none at first start, then
/// [`INFRA_BACKOFF`] (1 s doubling to 30 s) over a streak of restarts, forgotten after
/// [`CALM`] without one. An error that comes back at once (a database refusing writes
/// after a failover, a full disk) would otherwise restart the worker in a tight loop,
/// a new worker row each time; apalis' own count of restarts lasts the process' life,
/// so pacing by it would make every restart after a few outages wait 30 s.
#[derive(Debug, Default)]
struct Pacer(std::sync::Mutex<Streak>);

#[derive(Debug, Default)]
struct Streak {
    restarts: u32,
    last: Option<Instant>,
}

impl Pacer {
    /// The pause before start number `restarts` (0: the first start), at `now`.
    fn pause(&self, restarts: usize, now: Instant) -> Duration {
        if restarts == 0 {
            return Duration::ZERO;
        }
        let mut streak = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if streak
            .last
            .is_some_and(|last| now.duration_since(last) > CALM)
        {
            streak.restarts = 0;
        }
        streak.restarts = streak.restarts.saturating_add(1);
        streak.last = Some(now);
        INFRA_BACKOFF.next_delay(streak.restarts, None)
    }
}

/// The name of a worker after `restarts` restarts.
fn restarted(name: &str, restarts: usize) -> String {
    if restarts == 0 {
        name.to_owned()
    } else {
        format!("{name}-r{restarts}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_given_up_only_after_its_longest_silence() {
        let s = Duration::from_secs;
        // The defaults: 15 s beats, 30 s drain and download: 60 s before a takeover.
        assert_eq!(missed_heartbeats(s(15), s(30), s(30)), 4);
        assert_eq!(missed_heartbeats(s(15), s(31), s(30)), 5);
        assert_eq!(missed_heartbeats(s(1), s(10), s(10)), 12);
        assert_eq!(missed_heartbeats(s(60), s(30), s(30)), 3);
    }

    #[test]
    fn restarts_back_off_over_a_streak_and_the_streak_is_forgotten() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(pacer.pause(0, t0), Duration::ZERO);
        // Jittered between half and all of 1, 2, 4, … s, capped at 30 s.
        for n in 1..=7usize {
            let pause = pacer.pause(n, t0 + Duration::from_secs(n as u64));
            let full = Duration::from_secs(1 << (n - 1)).min(INFRA_BACKOFF.cap);
            assert!(pause >= full / 2 && pause <= full, "{n}: {pause:?}");
        }
        // Long after the last restart, the next one waits as little as the first.
        let later = t0 + CALM + Duration::from_secs(60);
        assert!(pacer.pause(8, later) <= Duration::from_secs(1));
    }
}
