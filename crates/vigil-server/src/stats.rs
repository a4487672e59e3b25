//! Per-service heartbeat timing: inter-arrival gaps for phi-accrual suspicion, the reporter's
//! clock offset, and what the reporter says about itself. Fixed-size, no allocation per beat.

use chrono::{DateTime, Utc};
use half::f16;

use crate::model::{seconds, Beat};

/// How many recent gaps are kept.
pub const GAP_WINDOW: usize = 32;

/// Weight of a new clock-offset sample in the smoothed estimate.
const OFFSET_SMOOTHING: f64 = 0.2;

/// Timing of one service's recent heartbeats.
///
/// Ten million of these live in a server, so the layout counts: the window is kept as 16-bit
/// floats, the estimates as `f32` where their precision allows, and what few services ever
/// report (a regression of `sent_at`, a reporter's error) sits out of line in [`Rare`].
#[derive(Debug, Clone)]
pub struct BeatStats {
    /// The window as half-precision floats: 11 significant bits, so a gap is kept to within
    /// 4 ms at 10 s, 16 ms at 60 s, 0.5 s past 1,024 s: less than a network's jitter at the
    /// usual intervals. Gaps longer than [`MAX_GAP_S`] are kept as that. (Liveness never
    /// reads this window: it judges the exact `updated_at`.)
    gaps: [f16; GAP_WINDOW],
    gap_count: u8,
    next_gap: u8,
    /// Sum and sum of squares of the kept gaps (as kept), up to date per beat so that
    /// suspicion, computed for every row of every list, does not walk the window each time
    /// (twice as long). Single precision is enough: its relative error (1e-7) is far below
    /// the deviation's floor of a tenth of the mean, so the cancellation in `E[x^2] - E[x]^2`
    /// never shows; and the sums start again from the window once per window, and when a gap
    /// that made up most of them leaves (its square's rounding would stay behind).
    gap_sum: f32,
    gap_sum_sq: f32,
    /// Heartbeats received by this server process.
    pub beats: u32,
    /// Smoothed estimate of reporter clock minus server clock, seconds (NaN: none yet).
    clock_offset_s: f64,
    /// Round trip that bounds the offset estimate's error, seconds (NaN: not known).
    clock_offset_error_s: f32,
    /// The reporter's latest self-reported loop overrun, seconds.
    last_overrun_s: f32,
    /// Largest overrun reported since this server started, seconds.
    max_overrun_s: f32,
    pub last_sent_at: Option<DateTime<Utc>>,
    rare: Option<Box<Rare>>,
}

/// The longest gap the window keeps (half precision's largest finite value: 18 hours).
const MAX_GAP_S: f64 = 65_504.0;

/// What a [`BeatStats`] holds for the few services that report it.
#[derive(Debug, Clone, Default)]
struct Rare {
    /// Beats whose `sent_at` was earlier than the previous beat's: two processes reporting as
    /// one (host, binary) interleave their series.
    sent_at_regressions: u64,
    /// Receipt time of the latest such beat, so that an old incident does not count forever.
    last_regression_at: Option<DateTime<Utc>>,
    /// The last error the reporter said it met, with when the beat carrying it arrived.
    last_error: Option<(String, DateTime<Utc>)>,
}

impl Default for BeatStats {
    fn default() -> Self {
        BeatStats {
            gaps: [f16::ZERO; GAP_WINDOW],
            gap_count: 0,
            next_gap: 0,
            gap_sum: 0.0,
            gap_sum_sq: 0.0,
            beats: 0,
            clock_offset_s: f64::NAN,
            clock_offset_error_s: f32::NAN,
            last_overrun_s: 0.0,
            max_overrun_s: 0.0,
            last_sent_at: None,
            rare: None,
        }
    }
}

