//! Group commit of image outcomes: every image job of this process hands its outcome to
//! one task, which records whatever has queued up meanwhile (up to [`MAX_BATCH`]) in
//! one write transaction, with the completions of the runs it finishes.
//!
//! One commit per image made the commit the bound: on SQLite one fsync-free but
//! serialised write transaction each, on PostgreSQL one WAL flush each while holding
//! the request row's lock, so the jobs of one request committed strictly one after
//! another. A handler still acknowledges its job only after its outcome is durable:
//! it waits for the batch's commit, and when the batch fails every handler in it gets
//! the error and apalis runs the job again (the guarded updates make that safe).
//! Nothing waits to fill a batch: an idle process commits a lone outcome at once, and
//! a busy one commits what arrived during the previous commit.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{CompleteJob, JobKey, steps::push};
use crate::{
    domain::RequestId,
    store::{Db, ImageFinish, ImageOutcomeUpdate, StoreError},
};

/// Most outcomes recorded in one transaction: enough to cover every job a worker runs
/// at once, few enough to keep one transaction's locks and statements short.
pub const MAX_BATCH: usize = 256;

/// What a handler learns once its outcome's batch has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now.
    Now,
    /// Its image had already left `pending` (a redelivered job): nothing changed.
    AlreadyFinished,
}

/// One outcome waiting for its batch.
struct Pending {
    finish: ImageFinish,
    done: oneshot::Sender<Result<Recorded, String>>,
}

/// The handle through which image jobs record their outcomes.
#[derive(Debug, Clone)]
pub struct Outcomes {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Outcomes {
    /// Starts the task that commits batches on `db`; it ends when the last handle is
    /// dropped and the queue has drained.
    pub fn start(db: Db) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, rx));
        Self { queue }
    }

    /// Records the outcome of the job that worked on `targets` (its own image first,
    /// then its same-URL duplicates) in run `run`, and returns once it is committed:
    /// [`Recorded::AlreadyFinished`] when the image has left `pending` or the request
    /// has moved on to another run.
    pub async fn record(
        &self,
        request_id: RequestId,
        run: i64,
        targets: &[(u32, u32)],
        outcome: ImageOutcomeUpdate,
    ) -> Result<Recorded, StoreError> {
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            finish: ImageFinish {
                request_id,
                targets: targets.to_vec(),
                run,
                outcome,
            },
            done,
        };
        let stopped = || StoreError::Queue("the outcome recorder has stopped".into());
        self.queue.send(pending).map_err(|_| stopped())?;
        match wait.await.map_err(|_| stopped())? {
            Ok(recorded) => Ok(recorded),
            Err(message) => Err(StoreError::Queue(format!(
                "recording a batch of image outcomes: {message}"
            ))),
        }
    }
}

async fn run(db: Db, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<ImageFinish> = batch.iter().map(|p| p.finish.clone()).collect();
        let started = std::time::Instant::now();
        let result = commit(&db, &items).await;
        log_slow(items.len(), started.elapsed());
        match result {
            Ok(recorded) => {
                for (p, recorded) in batch.drain(..).zip(recorded) {
                    let recorded = if recorded {
                        Recorded::Now
                    } else {
                        Recorded::AlreadyFinished
                    };
                    // A handler that gave up waiting (shut down) is redelivered and
                    // then finds its image finished.
                    let _ = p.done.send(Ok(recorded));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, outcomes = items.len(), "could not record a batch of image outcomes; their jobs run again");
                let message = e.to_string();
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(message.clone()));
                }
            }
        }
    }
}

/// One transaction: the outcomes, then a completion job for each run they finished
/// (keyed by request and run, so a run's completion is pushed once).
async fn commit(db: &Db, items: &[ImageFinish]) -> Result<Vec<bool>, StoreError> {
    let mut tx = db.begin_replayable().await?;
    let finished = Db::finish_image_batch(&mut tx, items).await?;
    for &(request_id, run) in &finished.last_of_run {
        let complete = CompleteJob {
            request_id,
            run,
            retry: 0,
        };
        let key = JobKey::complete(request_id, run);
        push(&mut tx, &complete, &key, Duration::ZERO).await?;
    }
    tx.commit().await?;
    Ok(finished.recorded)
}

fn log_slow(outcomes: usize, took: Duration) {
    if took > Duration::from_secs(1) {
        tracing::warn!(
            outcomes,
            ?took,
            "a batch of image outcomes took long to commit"
        );
    } else {
        tracing::trace!(outcomes, ?took, "batch of image outcomes committed");
    }
}
