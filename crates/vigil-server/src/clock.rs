//! The one clock that decides liveness: this process's wall clock, corrected towards the
//! database's when replicas share one (so replicas with wrong clocks agree), plus an injected
//! offset that exists only so tests can simulate a replica whose clock is wrong.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::ClockSample;

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

    /// Moves the correction towards one reading of the reference clock, taken between
    /// `sample.before` and `sample.after` of the local clock (the midpoint halves the round
    /// trip's error).
    ///
    /// A reading with a round trip over [`MAX_ROUND_TRIP`] says little and is ignored: a slow
    /// database must not move the clock. At start-up (`initial`) the correction is set at once.
    /// Later, a difference under [`MAX_SLEW`] is applied, a larger one is slewed by
    /// `MAX_SLEW` per reading (the phi-accrual detector sees every step of the clock as a
    /// late heartbeat of every service), and one over [`STEP`] is a clock that jumped: applied
    /// at once, and the caller opens a grace period as for a stall.
    pub fn calibrate(&self, sample: ClockSample, initial: bool) -> Calibration {
        let round_trip = sample.after - sample.before;
        if round_trip > MAX_ROUND_TRIP || round_trip < TimeDelta::zero() {
            return Calibration::Ignored { round_trip };
        }
        let midpoint = sample.before + round_trip / 2;
        let target = (sample.reference - midpoint)
            .num_microseconds()
            .unwrap_or(0);
        let current = self.correction_us.load(Ordering::Relaxed);
        let delta = target - current;
        let slew = MAX_SLEW.num_microseconds().unwrap_or(0);
        let applied = if initial || delta.abs() > STEP.num_microseconds().unwrap_or(0) {
            delta
        } else {
            delta.clamp(-slew, slew)
        };
        self.correction_us
            .store(current + applied, Ordering::Relaxed);
        let applied = TimeDelta::microseconds(applied);
        if !initial && delta.abs() > STEP.num_microseconds().unwrap_or(0) {
            Calibration::Stepped { by: applied }
        } else {
            Calibration::Moved { by: applied }
        }
    }
}

/// Readings with a longer round trip are ignored.
pub const MAX_ROUND_TRIP: TimeDelta = TimeDelta::milliseconds(100);

/// The most a reading moves the clock after start-up, unless the difference is over [`STEP`].
pub const MAX_SLEW: TimeDelta = TimeDelta::milliseconds(20);

/// A difference this large is a clock that jumped, corrected at once.
pub const STEP: TimeDelta = TimeDelta::seconds(1);

/// What a reading did to the clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    Ignored { round_trip: TimeDelta },
    Moved { by: TimeDelta },
    Stepped { by: TimeDelta },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(clock: &Clock, reference_offset_ms: i64, round_trip_ms: i64) -> ClockSample {
        let before = clock.local_now();
        ClockSample {
            before,
            reference: before + TimeDelta::milliseconds(round_trip_ms / 2 + reference_offset_ms),
            after: before + TimeDelta::milliseconds(round_trip_ms),
        }
    }

    #[test]
    fn calibration_cancels_a_wrong_local_clock() {
        let clock = Clock::new(300.0);
        let before = clock.local_now();
        let after = clock.local_now();
        let reading = ClockSample {
            before,
            reference: Utc::now(),
            after,
        };
        clock.calibrate(reading, true);
        let error = (clock.now() - Utc::now()).num_milliseconds().abs();
        assert!(error < 1000, "corrected clock is off by {error} ms");
    }

    #[test]
    fn a_slow_round_trip_moves_nothing() {
        let clock = Clock::new(0.0);
        let outcome = clock.calibrate(sample(&clock, 900, 3000), false);
        assert!(matches!(outcome, Calibration::Ignored { .. }));
        assert_eq!(clock.correction_us.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn small_differences_are_slewed_and_jumps_stepped() {
        let clock = Clock::new(0.0);
        assert_eq!(
            clock.calibrate(sample(&clock, 500, 2), false),
            Calibration::Moved { by: MAX_SLEW }
        );
        assert_eq!(clock.correction_us.load(Ordering::Relaxed), 20_000);
        assert!(matches!(
            clock.calibrate(sample(&clock, 90_000, 2), false),
            Calibration::Stepped { .. }
        ));
        let correction = clock.correction_us.load(Ordering::Relaxed);
        assert!((correction - 90_000_000).abs() < 5_000, "{correction}");
    }
}