impl BeatStats {
    /// Records one beat received at `now`; `previous` is the receipt time of the one before.
    pub fn record_beat(
        &mut self,
        previous: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        beat: &Beat,
    ) {
        self.beats = self.beats.saturating_add(1);
        if let Some(previous) = previous {
            let kept = f16::from_f64(seconds(now - previous).clamp(0.0, MAX_GAP_S));
            let gap = kept.to_f32();
            let next = usize::from(self.next_gap);
            let mut resum = false;
            if usize::from(self.gap_count) == GAP_WINDOW {
                let old = self.gaps[next].to_f32();
                self.gap_sum -= old;
                self.gap_sum_sq -= old * old;
                // A gap that made up most of the sums (hours long among seconds) leaves behind
                // the rounding of everything added beside it, at the scale of its own square:
                // the sums start again from the window.
                resum = old * old > self.gap_sum_sq;
            }
            self.gaps[next] = kept;
            self.gap_sum += gap;
            self.gap_sum_sq += gap * gap;
            self.next_gap = ((next + 1) % GAP_WINDOW) as u8;
            self.gap_count = (usize::from(self.gap_count) + 1).min(GAP_WINDOW) as u8;
            if self.next_gap == 0 || resum {
                // Once per window, the sums again from scratch: no rounding drift builds up.
                let gaps = self.gaps.iter().map(|g| g.to_f64());
                self.gap_sum = gaps.clone().sum::<f64>() as f32;
                self.gap_sum_sq = gaps.map(|g| g * g).sum::<f64>() as f32;
            }
        }
        if let Some(sent_at) = beat.sent_at {
            let rtt = beat.last_rtt_s.filter(|r| r.is_finite() && *r >= 0.0);
            let sample = seconds(sent_at - now) + rtt.unwrap_or(0.0) / 2.0;
            let offset = match self.clock_offset_s() {
                Some(old) => old + OFFSET_SMOOTHING * (sample - old),
                None => sample,
            };
            self.set_clock_offset(offset, rtt.map(|r| r / 2.0));
            if self.last_sent_at.is_some_and(|last| sent_at < last) {
                let rare = self.rare.get_or_insert_with(Box::default);
                rare.sent_at_regressions += 1;
                rare.last_regression_at = Some(now);
            }
            self.last_sent_at = Some(sent_at);
        }
        if let Some(overrun) = beat.overrun_s.filter(|o| o.is_finite() && *o >= 0.0) {
            self.last_overrun_s = overrun as f32;
            self.max_overrun_s = self.max_overrun_s.max(overrun as f32);
        }
        if let Some(error) = &beat.last_error {
            self.rare.get_or_insert_with(Box::default).last_error = Some((error.clone(), now));
        }
    }

    /// Smoothed estimate of reporter clock minus server clock, seconds.
    pub fn clock_offset_s(&self) -> Option<f64> {
        Some(self.clock_offset_s).filter(|o| !o.is_nan())
    }

    /// The bound on [`Self::clock_offset_s`]'s error (half the last round trip), seconds.
    pub fn clock_offset_error_s(&self) -> Option<f64> {
        Some(f64::from(self.clock_offset_error_s)).filter(|e| !e.is_nan())
    }

    /// Sets the clock offset estimate and the bound on its error.
    pub fn set_clock_offset(&mut self, offset_s: f64, error_s: Option<f64>) {
        self.clock_offset_s = offset_s;
        self.clock_offset_error_s = error_s.map_or(f32::NAN, |e| e as f32);
    }

    /// The reporter's latest self-reported loop overrun, seconds.
    pub fn last_overrun_s(&self) -> f64 {
        f64::from(self.last_overrun_s)
    }

    /// Largest overrun reported since this server started, seconds.
    pub fn max_overrun_s(&self) -> f64 {
        f64::from(self.max_overrun_s)
    }

