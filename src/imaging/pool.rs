//! The threads transforms run on: a fixed set, one per CPU slot.
//!
//! Why not `tokio::task::spawn_blocking`: tokio hands each call to whichever of its
//! blocking threads is free (up to 512 of them), and glibc gives every thread that
//! allocates an arena of its own, where freed image buffers stay for that thread's
//! next use. Transforms spread over many threads kept three times the memory in
//! flight resident (a 500-image run peaked at ~590 MiB against ~180 MiB of work).
//! With `cores` long-lived threads, each thread's next transform reuses what its
//! last one freed, and the number of transforms at once is bounded by the pool
//! itself, with no semaphore beside it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::sync::oneshot;

/// Work handed to the pool that did not come back.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The closure panicked (the transform catches its own decoder panics, so this is
    /// a bug in our code, kept to this one image).
    #[error("image transform crashed: {0}")]
    Panicked(String),
    /// The pool's threads are gone (the process is shutting down).
    #[error("transform pool shut down")]
    ShutDown,
}

/// A fixed pool of named threads for CPU-bound image work.
#[derive(Debug)]
pub struct TransformPool {
    pool: rayon::ThreadPool,
}

impl TransformPool {
    /// Starts `threads` threads (at least one), named `transform-N`.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("transform-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self { pool })
    }

    /// Runs `f` on a pool thread once one is free (first come, first served) and
    /// returns its result; the caller's task is free meanwhile.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        // `spawn_fifo`: with the default LIFO order, under load the newest image would
        // jump the queue and the oldest would wait longest.
        self.pool.spawn_fifo(move || {
            let out = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
                PoolError::Panicked(
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".to_owned()),
                )
            });
            // The caller may have gone (its job was cancelled): nothing to do then.
            let _ = tx.send(out);
        });
        rx.await.map_err(|_| PoolError::ShutDown)?
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_its_own_named_threads_and_returns_the_result() {
        let pool = TransformPool::new(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("transform-"));
    }

    #[tokio::test]
    async fn no_more_than_its_threads_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Arc::new(TransformPool::new(2).unwrap());
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let runs = (0..8).map(|_| {
            let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
            async move {
                pool.run(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap()
            }
        });
        futures::future::join_all(runs).await;
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_for_that_call_only() {
        let pool = TransformPool::new(1).unwrap();
        let err = pool.run(|| -> u8 { panic!("boom") }).await.unwrap_err();
        assert!(
            matches!(err, PoolError::Panicked(ref m) if m == "boom"),
            "{err}"
        );
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
