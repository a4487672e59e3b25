//! The one clock that decides liveness: this process's wall clock, corrected towards the
//! database's when replicas share one (so replicas with wrong clocks agree), plus an injected
//! offset that exists only so tests can simulate a replica whose clock is wrong.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// Wall clock with a correction, in microseconds.
#[derive(Debug, Default)]
pub struct Clock {
    /// Simulated error of this machine's clock (configuration `clock_offset`, tests only).
    injected_us: i64,
    /// Added to correct the (possibly wrong) local clock towards the shared database clock.
    correction_us: AtomicI64,
}

impl Clock {
    pub fn new(injected_offset_s: f64) -> Clock {
        Clock {
            injected_us: (injected_offset_s * 1e6) as i64,
            correction_us: AtomicI64::new(0),
        }
    }

    /// This machine's clock as it reads, wrong or not.
    pub fn local_now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::microseconds(self.injected_us)
    }

    /// The time that decides liveness.
    pub fn now(&self) -> DateTime<Utc> {
        self.local_now() + TimeDelta::microseconds(self.correction_us.load(Ordering::Relaxed))
    }

    /// Sets the correction from one reading of the reference clock, taken between `before`
    /// and `after` of the local clock (the midpoint halves the round trip's error).
    pub fn calibrate(&self, before: DateTime<Utc>, reference: DateTime<Utc>, after: DateTime<Utc>) {
        let midpoint = before + (after - before) / 2;
        let correction = (reference - midpoint).num_microseconds().unwrap_or(0);
        self.correction_us.store(correction, Ordering::Relaxed);
    }

    /// Current correction towards the reference clock, seconds.
    pub fn correction_s(&self) -> f64 {
        self.correction_us.load(Ordering::Relaxed) as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_cancels_a_wrong_local_clock() {
        let clock = Clock::new(300.0);
        let before = clock.local_now();
        let after = clock.local_now();
        clock.calibrate(before, Utc::now(), after);
        let error = (clock.now() - Utc::now()).num_milliseconds().abs();
        assert!(error < 1000, "corrected clock is off by {error} ms");
    }
}