    /// Beats whose `sent_at` was earlier than the previous beat's.
    pub fn sent_at_regressions(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.sent_at_regressions)
    }

    /// Receipt time of the latest beat whose `sent_at` went back.
    pub fn last_regression_at(&self) -> Option<DateTime<Utc>> {
        self.rare.as_ref().and_then(|r| r.last_regression_at)
    }

    /// The last error the reporter said it met, with when the beat carrying it arrived.
    pub fn last_error(&self) -> Option<(&str, DateTime<Utc>)> {
        let (error, at) = self.rare.as_ref()?.last_error.as_ref()?;
        Some((error.as_str(), *at))
    }

    /// Recent gaps, oldest first, seconds.
    pub fn gaps(&self) -> Vec<f64> {
        let count = usize::from(self.gap_count);
        let start = if count < GAP_WINDOW {
            0
        } else {
            usize::from(self.next_gap)
        };
        (0..count)
            .map(|i| self.gaps[(start + i) % GAP_WINDOW].to_f64())
            .collect()
    }

    /// Mean and (floored) standard deviation of the recent gaps; `None` until three are known.
    fn distribution(&self) -> Option<(f64, f64)> {
        if self.gap_count < 3 {
            return None;
        }
        let n = f64::from(self.gap_count);
        let mean = f64::from(self.gap_sum) / n;
        let variance = (f64::from(self.gap_sum_sq) / n - mean * mean).max(0.0);
        // A floor on the deviation: perfectly regular beats must not make one late beat
        // infinitely suspicious.
        let std_dev = variance.sqrt().max(mean / 10.0).max(0.01);
        Some((mean, std_dev))
    }

    /// Seconds after the last beat at which phi reaches `threshold`, so the detector can wake
    /// up then instead of scanning. Inverts Akka's approximation: with `p = 10^-phi`,
    /// `y (1.5976 + 0.070566 y^2) = ln((1 - p) / p)`, solved by Newton's method.
    pub fn suspect_after(&self, threshold: f64) -> Option<f64> {
        let (mean, std_dev) = self.distribution()?;
        let p = 10f64.powf(-threshold);
        let target = ((1.0 - p) / p).ln();
        let mut y = 1.0f64;
        for _ in 0..30 {
            let f = 0.070566 * y * y * y + 1.5976 * y - target;
            let df = 3.0 * 0.070566 * y * y + 1.5976;
            y -= f / df;
        }
        Some(mean + y * std_dev)
    }

    /// Phi-accrual suspicion (Hayashibara et al. 2004) that the service is dead, given that
    /// nothing arrived since `last_seen`: `-log10(P(gap > elapsed))` under a normal distribution
    /// fitted to the recent gaps, with Akka's logistic approximation of its tail. `None` until
    /// three gaps are known.
    pub fn phi(&self, now: DateTime<Utc>, last_seen: DateTime<Utc>) -> Option<f64> {
        let (mean, std_dev) = self.distribution()?;
        let elapsed = seconds(now - last_seen).max(0.0);
        let y = (elapsed - mean) / std_dev;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let phi = if elapsed > mean {
            -(e / (1.0 + e)).log10()
        } else {
            -(1.0 - 1.0 / (1.0 + e)).log10()
        };
        Some(if phi.is_finite() { phi.max(0.0) } else { 1e3 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    fn regular(n: i64, every_ms: i64) -> BeatStats {
        let mut stats = BeatStats::default();
        let mut previous = None;
        for i in 0..n {
            stats.record_beat(previous, at(i * every_ms), &Beat::default());
            previous = Some(at(i * every_ms));
        }
        stats
    }

    #[test]
    fn phi_is_low_on_time_and_high_when_late() {
        let stats = regular(10, 1000);
        let last = at(9000);
        assert!(stats.phi(at(9500), last).unwrap() < 1.0);
        assert!(stats.phi(at(12000), last).unwrap() > 8.0);
    }

    #[test]
    fn suspect_after_inverts_phi() {
        let stats = regular(10, 1000);
        let after = stats.suspect_after(8.0).unwrap();
        assert!(after > 1.0 && after < 3.0, "{after}");
        let last = at(9000);
        let crossing = last + crate::model::delta(after);
        let phi = stats.phi(crossing, last).unwrap();
        assert!((phi - 8.0).abs() < 0.05, "{phi}");
    }

    /// After a gap of hours leaves the window, the deviation of the seconds-long gaps left is
    /// theirs, not the rounding the long one's square left in single-precision sums.
    #[test]
    fn a_long_gap_leaves_no_rounding_behind() {
        let mut stats = BeatStats::default();
        let mut t = 0i64;
        let mut previous = None;
        for i in 0..200 {
            // 30 s with 10 ms of jitter; one gap of 18 hours, the first of a window (so that
            // the window's other 31 are added while it is in the sums).
            t += if i == 65 {
                65_000_000
            } else {
                30_000 + (i * 7 % 20)
            };
            stats.record_beat(previous, at(t), &Beat::default());
            previous = Some(at(t));
            let gaps = stats.gaps();
            if gaps.len() < 3 || gaps.iter().any(|g| *g > 1_000.0) {
                continue;
            }
            let n = gaps.len() as f64;
            let mean = gaps.iter().sum::<f64>() / n;
            let std_dev = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n).sqrt();
            let (got_mean, got_std) = stats.distribution().unwrap();
            assert!(
                (got_mean - mean).abs() < 1e-3,
                "beat {i}: {got_mean} {mean}"
            );
            let want = std_dev.max(mean / 10.0).max(0.01);
            assert!((got_std - want).abs() < 1e-3, "beat {i}: {got_std} {want}");
            // And the sums themselves (the deviation's floor can hide their error).
            let squares = gaps.iter().map(|g| g * g).sum::<f64>();
            let kept = f64::from(stats.gap_sum_sq);
            assert!(
                (kept - squares).abs() < squares * 1e-5,
                "beat {i}: {kept} {squares}"
            );
        }
    }

    /// The running sums give the mean and deviation of the window, however long it ran.
    #[test]
    fn running_sums_match_the_window() {
        let mut stats = BeatStats::default();
        let mut t = 0i64;
        let mut previous = None;
        let mut seed = 12345u64;
        for _ in 0..1_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            t += 500 + (seed >> 33) as i64 % 20_000;
            stats.record_beat(previous, at(t), &Beat::default());
            previous = Some(at(t));
            let gaps = stats.gaps();
            if gaps.len() < 3 {
                continue;
            }
            let n = gaps.len() as f64;
            let mean = gaps.iter().sum::<f64>() / n;
            let std_dev = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n).sqrt();
            let (got_mean, got_std) = stats.distribution().unwrap();
            // Within a tenth of a millisecond (single-precision sums).
            assert!((got_mean - mean).abs() < 1e-4, "{got_mean} {mean}");
            assert!(
                (got_std - std_dev.max(mean / 10.0).max(0.01)).abs() < 1e-4,
                "{got_std} {std_dev}"
            );
        }
    }

    #[test]
    fn phi_needs_three_gaps() {
        assert_eq!(regular(3, 1000).phi(at(5000), at(2000)), None);
    }

    #[test]
    fn offset_is_measured_from_sent_at() {
        let mut stats = BeatStats::default();
        let beat = Beat {
            sent_at: Some(at(90_000)),
            last_rtt_s: Some(0.002),
            ..Beat::default()
        };
        stats.record_beat(None, at(0), &beat);
        assert!((stats.clock_offset_s().unwrap() - 90.001).abs() < 1e-6);
    }

    #[test]
    fn gaps_come_out_oldest_first_after_wrapping() {
        let stats = regular(GAP_WINDOW as i64 + 5, 1000);
        assert_eq!(stats.gaps().len(), GAP_WINDOW);
        assert!(stats.gaps().iter().all(|g| (*g - 1.0).abs() < 1e-6));
    }
}
