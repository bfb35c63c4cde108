//! What a caller asks of a running or finished request: retry its failed images,
//! cancel it, send its completion event again.

use std::time::Duration;

use super::{
    CompleteJob, DeliverJob, JobKey, Lifecycle, LifecycleError,
    steps::{self, push},
};
use crate::{
    domain::{EventId, RequestId},
    store::{Db, RequestRecord},
};

/// A retry that was queued.
#[derive(Debug, Clone, Copy)]
pub struct Retried {
    /// The new run.
    pub run: i64,
    /// Images queued again.
    pub images: u64,
}

/// A cancel that was recorded.
#[derive(Debug, Clone, Copy)]
pub struct Cancelled {
    /// The run that was cancelled.
    pub run: i64,
    /// Images the cancel stopped: those still pending under the request's lock (not
    /// a count read before it, which images finishing meanwhile would overstate).
    pub images: i64,
}

impl Lifecycle {
    async fn request(&self, id: RequestId) -> Result<RequestRecord, LifecycleError> {
        self.db
            .request(id)
            .await?
            .ok_or(LifecycleError::NotFound(id))
    }

    /// Starts a new run of the request's failed images (only those: the stored ones
    /// stay), one job per distinct URL; a new completion follows the run.
    pub async fn retry_failed(&self, id: RequestId) -> Result<Retried, LifecycleError> {
        let r = self.request(id).await?;
        let mut tx = self.db.begin_write().await?;
        let Some((run, images)) = Db::retry_failed(&mut tx, id).await? else {
            return Err(LifecycleError::NothingToRetry {
                id,
                status: r.status,
                failed: r.failed,
            });
        };
        let again: Vec<(u32, u32, &str)> = images
            .iter()
            .map(|(row, position, url)| (*row, *position, url.as_str()))
            .collect();
        steps::push_images(&mut tx, id, run, &again).await?;
        let superseded = Db::supersede_pending_events(&mut tx, id, run).await?;
        tx.commit().await?;
        tracing::info!(request_id = %id, run, images = images.len(), superseded, "retrying failed images");
        Ok(Retried {
            run,
            images: images.len() as u64,
        })
    }

    /// Cancels the request's run: pending images never start, and a completion that
    /// writes what was done is queued at once.
    pub async fn cancel(&self, id: RequestId) -> Result<Cancelled, LifecycleError> {
        // Unknown requests are told apart (404) before any write.
        self.request(id).await?;
        let mut tx = self.db.begin_write().await?;
        let Some((run, stopped)) = Db::cancel(&mut tx, id).await? else {
            drop(tx);
            // As it stands now: it may have finished since it was read above.
            let now = self.request(id).await?;
            return Err(if now.status.is_final() {
                LifecycleError::AlreadyFinished {
                    id,
                    status: now.status,
                }
            } else {
                LifecycleError::Completing(id)
            });
        };
        let complete = CompleteJob {
            request_id: id,
            run,
            retry: 0,
        };
        let key = JobKey::complete_cancelled(id, run);
        push(&mut tx, &complete, &key, Duration::ZERO).await?;
        tx.commit().await?;
        tracing::info!(request_id = %id, "request cancelled");
        Ok(Cancelled {
            run,
            images: i64::try_from(stopped).unwrap_or(i64::MAX),
        })
    }

    /// Queues the request's latest event for delivery again, with its own `webhook-id`.
    /// Only of a finished request: while a retried run goes on, the latest event is the
    /// previous run's, and its status no longer holds.
    pub async fn redeliver(&self, id: RequestId) -> Result<EventId, LifecycleError> {
        let r = self.request(id).await?;
        if !r.status.is_final() {
            return Err(LifecycleError::NotFinished {
                id,
                status: r.status,
            });
        }
        // The latest event, if it is this run's (an event written before runs were
        // recorded counts as the latest run's).
        let latest = self.db.events_of(id).await?.pop();
        let Some(event) = latest.filter(|e| e.run.is_none_or(|run| run == r.run)) else {
            // None of this run: a cancel is final at once, and its run's event (a first
            // run's, or a retried one's) follows with its output CSV. With the CSV
            // recorded, the run wrote no event (no webhook URL by then).
            return Err(if r.output_key.is_none() {
                LifecycleError::EventComing {
                    id,
                    status: r.status,
                }
            } else {
                LifecycleError::NoEvent {
                    id,
                    status: r.status,
                }
            });
        };
        let mut tx = self.db.begin_write().await?;
        let Some(attempts) = Db::redeliver(&mut tx, &event.id).await? else {
            let now = self.request(id).await?;
            if now.run != r.run || !now.status.is_final() {
                return Err(LifecycleError::NotFinished {
                    id,
                    status: now.status,
                });
            }
            return Err(LifecycleError::DeliveryScheduled(event.id));
        };
        let key = JobKey::deliver(&event.id, attempts);
        let job = DeliverJob {
            event_id: event.id.clone(),
            attempt: attempts,
        };
        push(&mut tx, &job, &key, Duration::ZERO).await?;
        tx.commit().await?;
        Ok(event.id)
    }
}
