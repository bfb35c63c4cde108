//! Completing a run: deciding whether a completion job has work, queuing it again
//! while the output CSV cannot be stored, and the final status with its webhook event.

use std::time::Duration;

use super::{CompleteJob, DeliverJob, JobKey, Lifecycle, steps::push};
use crate::{
    domain::{EventId, RequestStatus},
    store::{BlobKey, Db, RequestRecord, StoreError},
    webhook::CompletionEvent,
};

/// A run whose completion is due.
#[derive(Debug, Clone)]
pub struct RunToComplete {
    /// The request as it is now.
    pub request: RequestRecord,
    /// Whether the run was cancelled (its output lists what was done).
    pub cancelled: bool,
}

impl RunToComplete {
    /// Whether the output CSV gets the error column.
    pub fn with_errors(&self) -> bool {
        self.request.failed > 0 || self.cancelled
    }
}

impl Lifecycle {
    /// The run `job` completes, or `None` when there is nothing to do: the run was
    /// superseded by a retry, is already final, or still has images to go (a
    /// redelivered or stale completion).
    pub async fn run_to_complete(
        &self,
        job: &CompleteJob,
    ) -> Result<Option<RunToComplete>, StoreError> {
        let Some(request) = self.db.request(job.request_id).await? else {
            return Ok(None);
        };
        let cancelled = match request.status {
            _ if request.run != job.run => None,
            RequestStatus::Pending | RequestStatus::Processing if request.remaining == 0 => {
                Some(false)
            }
            RequestStatus::Cancelled if request.output_key.is_none() => Some(true),
            _ => None,
        };
        Ok(cancelled.map(|cancelled| RunToComplete { request, cancelled }))
    }

    /// The output CSV could not be stored: the run stays unfinished and its completion
    /// is queued again (a new job, due after `delay`), for as long as the store refuses.
    pub async fn retry_completion_later(
        &self,
        job: &CompleteJob,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let retry = job.retry + 1;
        let again = CompleteJob {
            retry,
            ..job.clone()
        };
        let key = JobKey::complete_retry(job.request_id, job.run, retry);
        let mut tx = self.db.begin_write().await?;
        push(&mut tx, &again, &key, delay).await?;
        tx.commit().await
    }

    /// The output CSV is stored under `output`: sets the final status and, when the
    /// request has a webhook, writes its event into the outbox and queues its first
    /// delivery, all in one transaction. `None` when another completion got there first.
    pub async fn finish_run(
        &self,
        run: &RunToComplete,
        output: &BlobKey,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let id = run.request.id;
        let round = run.request.run;
        let mut tx = self.db.begin_write().await?;
        let finished = if run.cancelled {
            Db::finalize_cancelled(&mut tx, id, round, output.as_str()).await?
        } else {
            Db::finalize_request(&mut tx, id, round, output.as_str()).await?
        };
        let Some(finished) = finished else {
            return Ok(None);
        };
        let webhook_url = finished
            .webhook_url
            .clone()
            .or_else(|| self.links.default_webhook.clone());
        if let Some(url) = webhook_url {
            let event_id = EventId::of_run(id, round);
            let payload = serde_json::to_string(&self.event_payload(&finished))?;
            Db::insert_event(&mut tx, &event_id, id, round, &url, &payload).await?;
            let key = JobKey::deliver(&event_id, 0);
            let deliver = DeliverJob {
                event_id,
                attempt: 0,
            };
            push(&mut tx, &deliver, &key, Duration::ZERO).await?;
        }
        tx.commit().await?;
        Ok(Some(finished))
    }

    /// The webhook body for a finished request.
    fn event_payload(&self, r: &RequestRecord) -> CompletionEvent {
        CompletionEvent {
            kind: CompletionEvent::TYPE.to_owned(),
            request_id: r.id.as_uuid(),
            status: r.status,
            output_csv: r
                .output_key
                .as_ref()
                .map(|_| self.links.output_csv_url(r.id)),
            images: r.progress(),
            finished_at: r.finished_at.unwrap_or_else(chrono::Utc::now),
        }
    }
}
