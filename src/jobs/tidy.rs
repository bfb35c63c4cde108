//! The workers' housekeeping: vacuum the queue's hot tables on PostgreSQL (see
//! [`Db::tidy`] for why), every [`EVERY`] while the process runs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Backend, Db};

/// How often the dead row counts are looked at: at 1,000 jobs/s, [`crate::store::DEAD_ROWS`]
/// is reached in a few seconds.
pub const EVERY: Duration = Duration::from_secs(3);

/// Runs until `stop` is cancelled. A failure is logged and the next round tries again:
/// housekeeping never stops the workers.
pub async fn run(db: Db, stop: CancellationToken) {
    if db.backend() != Backend::Postgres {
        return;
    }
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let started = std::time::Instant::now();
        match db.tidy().await {
            Ok(vacuumed) if vacuumed.is_empty() => {}
            Ok(vacuumed) => {
                tracing::debug!(tables = ?vacuumed, took = ?started.elapsed(), "vacuumed")
            }
            Err(e) => tracing::warn!(error = %e, "could not vacuum the queue's tables"),
        }
    }
}
