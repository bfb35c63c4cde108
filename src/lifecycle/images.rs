//! An image's way through its run, apart from its outcome (see [`super::Outcomes`]):
//! the request starting with its first image, and a failed try queued again.

use std::time::Duration;

use super::{ImageJob, Lifecycle, steps::push};
use crate::{
    domain::{Failure, ImageRef},
    store::{Db, StoreError},
};

impl Lifecycle {
    /// The request's first image started: `Pending` becomes `Processing`.
    pub async fn image_started(&self, image: ImageRef) -> Result<(), StoreError> {
        self.db.mark_started(image.request).await
    }

    /// A try of `image` in run `run` failed transiently: records the failure and queues
    /// try number `attempt` (0 first) due after `delay`. The job is a new one with a
    /// `run_at` in the future, so the wait survives restarts and holds no worker slot;
    /// nothing is queued when the image has left `pending` meanwhile (a cancel), and
    /// the answer is `false`. `waited_for_store`: the try did no work because the blob
    /// store refused writes when it started; it is counted apart from the image's
    /// `FETCH_ATTEMPTS`.
    pub async fn retry_image_later(
        &self,
        image: ImageRef,
        run: i64,
        attempt: u32,
        failure: &Failure,
        delay: Duration,
        waited_for_store: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.begin_replayable().await?;
        // Only over the count the failed try started from and in its run: a second
        // delivery of the same try, racing the first, or a try of a run a retry has
        // replaced, records nothing and pushes nothing.
        let tries_before = attempt - 1;
        let recorded =
            Db::record_retry(&mut tx, image, run, tries_before, failure, waited_for_store).await?;
        if recorded {
            let (job, key) = ImageJob::try_of(image, run, attempt);
            push(&mut tx, &job, &key, delay).await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }
}
