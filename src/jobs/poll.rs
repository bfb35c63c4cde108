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
    use super::*;

    #[tokio::test]
    async fn wakes_every_period() {
        let mut tick = Tick::new(Duration::from_millis(10));
        let snapshot = PollSnapshot::default();
        let mut wakes = 0;
        for _ in 0..5 {
            std::future::poll_fn(|cx| match tick.poll_drive(cx, &snapshot) {
                Poll::Ready(_) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            })
            .await;
            wakes += 1;
        }
        assert_eq!(wakes, 5);
    }
}
