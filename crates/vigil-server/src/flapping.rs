//! Flapping: a service that went up and down at least `transitions` times within `window` is
//! marked `flapping` beside its state (Nagios' flap detection, which Consul's TTL checks lack).
//!
//! The transitions counted are those the leader of detection finds (its `down` and `up`
//! events); they are kept in memory per service, so a new leader starts counting afresh. The
//! flag shown is computed at each look from the transitions inside the window; the `flapping`
//! and `flapping_ended` events are written when the count crosses the threshold (on a
//! transition) and when it falls back under it (the detector's next look at the service).

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};

/// When a service counts as flapping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapRule {
    /// At least this many transitions (0: never).
    pub transitions: usize,
    /// Within this long.
    pub window: TimeDelta,
}

impl FlapRule {
    pub fn new(transitions: usize, window_s: f64) -> FlapRule {
        FlapRule {
            transitions,
            window: crate::model::delta(window_s),
        }
    }
}

/// One service's recent transitions, and whether its `flapping` event was written.
///
/// Out of line, and only while there is something to keep: most services never go down, and
/// this is one pointer in each of them (a `VecDeque` in place would be 32 bytes more).
#[derive(Debug, Default, Clone)]
pub struct Flaps(Option<Box<Transitions>>);

#[derive(Debug, Default, Clone)]
struct Transitions {
    times: VecDeque<DateTime<Utc>>,
    /// A `flapping` event was written and no `flapping_ended` since.
    declared: bool,
}

impl Transitions {
    fn prune(&mut self, now: DateTime<Utc>, rule: &FlapRule) {
        while self.times.front().is_some_and(|t| *t + rule.window < now) {
            self.times.pop_front();
        }
    }
}

impl Flaps {
    /// Records a transition at `at`: `Some(count)` when the service starts flapping.
    pub fn record(&mut self, at: DateTime<Utc>, rule: &FlapRule) -> Option<usize> {
        if rule.transitions == 0 {
            return None;
        }
        let kept = self.0.get_or_insert_with(Box::default);
        kept.times.push_back(at);
        kept.prune(at, rule);
        if !kept.declared && kept.times.len() >= rule.transitions {
            kept.declared = true;
            return Some(kept.times.len());
        }
        None
    }

    /// Forgets the transitions out of the window at `now`: `Some(count)` when the service
    /// stopped flapping.
    pub fn settle(&mut self, now: DateTime<Utc>, rule: &FlapRule) -> Option<usize> {
        let kept = self.0.as_mut()?;
        kept.prune(now, rule);
        let mut ended = None;
        if kept.declared && kept.times.len() < rule.transitions {
            kept.declared = false;
            ended = Some(kept.times.len());
        }
        if !kept.declared && kept.times.is_empty() {
            self.0 = None;
        }
        ended
    }

    /// Transitions within the window at `now`.
    pub fn count(&self, now: DateTime<Utc>, rule: &FlapRule) -> usize {
        self.0.as_ref().map_or(0, |kept| {
            kept.times
                .iter()
                .filter(|t| **t + rule.window >= now)
                .count()
        })
    }

    /// Whether the service is flapping at `now`.
    pub fn flapping(&self, now: DateTime<Utc>, rule: &FlapRule) -> bool {
        rule.transitions > 0 && self.count(now, rule) >= rule.transitions
    }
}

/// The `flapping` (or, `started` false, `flapping_ended`) event of `record` at `at`.
pub fn event(
    record: &crate::model::ServiceRecord,
    started: bool,
    count: usize,
    rule: &FlapRule,
    at: DateTime<Utc>,
) -> crate::model::NewEvent {
    let kind = if started {
        crate::model::EventKind::Flapping
    } else {
        crate::model::EventKind::FlappingEnded
    };
    let mut event = crate::model::NewEvent::about(record, kind, at);
    event.reason = Some(format!(
        "{count} up/down transitions in the last {} s (flapping from {})",
        crate::model::seconds(rule.window),
        rule.transitions
    ));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn flapping_starts_at_n_transitions_in_the_window_and_ends_once_they_leave_it() {
        let rule = FlapRule::new(4, 600.0);
        let mut flaps = Flaps::default();
        assert_eq!(flaps.record(t(0), &rule), None);
        assert_eq!(
            flaps.record(t(700), &rule),
            None,
            "the first left the window"
        );
        assert_eq!(flaps.record(t(710), &rule), None);
        assert_eq!(flaps.record(t(720), &rule), None);
        assert!(!flaps.flapping(t(720), &rule));
        assert_eq!(flaps.record(t(730), &rule), Some(4));
        assert!(flaps.flapping(t(730), &rule));
        assert_eq!(flaps.record(t(740), &rule), None, "once");
        assert_eq!(flaps.settle(t(1000), &rule), None);
        assert_eq!(flaps.settle(t(1315), &rule), Some(3));
        assert!(!flaps.flapping(t(1315), &rule));
        assert!(
            flaps.0.is_some(),
            "three transitions are still in the window"
        );
        assert_eq!(flaps.settle(t(1400), &rule), None, "once");
        assert!(
            flaps.0.is_none(),
            "nothing left to keep: the memory goes back"
        );
        let off = FlapRule::new(0, 600.0);
        assert_eq!(Flaps::default().record(t(0), &off), None);
    }
}
