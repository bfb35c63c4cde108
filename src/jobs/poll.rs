//! How idle workers look for due jobs.
//!
//! apalis' own `IntervalStrategy` re-arms its timer without polling it, so after its
//! first tick nothing wakes an idle worker until the next heartbeat: jobs pushed by
//! another transaction (an upload, a delayed retry coming due) would wait up to a
//! heartbeat interval. This ticker polls the fresh timer at once, so the worker is
//! woken every `every`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{PollSnapshot, PollStrategy};

/// Wakes the worker every `every`.
#[derive(Debug)]
pub struct Tick {
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Tick {
    /// A ticker with the given period.
    pub fn new(every: Duration) -> Self {
        Self { every, sleep: None }
    }
}

impl PollStrategy for Tick {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        loop {
            let every = self.every;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            match sleep.as_mut().poll(cx) {
                // Re-arm and poll the new timer too, so the waker is registered for it.
                Poll::Ready(()) => {
                    fired = true;
                    self.sleep = None;
                }
                Poll::Pending if fired => return Poll::Ready(Some(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    use super::*;

    /// Counts how often the worker would have been woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The worker is polled only when woken: after each tick, the next one must wake it
    /// by itself, every period, without another poll in between.
    #[tokio::test]
    async fn wakes_every_period() {
        let every = Duration::from_millis(20);
        let mut tick = Tick::new(every);
        let snapshot = PollSnapshot::default();
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let count = || wakes.0.load(Ordering::SeqCst);

        assert!(tick.poll_drive(&mut cx, &snapshot).is_pending());
        let start = tokio::time::Instant::now();
        for n in 1..=4 {
            // Nothing polls the ticker while the worker sleeps: only its timer can wake it.
            while count() < n {
                assert!(
                    start.elapsed() < every * 50,
                    "no wake {n} after {:?}",
                    start.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(
                start.elapsed() >= every * (n as u32),
                "wake {n} came early: {:?}",
                start.elapsed()
            );
            // Woken: the worker polls once, finds the tick, and goes back to sleep.
            assert_eq!(tick.poll_drive(&mut cx, &snapshot), Poll::Ready(Some(())));
        }
    }
}
