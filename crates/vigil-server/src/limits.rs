//! Limits on writers: how fast one caller may register services and make admin changes, and
//! how many services the server keeps. Heartbeats are never rate limited: a reporter beats
//! once per `report_interval`, and refusing a beat could only make a live service look dead.
//!
//! A caller is its token's name, or its address when it has no token (open registration).
//! Each has a bucket of `write_burst` writes refilled at `writes_per_second`; an empty bucket
//! answers 429 with the seconds until the next write may come.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Keys kept before the buckets of idle callers are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// The rate of writes per caller.
pub struct WriteLimits {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl WriteLimits {
    /// `per_second` 0 turns the limit off.
    pub fn new(per_second: f64, burst: u32) -> WriteLimits {
        let limiter = (per_second > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / per_second);
            let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(burst);
            RateLimiter::keyed(quota)
        });
        WriteLimits {
            limiter,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// `Err(wait)`: `key` wrote too fast; it may write again after `wait`.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
            && limiter.len() > PRUNE_ABOVE
        {
            limiter.retain_recent();
        }
        limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_waits_and_others_are_not_slowed() {
        let limits = WriteLimits::new(1.0, 3);
        for _ in 0..3 {
            assert!(limits.check("token:a").is_ok());
        }
        let wait = limits.check("token:a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check("token:b").is_ok());
        let off = WriteLimits::new(0.0, 1);
        for _ in 0..100 {
            assert!(off.check("x").is_ok());
        }
    }
}
