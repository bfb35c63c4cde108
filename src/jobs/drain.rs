//! Keeps a queue's own database work moving while its worker drains at shutdown.
//!
//! From the moment apalis asks a worker to stop until the worker's last job in flight
//! is done, it polls none of the worker's backend: whatever the queue had in flight
//! then (a fetch for a free slot, a heartbeat, the acknowledgement of finished jobs)
//! stays where it was, holding what it held. On SQLite that is the one write
//! connection, inside a transaction, which is exactly what a draining image job needs
//! to record its outcome: the job waited for it until `SHUTDOWN_TIMEOUT` cut it off,
//! its output stored but not recorded (done again after the restart).
//!
//! [`Drained`] wraps a worker's backend and, once the worker is shutting down, drives
//! the backend's own wind-down (`poll_close`) from a task of its own: a fetch in flight
//! is dropped (its transaction rolled back, its jobs left for others), a heartbeat or an
//! acknowledgement runs to its end, jobs fetched but not started go back to the queue,
//! and acknowledgements of jobs that finish during the drain are written as they come.
//! When apalis closes the backend itself, after the drain, the task stops.
//!
//! It also holds back a queue error until the worker's jobs in flight are done (see
//! [`Drained::hold`]).

use std::{
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{Backend, WorkerContext};
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use tokio_util::sync::CancellationToken;

/// How long the driving task waits before it looks for acknowledgements again once
/// nothing is in flight, and at most for a step in flight (apalis' own last poll takes
/// the place of the task's waker).
const DRIVE_EVERY: Duration = Duration::from_millis(20);

/// A backend whose wind-down starts when its worker starts draining, not after.
pub(crate) struct Drained<B: Backend + BackendConfig + WireFormatBackend> {
    shared: Arc<Mutex<Shared<B>>>,
    /// The inner backend's, copied: apalis borrows them, which a lock cannot lend.
    config: B::Config,
    codec: B::Codec,
    stopping: CancellationToken,
    driving: bool,
    /// A queue error (a fetch, a heartbeat or an acknowledgement the database refused),
    /// held until the jobs in flight are done; see [`Drained::hold`].
    failure: Option<B::Error>,
}

/// The backend and who winds it down, behind one lock so that the driving task and
/// apalis never poll it at once, and the task never after apalis has begun.
struct Shared<B> {
    backend: B,
    /// apalis has begun closing the backend itself: the driving task stops.
    closed: bool,
    /// A step of the wind-down failed (logged): the backend is not polled again, since
    /// it still holds that step's finished future, and polling that again panics.
    failed: bool,
}

impl<B> Drained<B>
where
    B: Backend + BackendConfig + WireFormatBackend + Send + 'static,
    B::Config: Clone,
    B::Codec: Clone,
{
    /// Wraps `inner`; its wind-down is driven once `stopping` is cancelled and the
    /// worker is shutting down.
    pub(crate) fn new(inner: B, stopping: CancellationToken) -> Self {
        Self {
            config: inner.config().clone(),
            codec: inner.codec().clone(),
            shared: Arc::new(Mutex::new(Shared {
                backend: inner,
                closed: false,
                failed: false,
            })),
            stopping,
            driving: false,
            failure: None,
        }
    }

    /// Holds a queue error instead of handing it to apalis at once: apalis ends a
    /// worker on its first error and starts a new one, dropping the jobs in flight
    /// (their downloads thrown away, their rows left locked by the old worker until a
    /// takeover, 60 s by default, runs them again). Held, the error ends the fetching
    /// only: the worker drains as if stopping, its jobs finish and are recorded, and
    /// apalis gets the error when it closes the backend, then restarts the worker.
    /// The queue being dead meanwhile, the drained jobs' acknowledgements are written
    /// by that close only, and lost if the database still refuses them then: those
    /// jobs are taken over later and find their images done.
    fn hold(&mut self, e: B::Error, worker: &WorkerContext) {
        tracing::warn!(worker = worker.name(), error = %e, "the queue failed; the jobs in flight finish, then the worker restarts");
        self.failure.get_or_insert(e);
    }

    /// Starts the task that drives the wind-down, once, with the worker's context.
    fn start_driving(&mut self, worker: &WorkerContext) {
        if self.driving {
            return;
        }
        self.driving = true;
        let (shared, worker, stopping) = (
            Arc::downgrade(&self.shared),
            worker.clone(),
            self.stopping.clone(),
        );
        tokio::spawn(async move {
            // A worker restarted after a queue error drops its backend: then there is
            // nothing to drive.
            loop {
                tokio::select! {
                    () = stopping.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if shared.strong_count() == 0 {
                            return;
                        }
                    }
                }
            }
            loop {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                // Only once apalis itself no longer polls the backend: before, a
                // wind-down would race its fetches. (The worker counts as stopped
                // from the moment it is asked to stop.)
                if !worker.is_shutting_down() {
                    drop(shared);
                    tokio::time::sleep(DRIVE_EVERY).await;
                    continue;
                }
                let step = poll_fn(|cx| {
                    let mut s = lock(&shared);
                    if s.closed || s.failed {
                        return Poll::Ready(false);
                    }
                    match s.backend.poll_close(cx, &worker) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(())) => Poll::Ready(true),
                        Poll::Ready(Err(e)) => {
                            tracing::warn!(worker = worker.name(), error = %e, "the queue's wind-down failed during the drain; jobs finished from now on are not acknowledged and run again, as no-ops, after a restart");
                            s.failed = true;
                            Poll::Ready(false)
                        }
                    }
                });
                match tokio::time::timeout(DRIVE_EVERY, step).await {
                    Ok(false) => return,
                    // Nothing in flight: look again for acknowledgements to write.
                    Ok(true) => {
                        drop(shared);
                        tokio::time::sleep(DRIVE_EVERY).await;
                    }
                    // A step still in flight, or apalis took the waker: poll again.
                    Err(_) => {}
                }
            }
        });
    }
}

