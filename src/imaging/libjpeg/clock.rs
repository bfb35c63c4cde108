//! The calling thread's CPU time, the clock of every transform's [`super::Budget`].
//!
//! CPU time rather than wall time: a transform runs on one pool thread from start to
//! end, and what the budget bounds is the work it does, not how long the machine made
//! it wait (a loaded host or parallel tests would otherwise fail honest images).

use std::time::Duration;

/// CPU time used so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`); where
/// that clock is missing, monotonic wall time since the first call.
pub fn thread_cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one `timespec` that we own; no other effect.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0 {
            let secs = u64::try_from(now.tv_sec).unwrap_or(0);
            let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
            return Duration::new(secs, nanos.min(999_999_999));
        }
    }
    wall_time()
}

/// Monotonic time since the first call (the fallback clock).
fn wall_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn counts_this_threads_work_not_its_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(200));
        let slept = thread_cpu_time() - start;
        let mut x = 0u64;
        let busy_start = thread_cpu_time();
        while thread_cpu_time() - busy_start < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(
            slept < Duration::from_millis(100),
            "sleeping cost {slept:?}"
        );
        assert!(thread_cpu_time() - busy_start >= Duration::from_millis(50));
    }
}
