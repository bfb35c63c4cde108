//! A request's image counts as every reader sees them: the status endpoint's
//! `progress`, the body of the live events, the completion webhook's `images`, and
//! the `submit` client. One type, so the four cannot drift apart. Reading, the counts
//! an older server did not send (`pending`, `cancelled`, `reused`) default to zero.

use serde::{Deserialize, Serialize};

/// Image counts of a request.
///
/// `total = succeeded + failed + pending + cancelled` at any time.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, poem_openapi::Object,
)]
pub struct Progress {
    /// Images in the request.
    pub total: i64,
    /// Images stored.
    pub succeeded: i64,
    /// Images failed for good.
    pub failed: i64,
    /// Images not finished yet.
    #[serde(default)]
    pub pending: i64,
    /// Images stopped by a cancel.
    #[serde(default)]
    pub cancelled: i64,
    /// Of the succeeded, images whose earlier output was copied (unchanged at the
    /// origin, same settings) instead of being transformed again.
    #[serde(default)]
    pub reused: i64,
}

impl Progress {
    /// The counts of a request whose stored counters are these. A cancel leaves no
    /// counter of its own: what is neither stored, failed nor pending was cancelled.
    pub fn of_counters(total: i64, succeeded: i64, failed: i64, pending: i64, reused: i64) -> Self {
        Self {
            total,
            succeeded,
            failed,
            pending,
            cancelled: (total - succeeded - failed - pending).max(0),
            reused,
        }
    }

    /// Images that reached an outcome (stored or failed).
    pub fn finished(&self) -> i64 {
        self.succeeded + self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_stored_failed_or_pending_was_cancelled() {
        let p = Progress::of_counters(10, 4, 1, 0, 2);
        assert_eq!(
            p,
            Progress {
                total: 10,
                succeeded: 4,
                failed: 1,
                pending: 0,
                cancelled: 5,
                reused: 2,
            }
        );
        assert_eq!(p.finished(), 5);
        assert_eq!(Progress::of_counters(3, 1, 0, 2, 0).cancelled, 0);
    }

    #[test]
    fn reads_bodies_without_the_newer_counts() {
        let p: Progress = serde_json::from_str(r#"{"total": 3, "succeeded": 2, "failed": 1}"#)
            .expect("the webhook's required counts alone");
        assert_eq!((p.total, p.pending, p.cancelled, p.reused), (3, 0, 0, 0));
    }
}
