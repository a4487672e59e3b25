//! The liveness rule, in one place.
//!
//! `up` iff `now - last_seen <= service_down_time` and the service is not forced down, where
//! `last_seen` is the server's receipt time of the newest heartbeat (or `created_at` before the
//! first) and `now` is the server's clock. Unlike Cinder's `abs(now - updated_at)`, both stamps
//! come from the same clock, so a reporter's wrong clock cannot make it look down; a stamp in
//! the future (possible only after a clock correction) counts as up, as in Cinder.
//!
//! **Grace after a gap.** When the server starts, or resumes after its process stalled for
//! more than a second (a stopped VM, SIGSTOP, a clock stepped forward), services that were up
//! when it stopped watching get a full `service_down_time` of running time to beat again before
//! they count as down: the monitor's own absence is not evidence against them (etcd #15247,
//! Eureka's self-preservation). Their heartbeats were queued or refused meanwhile.

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::RwLock;

use crate::model::ServiceRecord;

/// A period in which the server was not watching.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    /// Last time the server was known to be watching before the gap.
    pub last_alive: DateTime<Utc>,
    /// When it watched again.
    pub resumed_at: DateTime<Utc>,
}

/// The rule and its parameters.
#[derive(Debug)]
pub struct Liveness {
    /// The server's `service_down_time`: of the services that declare none and match no
    /// pattern.
    pub service_down_time: TimeDelta,
    pub phi_threshold: f64,
    /// `service_down_time` by binary pattern (`*`: any text), first match first.
    patterns: Vec<(String, TimeDelta)>,
    /// When a service counts as flapping.
    pub flapping: crate::flapping::FlapRule,
    /// After a `down`, on-time heartbeats in a row that bring a service back `up` (1: the
    /// first heartbeat, as Cinder).
    pub up_after_beats: u32,
    gap: RwLock<Option<Gap>>,
    /// A mass failure is in progress ([`crate::guard`]): a service past its deadline that the
    /// detector has not looked at yet is `unreachable`, as it will be held, not `down`.
    cut_off: std::sync::atomic::AtomicBool,
}