/// The lock, also after a panic elsewhere (the backend holds no invariant of ours).
fn lock<B>(shared: &Mutex<Shared<B>>) -> MutexGuard<'_, Shared<B>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B> Backend for Drained<B>
where
    B: Backend + BackendConfig + WireFormatBackend + Send + 'static,
    B::Config: Clone,
    B::Codec: Clone,
{
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.start_driving(worker);
        let ready = {
            let mut s = lock(&self.shared);
            // Once the worker is shutting down the wind-down may have begun (the
            // driving task sees the same flag): the queue is not asked for more. apalis
            // asks no more either, but it looks at the flag once per pass.
            if self.failure.is_some() || worker.is_shutting_down() {
                return Poll::Ready(Ok(()));
            }
            s.backend.poll_ready(cx, worker)
        };
        match ready {
            // `poll_next` then ends the fetching.
            Poll::Ready(Err(e)) => {
                self.hold(e, worker);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        let next = {
            let mut s = lock(&self.shared);
            if self.failure.is_some() || worker.is_shutting_down() {
                return Poll::Ready(None);
            }
            s.backend.poll_next(cx, worker)
        };
        match next {
            Poll::Ready(Some(Err(e))) => {
                self.hold(e, worker);
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        let closed = {
            let mut s = lock(&self.shared);
            s.closed = true;
            if s.failed {
                Poll::Ready(Ok(()))
            } else {
                s.backend.poll_close(cx, worker)
            }
        };
        match (closed, self.failure.take()) {
            (Poll::Pending, failure) => {
                self.failure = failure;
                Poll::Pending
            }
            // Stopping anyway: a restart would only close again.
            (Poll::Ready(result), Some(_)) if worker.is_shutting_down() => Poll::Ready(result),
            (Poll::Ready(_), Some(e)) => Poll::Ready(Err(e)),
            (Poll::Ready(result), None) => Poll::Ready(result),
        }
    }
}

impl<B> BackendConfig for Drained<B>
where
    B: Backend + BackendConfig + WireFormatBackend,
{
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        &self.config
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        lock(&self.shared).backend.middleware(worker)
    }
}

impl<B> WireFormatBackend for Drained<B>
where
    B: Backend + BackendConfig + WireFormatBackend,
{
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        &self.codec
    }
}
