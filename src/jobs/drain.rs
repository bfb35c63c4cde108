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

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use apalis::prelude::{Backend, WorkerContext};
use apalis_core::backend::{BackendConfig, WireFormatBackend};
use tokio_util::sync::CancellationToken;

/// How often the wind-down is driven during a drain. It is polled, not woken: apalis
/// itself polls the backend again at the end, with its own waker, which would take
/// the place of one we registered.
const DRIVE_EVERY: Duration = Duration::from_millis(20);

/// A backend whose wind-down starts when its worker starts draining, not after.
pub(crate) struct Drained<B: BackendConfig + WireFormatBackend> {
    inner: Arc<Mutex<B>>,
    /// The inner backend's, copied: apalis borrows them, which a lock cannot lend.
    config: B::Config,
    codec: B::Codec,
    stopping: CancellationToken,
    /// Set once apalis closes the backend itself: the driving task has no more to do.
    closed: Arc<AtomicBool>,
    driving: bool,
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
            inner: Arc::new(Mutex::new(inner)),
            stopping,
            closed: Arc::new(AtomicBool::new(false)),
            driving: false,
        }
    }

    fn inner(&self) -> MutexGuard<'_, B> {
        lock(&self.inner)
    }

    /// Starts the task that drives the wind-down, once, with the worker's context.
    fn start_driving(&mut self, worker: &WorkerContext) {
        if self.driving {
            return;
        }
        self.driving = true;
        let (inner, worker, stopping, closed) = (
            Arc::downgrade(&self.inner),
            worker.clone(),
            self.stopping.clone(),
            self.closed.clone(),
        );
        tokio::spawn(async move {
            // A worker restarted after a queue error drops its backend: then there is
            // nothing to drive.
            loop {
                tokio::select! {
                    () = stopping.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {
                        if inner.strong_count() == 0 {
                            return;
                        }
                    }
                }
            }
            loop {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                // (The worker counts as stopped from the moment it is asked to stop.)
                if closed.load(Ordering::Acquire) {
                    return;
                }
                // Only once apalis itself no longer polls the backend: before, a
                // wind-down would race its fetches.
                if worker.is_shutting_down()
                    && let Poll::Ready(Err(e)) =
                        lock(&inner).poll_close(&mut Context::from_waker(Waker::noop()), &worker)
                {
                    tracing::warn!(worker = worker.name(), error = %e, "the queue's wind-down failed during the drain");
                    return;
                }
                drop(inner);
                tokio::time::sleep(DRIVE_EVERY).await;
            }
        });
    }
}

/// The lock, also after a panic elsewhere (the backend holds no invariant of ours).
fn lock<B>(inner: &Mutex<B>) -> MutexGuard<'_, B> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
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
        self.inner().poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.inner().poll_next(cx, worker)
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.closed.store(true, Ordering::Release);
        self.inner().poll_close(cx, worker)
    }
}

impl<B> BackendConfig for Drained<B>
where
    B: BackendConfig + WireFormatBackend,
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
        lock(&self.inner).middleware(worker)
    }
}

impl<B> WireFormatBackend for Drained<B>
where
    B: BackendConfig + WireFormatBackend,
{
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        &self.codec
    }
}