impl Liveness {
    pub fn new(service_down_time_s: f64, phi_threshold: f64) -> Liveness {
        Liveness {
            service_down_time: crate::model::delta(service_down_time_s),
            phi_threshold,
            patterns: Vec::new(),
            flapping: crate::flapping::FlapRule::new(4, 600.0),
            up_after_beats: 1,
            gap: RwLock::new(None),
            cut_off: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// With `service_down_time` by binary pattern (`*`: any text), first match first.
    pub fn with_patterns(mut self, patterns: &[crate::config::DownTimePattern]) -> Liveness {
        self.patterns = patterns
            .iter()
            .map(|p| (p.binary.clone(), crate::model::delta(p.service_down_time)))
            .collect();
        self
    }

    /// With `rule` deciding when a service counts as flapping.
    pub fn with_flapping(mut self, rule: crate::flapping::FlapRule) -> Liveness {
        self.flapping = rule;
        self
    }

    /// With `beats` on-time heartbeats in a row bringing a service back up after a `down`.
    pub fn with_up_after_beats(mut self, beats: u32) -> Liveness {
        self.up_after_beats = beats.max(1);
        self
    }

    /// The `service_down_time` that judges `record`: its own, its binary's pattern's, or the
    /// server's.
    pub fn down_time(&self, record: &ServiceRecord) -> TimeDelta {
        if let Some(own) = record.service_down_time {
            return crate::model::delta(own);
        }
        self.patterns
            .iter()
            .find(|(pattern, _)| glob(pattern, &record.binary))
            .map_or(self.service_down_time, |(_, time)| *time)
    }

    /// [`Liveness::down_time`] in seconds.
    pub fn down_time_s(&self, record: &ServiceRecord) -> f64 {
        crate::model::seconds(self.down_time(record))
    }

    pub fn service_down_time_s(&self) -> f64 {
        crate::model::seconds(self.service_down_time)
    }

    /// Records that the server was not watching from `last_alive` to `resumed_at`.
    /// A gap that comes while an earlier one's grace still runs extends it: services that were
    /// up before the earlier gap keep their grace too.
    pub fn set_gap(&self, last_alive: DateTime<Utc>, resumed_at: DateTime<Utc>) {
        let mut gap = self.gap.write();
        let last_alive = match *gap {
            Some(old) if old.resumed_at + self.service_down_time > last_alive => {
                old.last_alive.min(last_alive)
            }
            _ => last_alive,
        };
        *gap = Some(Gap {
            last_alive,
            resumed_at,
        });
    }

    /// Records whether a mass failure is in progress (set by the leader of detection).
    pub fn set_cut_off(&self, cut_off: bool) {
        self.cut_off
            .store(cut_off, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn cut_off(&self) -> bool {
        self.cut_off.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn gap(&self) -> Option<Gap> {
        *self.gap.read()
    }

    /// The time at which `record` counts as down if it does not beat again.
    pub fn deadline(&self, record: &ServiceRecord) -> DateTime<Utc> {
        let last_seen = record.updated_at.unwrap_or(record.created_at);
        let down_time = self.down_time(record);
        let deadline = last_seen + down_time;
        match self.gap() {
            Some(gap) if deadline >= gap.last_alive => deadline.max(gap.resumed_at + down_time),
            _ => deadline,
        }
    }

    /// The rule itself. A stopped service is not up (nor down: see [`is_stopped`]).
    pub fn is_up(&self, record: &ServiceRecord, now: DateTime<Utc>) -> bool {
        !record.forced_down && !is_stopped(record) && now <= self.deadline(record)
    }
}

/// Whether `text` matches `pattern`, in which `*` stands for any text (none included).
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `record` said it stops and has not heartbeated since: its stop is newer than its
/// newest heartbeat (both stamped by the server's clock).
pub fn is_stopped(record: &ServiceRecord) -> bool {
    record
        .stopped_at()
        .is_some_and(|stopped| record.updated_at.is_none_or(|beat| beat <= stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(created_at: DateTime<Utc>, updated_at: Option<DateTime<Utc>>) -> ServiceRecord {
        ServiceRecord {
            updated_at,
            ..ServiceRecord::example(1, "h", "b", 10.0, created_at)
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn up_within_service_down_time_of_the_last_beat() {
        let rule = Liveness::new(60.0, 8.0);
        let r = record(t(0), Some(t(100)));
        assert!(rule.is_up(&r, t(160)));
        assert!(!rule.is_up(&r, t(161)));
    }

    #[test]
    fn creation_counts_before_the_first_beat() {
        let rule = Liveness::new(60.0, 8.0);
        let r = record(t(0), None);
        assert!(rule.is_up(&r, t(60)));
        assert!(!rule.is_up(&r, t(61)));
    }

    #[test]
    fn a_stamp_in_the_future_is_up() {
        let rule = Liveness::new(60.0, 8.0);
        assert!(rule.is_up(&record(t(0), Some(t(500))), t(100)));
    }

    #[test]
    fn a_stop_holds_until_the_next_beat() {
        let rule = Liveness::new(60.0, 8.0);
        let mut r = record(t(0), Some(t(100)));
        r.set_stopped_at(Some(t(101)));
        assert!(is_stopped(&r) && !rule.is_up(&r, t(102)));
        r.updated_at = Some(t(103));
        assert!(!is_stopped(&r) && rule.is_up(&r, t(104)));
    }

    #[test]
    fn globs() {
        for (pattern, text, matches) in [
            ("cinder-*", "cinder-volume", true),
            ("cinder-*", "nova-compute", false),
            ("*", "x", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXc", false),
            ("*-backup", "cinder-backup", true),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(pattern, text), matches, "{pattern} {text}");
        }
    }

    #[test]
    fn a_service_is_judged_by_its_own_then_its_binary_s_then_the_server_s_down_time() {
        let patterns = [crate::config::DownTimePattern {
            binary: "slow-*".into(),
            service_down_time: 120.0,
        }];
        let rule = Liveness::new(60.0, 8.0).with_patterns(&patterns);
        let mut r = record(t(0), Some(t(100)));
        assert!(!rule.is_up(&r, t(161)));
        r.binary = "slow-worker".into();
        assert!(rule.is_up(&r, t(219)) && !rule.is_up(&r, t(221)));
        r.service_down_time = Some(10.0);
        assert!(!rule.is_up(&r, t(111)));
        assert_eq!(rule.down_time_s(&r), 10.0);
    }

    #[test]
    fn forced_down_wins() {
        let rule = Liveness::new(60.0, 8.0);
        let mut r = record(t(0), Some(t(100)));
        r.forced_down = true;
        assert!(!rule.is_up(&r, t(100)));
    }

    #[test]
    fn a_gap_during_grace_keeps_the_earlier_services_eligible() {
        let rule = Liveness::new(60.0, 8.0);
        rule.set_gap(t(1000), t(2000));
        rule.set_gap(t(2010), t(2020));
        let up_before_first = record(t(0), Some(t(990)));
        assert!(rule.is_up(&up_before_first, t(2079)));
        rule.set_gap(t(5000), t(5005));
        assert!(
            !rule.is_up(&up_before_first, t(5006)),
            "an old grace does not carry over"
        );
    }

    #[test]
    fn services_up_before_a_gap_get_grace_and_dead_ones_do_not() {
        let rule = Liveness::new(60.0, 8.0);
        rule.set_gap(t(1000), t(5000));
        let was_up = record(t(0), Some(t(990)));
        let was_dead = record(t(0), Some(t(100)));
        assert!(rule.is_up(&was_up, t(5059)));
        assert!(!rule.is_up(&was_up, t(5061)));
        assert!(!rule.is_up(&was_dead, t(5001)));
    }
}
