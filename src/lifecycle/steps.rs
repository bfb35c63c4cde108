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

impl ImageJob {
    /// The job of one image.
    pub fn of(image: ImageRef) -> Self {
        Self {
            request_id: image.request,
            row: image.row,
            position: image.position,
        }
    }

    /// The image it works on.
    pub fn image(&self) -> ImageRef {
        ImageRef {
            request: self.request_id,
            row: self.row,
            position: self.position,
        }
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
            (ImageJob::of(image), JobKey::image(image, run, 0))
        })
        .collect();
    push_many(tx, jobs).await
}
