//! Per-host cap on parallel downloads, so one CSV full of links to the same
//! shop cannot hammer that shop (or get us banned by it).
//!
//! One `tokio::sync::Semaphore` per host name, created on first use and
//! removed again when the last user lets go, so the map only holds hosts
//! with downloads in flight or queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Above this many entries, a sweep drops any semaphore nobody holds
/// (a safety net in case a cancelled wait left one behind).
const SWEEP_AT: usize = 1024;

/// Map from host to its semaphore.
#[derive(Debug)]
pub(crate) struct HostLimiter {
    limit: usize,
    map: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Holds one slot of a host's semaphore; dropping it frees the slot and
/// removes the host's entry when nobody else uses it.
#[derive(Debug)]
pub(crate) struct HostPermit {
    limiter: Arc<HostLimiter>,
    host: String,
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl HostLimiter {
    /// `limit` is clamped to at least 1 (0 would block every download forever).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.clamp(1, Semaphore::MAX_PERMITS),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
        // The map stays consistent even if a holder panicked.
        match self.map.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Waits for a free slot for `host` (as the `url` crate writes it: names in lower
    /// case). `shop.example.` is `shop.example` (the trailing dot only says the name
    /// is absolute), so one CSV cannot double its connections to a shop by
    /// writing both.
    pub(crate) async fn acquire(self: &Arc<Self>, host: &str) -> HostPermit {
        let host = host.strip_suffix('.').unwrap_or(host);
        let sem = {
            let mut map = self.lock();
            if map.len() >= SWEEP_AT && !map.contains_key(host) {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(
                map.entry(host.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.limit))),
            )
        };
        // Built before waiting so a cancelled wait still cleans up.
        let mut guard = HostPermit {
            limiter: Arc::clone(self),
            host: host.to_owned(),
            sem: Arc::clone(&sem),
            permit: None,
        };
        // The semaphore is never closed, so this only fails in theory;
        // then we simply go on without a slot.
        guard.permit = sem.acquire_owned().await.ok();
        guard
    }

    /// Number of hosts currently tracked.
    #[cfg(test)]
    pub(crate) fn tracked_hosts(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        let mut map = self.limiter.lock();
        self.permit.take();
        // Under the lock nobody can clone the Arc: the map's copy plus ours
        // means no one else holds or waits on this host.
        if Arc::strong_count(&self.sem) == 2
            && map
                .get(&self.host)
                .is_some_and(|s| Arc::ptr_eq(s, &self.sem))
        {
            map.remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn limits_and_cleans_up() {
        let limiter = Arc::new(HostLimiter::new(2));
        let a = limiter.acquire("a.test").await;
        let b = limiter.acquire("a.test").await;
        let other = limiter.acquire("b.test").await;
        assert_eq!(limiter.tracked_hosts(), 2);
        // Third slot for a.test must wait.
        let third =
            tokio::time::timeout(Duration::from_millis(50), limiter.acquire("a.test")).await;
        assert!(third.is_err());
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), limiter.acquire("a.test"))
            .await
            .expect("slot freed");
        drop((b, c, other));
        assert_eq!(limiter.tracked_hosts(), 0);
    }

    #[tokio::test]
    async fn a_trailing_dot_names_the_same_host() {
        let limiter = Arc::new(HostLimiter::new(1));
        let held = limiter.acquire("shop.test").await;
        let absolute =
            tokio::time::timeout(Duration::from_millis(50), limiter.acquire("shop.test.")).await;
        assert!(absolute.is_err(), "a second slot for the same host");
        drop(held);
        assert_eq!(limiter.tracked_hosts(), 0);
    }

    #[tokio::test]
    async fn zero_limit_is_one() {
        let limiter = Arc::new(HostLimiter::new(0));
        let p = tokio::time::timeout(Duration::from_secs(5), limiter.acquire("x")).await;
        assert!(p.is_ok());
    }
}
