//! The workers' housekeeping, while the process runs: vacuum the queue's hot tables on
//! PostgreSQL every [`EVERY`] (see [`Db::tidy`] for why), and delete the jobs that
//! finished longer than `JOB_RETENTION` ago every [`PURGE_EVERY`] (see
//! [`Db::purge_done_jobs`]), and the workers not seen for as long that hold no job
//! ([`Db::purge_stale_workers`]).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::{Backend, Db, PURGE_BATCH};

/// How often the dead row counts are looked at: at 1,000 jobs/s, [`crate::store::DEAD_ROWS`]
/// is reached in a few seconds.
pub const EVERY: Duration = Duration::from_secs(3);

/// How often finished jobs are purged: rows a day old or a day and a minute old make
/// no difference, and a round that finds nothing costs one indexed query.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The longest one purge round keeps deleting (a batch at a time) before it leaves the
/// rest to the next round, so a first purge of a long-kept table cannot hold the
/// housekeeping (and its vacuums) up.
const PURGE_ROUND: Duration = Duration::from_secs(5);

/// Runs until `stop` is cancelled; `retention` is `JOB_RETENTION` (`None`: jobs are
/// kept). A failure is logged and the next round tries again: housekeeping never stops
/// the workers.
pub async fn run(db: Db, retention: Option<Duration>, stop: CancellationToken) {
    let vacuums = db.backend() == Backend::Postgres;
    if !vacuums && retention.is_none() {
        return;
    }
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge_due = Instant::now();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        if vacuums {
            vacuum(&db).await;
        }
        if let Some(retention) = retention
            && Instant::now() >= purge_due
        {
            purge(&db, retention, &stop).await;
            purge_due = Instant::now() + PURGE_EVERY;
        }
    }
}

async fn vacuum(db: &Db) {
    let started = Instant::now();
    match db.tidy().await {
        Ok(vacuumed) if vacuumed.is_empty() => {}
        Ok(vacuumed) => {
            tracing::debug!(tables = ?vacuumed, took = ?started.elapsed(), "vacuumed")
        }
        Err(e) => tracing::warn!(error = %e, "could not vacuum the queue's tables"),
    }
}

/// One purge round: batches until one comes back short, for at most [`PURGE_ROUND`].
async fn purge(db: &Db, retention: Duration, stop: &CancellationToken) {
    let started = Instant::now();
    let mut deleted = 0;
    while !stop.is_cancelled() && started.elapsed() < PURGE_ROUND {
        match db.purge_done_jobs(retention).await {
            Ok(n) => {
                deleted += n;
                if n < PURGE_BATCH as u64 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not purge finished jobs");
                break;
            }
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, took = ?started.elapsed(), "purged finished jobs older than JOB_RETENTION");
    }
    match db.purge_stale_workers(retention).await {
        Ok(0) => {}
        Ok(workers) => {
            tracing::info!(workers, "purged workers not seen for JOB_RETENTION")
        }
        Err(e) => tracing::warn!(error = %e, "could not purge stale workers"),
    }
}
