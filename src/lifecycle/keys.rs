//! Idempotency keys of every job pixbatch pushes, formatted here and nowhere else.
//!
//! apalis keeps `UNIQUE(job_type, idempotency_key)` and a push of a key already taken
//! does nothing, so a key names one step of one lifecycle: pushing the same step twice
//! (a redelivered job, a retried transaction, two processes racing) yields one job.
//! A key therefore carries every counter that makes a step new: the run (a retry of
//! failed images), the try (a delayed retry of one image or delivery).

use std::fmt;

use crate::domain::{EventId, ImageRef, RequestId};

/// An idempotency key; made only by the constructors below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobKey(String);

impl JobKey {
    /// The `attempt`-th try (0 first) of one image in run `run` of its request.
    pub fn image(image: ImageRef, run: i64, attempt: u32) -> Self {
        Self(format!("image:{image}:run{run}:try{attempt}"))
    }

    /// The completion of run `run`, pushed by the outcome that finished it.
    pub fn complete(request: RequestId, run: i64) -> Self {
        Self(format!("complete:{request}:run{run}"))
    }

    /// The completion of run `run` after a cancel.
    pub fn complete_cancelled(request: RequestId, run: i64) -> Self {
        Self(format!("complete:{request}:run{run}:cancelled"))
    }

    /// The `retry`-th new try of a completion whose output CSV could not be stored.
    pub fn complete_retry(request: RequestId, run: i64, retry: u32) -> Self {
        Self(format!("complete:{request}:run{run}:retry{retry}"))
    }

    /// The `attempt`-th try (0 first) of one webhook delivery.
    pub fn deliver(event: &EventId, attempt: i64) -> Self {
        Self(format!("deliver:{event}:try{attempt}"))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_its_own_key() {
        let r = RequestId::new();
        let e = EventId::of_run(r, 1);
        let image = |row, position| ImageRef {
            request: r,
            row,
            position,
        };
        let keys = [
            JobKey::image(image(1, 2), 1, 0),
            JobKey::image(image(1, 2), 1, 1),
            JobKey::image(image(1, 2), 2, 0),
            JobKey::image(image(2, 1), 1, 0),
            JobKey::image(image(12, 1), 1, 0),
            JobKey::complete(r, 1),
            JobKey::complete(r, 2),
            JobKey::complete_cancelled(r, 1),
            JobKey::complete_retry(r, 1, 1),
            JobKey::deliver(&e, 0),
            JobKey::deliver(&e, 1),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().map(JobKey::as_str).collect();
        assert_eq!(distinct.len(), keys.len());
        assert_eq!(
            JobKey::image(image(3, 1), 1, 0).as_str(),
            format!("image:{r}:3:1:run1:try0")
        );
    }
}
