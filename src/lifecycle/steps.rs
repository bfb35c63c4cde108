//! The jobs a request's lifecycle pushes, and the one way to push them: inside the
//! caller's transaction, under an idempotency key from [`JobKey`], so that a step
//! pushed twice (a redelivered job, a replayed transaction, two processes racing)
//! yields one job.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::JobKey;
use crate::{
    domain::{EventId, ImageRef, RequestId},
    store::{Db, NewJob, StoreError, Tx},
};

/// How often apalis runs a job whose handler failed on infrastructure (database)
/// errors. A job that runs out is never fetched again, and its request would wait
/// for it forever, so the bound is an outage nobody sits through: at the jobs'
/// 30 s backoff this is three and a half days. A restart or a worker's lost
/// heartbeat also counts a run.
pub const INFRA_ATTEMPTS: usize = 10_000;

/// A job type: its payload and the queue it lives in.
pub trait Job: Serialize + for<'de> Deserialize<'de> + Send + Sync + 'static {
    /// The queue name, set explicitly: apalis' default is the Rust type path, and moving
    /// the type would orphan its queue.
    const QUEUE: &'static str;
}

/// Process one image: one try of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageJob {
    /// The request.
    pub request_id: RequestId,
    /// 0-based row.
    pub row: u32,
    /// 0-based position in the row.
    pub position: u32,
    /// The run the try belongs to (`None` in jobs queued before it was carried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// Tries recorded before this one (0 for the first; `None` as for `run`). A job
    /// delivered again after its try was recorded as failed (a worker killed before
    /// the queue marked the job done) finds a higher count and stands down, instead of
    /// trying once more and starting a second chain of retries beside the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tries_before: Option<u32>,
}

impl ImageJob {
    /// Try `tries_before + 1` of one image in run `run`, and its key.
    pub fn try_of(image: ImageRef, run: i64, tries_before: u32) -> (Self, JobKey) {
        let job = Self {
            request_id: image.request,
            row: image.row,
            position: image.position,
            run: Some(run),
            tries_before: Some(tries_before),
        };
        (job, JobKey::image(image, run, tries_before))
    }

    /// The image it works on.
    pub fn image(&self) -> ImageRef {
        ImageRef {
            request: self.request_id,
            row: self.row,
            position: self.position,
        }
    }

    /// Whether the image has moved on since this job was pushed: another run, or
    /// another try recorded. `false` for jobs that carry neither.
    pub fn is_stale(&self, run: i64, tries: i64) -> bool {
        self.run.is_some_and(|r| r != run)
            || self.tries_before.is_some_and(|t| i64::from(t) != tries)
    }
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

/// Pushes one job inside the caller's transaction, due at `run_after` from now.
pub(super) async fn push<J: Job>(
    tx: &mut Tx,
    job: &J,
    key: &JobKey,
    run_after: Duration,
) -> Result<(), StoreError> {
    let job = NewJob {
        args: serde_json::to_vec(job)?,
        idempotency_key: key.as_str().to_owned(),
        run_at: SystemTime::now() + run_after,
        max_attempts: INFRA_ATTEMPTS,
    };
    Db::push_jobs(tx, J::QUEUE, &[job]).await
}

/// Pushes many jobs of one type, due now, inside the caller's transaction (public for
/// the tests that fill a queue).
pub async fn push_many<J: Job>(
    tx: &mut Tx,
    jobs: impl IntoIterator<Item = (J, JobKey)>,
) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let jobs = jobs
        .into_iter()
        .map(|(job, key)| {
            Ok(NewJob {
                args: serde_json::to_vec(&job)?,
                idempotency_key: key.as_str().to_owned(),
                run_at: now,
                max_attempts: INFRA_ATTEMPTS,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    Db::push_jobs(tx, J::QUEUE, &jobs).await
}

/// The first try of every image in `images` of run `run`, one job per distinct URL:
/// later images with the same URL share the outcome of the first one's job.
pub(super) async fn push_images(
    tx: &mut Tx,
    request: RequestId,
    run: i64,
    images: &[(u32, u32, &str)],
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    let jobs: Vec<_> = images
        .iter()
        .filter(|&&(_, _, url)| seen.insert(url))
        .map(|&(row, position, _)| {
            let image = ImageRef {
                request,
                row,
                position,
            };
            ImageJob::try_of(image, run, 0)
        })
        .collect();
    push_many(tx, jobs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job queued before runs and try counts were carried still runs (it cannot
    /// tell), and one that carries them stands down once the image moved on.
    #[test]
    fn image_jobs_know_their_try() {
        let request = RequestId::new();
        let old: ImageJob = serde_json::from_value(serde_json::json!({
            "request_id": request, "row": 2, "position": 1
        }))
        .expect("a job of the earlier shape");
        assert!(!old.is_stale(3, 7));
        let image = ImageRef {
            request,
            row: 2,
            position: 1,
        };
        let (job, key) = ImageJob::try_of(image, 1, 2);
        assert_eq!(key, JobKey::image(image, 1, 2));
        assert!(!job.is_stale(1, 2));
        assert!(job.is_stale(1, 3), "a later try was scheduled");
        assert!(job.is_stale(2, 0), "a later run");
        let again: ImageJob =
            serde_json::from_slice(&serde_json::to_vec(&job).unwrap()).expect("round trip");
        assert!(again.is_stale(1, 3) && !again.is_stale(1, 2));
    }
}
