//! Delays between download tries: exponential from a base, capped, with full jitter
//! in the upper half so a burst of failures against one host does not retry in step.

use std::time::Duration;

/// The retry policy for transient download failures.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the second try.
    pub base: Duration,
    /// Largest delay, also the cap on an honoured `Retry-After`.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after failed try number `attempt` (1-based): `base × 2^(attempt-1)`,
    /// capped, then jittered into `[d/2, d]`. A server's `Retry-After` replaces the
    /// computed delay when longer, still capped.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let jitter = jitter.clamp(0.0, 1.0);
        let jittered = raw.mul_f64(0.5 + 0.5 * jitter);
        match retry_after {
            Some(ra) if ra > jittered => ra.min(self.cap),
            _ => jittered,
        }
    }

    /// [`Self::delay`] with a random jitter.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.delay(attempt, retry_after, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };

    #[test]
    fn doubles_from_one_second_and_caps_at_sixty() {
        let full: Vec<u64> = (1..=8).map(|a| B.delay(a, None, 1.0).as_secs()).collect();
        assert_eq!(full, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(B.delay(100, None, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        assert_eq!(B.delay(3, None, 0.0), Duration::from_secs(2));
        let draws: Vec<Duration> = (0..1000).map(|_| B.next_delay(3, None)).collect();
        for d in &draws {
            assert!(
                *d >= Duration::from_secs(2) && *d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
        // Spread over the half, so that retries of many images do not land in step
        // (a 1 in 2^1000 chance of a false failure per bound).
        let (min, max) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*min < Duration::from_millis(2500), "lowest {min:?}");
        assert!(*max > Duration::from_millis(3500), "highest {max:?}");
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "{} distinct delays", distinct.len());
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        assert_eq!(
            B.delay(1, Some(Duration::from_secs(7)), 1.0),
            Duration::from_secs(7)
        );
        assert_eq!(
            B.delay(1, Some(Duration::from_secs(3600)), 1.0),
            Duration::from_secs(60)
        );
        // A shorter Retry-After does not shorten our own backoff.
        assert_eq!(
            B.delay(5, Some(Duration::from_secs(1)), 1.0),
            Duration::from_secs(16)
        );
    }
}
