//! Whether the store takes writes, from the outcome of every write: `/readyz` answers
//! from it, the storage-errors metric counts each failure, and the log says so once
//! when writes start failing and once when they work again (not once per image).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::fault::{BlobError, FaultKind};
use crate::telemetry::metrics;

/// How long a write's outcome answers `/readyz` before a probe write is made.
pub(super) const FRESH: Duration = Duration::from_secs(5);

/// The `op` a probe write is recorded under.
pub(super) const PROBE_OP: &str = "probe";

/// The store's recent write outcomes.
#[derive(Debug)]
pub(super) struct Health(Mutex<State>);

#[derive(Debug)]
struct State {
    /// The last failure's text (for the log) and kind (whose words `/readyz` shows),
    /// and how many writes failed since the last success.
    failing: Option<(String, FaultKind, u64)>,
    /// When the last write (or probe) finished; `None` before the first.
    last: Option<Instant>,
    /// Whether that was a probe: a failed write of one file may be that file's own
    /// trouble (a folder in its place, a file-size limit), a failed probe is the store's.
    probed: bool,
}

/// What `/readyz` is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writable {
    /// The last write worked.
    Yes,
    /// The last write failed, with this error (its kind only: `/readyz` is public).
    No(String),
}

impl Health {
    pub(super) fn new() -> Self {
        Self(Mutex::new(State {
            failing: None,
            last: None,
            probed: false,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a write's outcome; logs the first failure of a burst and the recovery.
    pub(super) fn record(&self, op: &'static str, outcome: Result<(), &BlobError>) {
        let mut s = self.state();
        s.last = Some(Instant::now());
        s.probed = op == PROBE_OP;
        match outcome {
            Ok(()) => {
                if let Some((error, _, failed_writes)) = s.failing.take() {
                    tracing::info!(failed_writes, last_error = %error, "blob store writable again");
                }
            }
            Err(e) => {
                metrics::storage_error(op, e.kind().as_str());
                match &mut s.failing {
                    Some((error, kind, n)) => {
                        *n += 1;
                        *error = e.to_string();
                        *kind = e.kind();
                    }
                    None => {
                        tracing::error!(error = %e, op, "blob store writes are failing; not logged again until one succeeds");
                        s.failing = Some((e.to_string(), e.kind(), 1));
                    }
                }
            }
        }
    }

    /// The last outcome, if it is recent enough to answer for the store now: a
    /// success, or a failed probe. A failed write of a file is not taken as the
    /// store's refusal without a probe: it answered for every image try of the process
    /// (each one put off as if the store refused) and for `/readyz` for [`FRESH`].
    pub(super) fn fresh(&self) -> Option<Writable> {
        let s = self.state();
        let recent = s.last.is_some_and(|t| t.elapsed() < FRESH);
        match &s.failing {
            _ if !recent => None,
            None => Some(Writable::Yes),
            Some((_, kind, _)) if s.probed => Some(Writable::No(kind.public())),
            Some(_) => None,
        }
    }

    /// Whether the last write or probe, however old, failed.
    pub(super) fn failing(&self) -> bool {
        self.state().failing.is_some()
    }
}
