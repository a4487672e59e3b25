//! The partition guard: when many services go silent together, Vigil may be the one cut off.
//!
//! A reporter that dies misses its deadline alone; a network cut between Vigil and its
//! reporters (or a switch, or a firewall change) silences a whole share of the fleet at once.
//! When a deadline passes while more than `share` of the services (and at least
//! `min_services`) are silent, the detector does not declare the ones that miss their deadline
//! `down`: it records one `mass_failure` event and holds them `unreachable`, until each beats
//! again (back to `up`, no event: it was never down), an admin confirms them down
//! (`vigil confirm-down`), or `hold` passes (then `down`, with the reason). When every held
//! service is resolved, a `mass_failure_ended` event closes the episode. This is Eureka's
//! self-preservation done per event, not as a global mode that stops all expiry.
//!
//! **Silent** means quiet for at least half of its own `service_down_time`: for any interval
//! the doctor accepts, at least one missed beat, so a fleet cut off at one instant is silent as
//! a whole when its first deadline passes, though the deadlines themselves spread over one
//! `report_interval`. Services declared down before (dead already), stopped, forced down, or
//! watched in an OpenStack database are not counted either way. The measure is one scan of
//! the registry (an even sample of 20,000 in a larger fleet), taken only when some deadline
//! comes up and at most once a second.
//!
//! The guard is the leader of detection's: what it holds lives in that server's memory. A
//! follower replica judges by the liveness rule alone and shows such a service `down`.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;

use crate::model::{Actor, EventKind, NewEvent};
use crate::registry::{Entry, Registry, Slot};

/// When the guard holds services back from `down`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardRule {
    pub enabled: bool,
    /// More than this share of the counted services silent together…
    pub share: f64,
    /// …and at least this many.
    pub min_services: usize,
    /// How long a service is held `unreachable` before it counts as `down` after all.
    pub hold: TimeDelta,
}

impl Default for GuardRule {
    fn default() -> Self {
        GuardRule {
            enabled: true,
            share: 0.5,
            min_services: 10,
            hold: TimeDelta::seconds(600),
        }
    }
}

/// How many services are silent, of how many counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silence {
    pub silent: usize,
    pub total: usize,
}

/// A mass failure in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeView {
    pub since: DateTime<Utc>,
    /// Services held `unreachable` now.
    pub unreachable: usize,
    /// The silence measured when it began.
    pub silence: Silence,
}

struct Episode {
    since: DateTime<Utc>,
    silence: Silence,
    /// Held services, and when each was held (some may have beaten since: `tend` forgets
    /// them in turn).
    held: std::collections::VecDeque<(Arc<Entry>, DateTime<Utc>)>,
    returned: usize,
    confirmed: usize,
    expired: usize,
}

#[derive(Default)]
struct State {
    /// The latest measure of the silence, and when it was taken: one scan of the registry
    /// serves every deadline that passes within [`MEASURE_EVERY`].
    measured: Option<(DateTime<Utc>, Silence)>,
    episode: Option<Episode>,
    /// When held services were last looked at.
    tended: Option<DateTime<Utc>>,
}

/// Declares a held service down, with a reason: its events (the detector's `declare_down`,
/// passed in so that the guard needs nothing of the detector).
pub type Declare<'a> = dyn FnMut(&mut Slot, String) -> Vec<NewEvent> + 'a;

/// How long one measure of the silence stands.
const MEASURE_EVERY: TimeDelta = TimeDelta::seconds(1);

/// How often the held services are looked at (returned, expired, episode over).
const TEND_EVERY: TimeDelta = TimeDelta::milliseconds(500);

/// Held services looked at per [`TEND_EVERY`]: all of them in an episode of up to this many;
/// in a larger one, in turn (a hold then ends up to `held / TEND_CHUNK` half-seconds late), so
/// that the detector's tick never waits long on the guard.
const TEND_CHUNK: usize = 50_000;

/// The guard's rule and the episode in progress.
#[derive(Default)]
pub struct Guard {
    pub rule: GuardRule,
    state: Mutex<State>,
}

impl Guard {
    pub fn new(rule: GuardRule) -> Guard {
        Guard {
            rule,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a mass silence goes on at `now`: `Some` with its measure when deadlines that
    /// pass now must be held rather than declared down. An episode already in progress holds
    /// too while the silence lasts.
    pub fn mass_silence(&self, registry: &Registry, now: DateTime<Utc>) -> Option<Silence> {
        if !self.rule.enabled {
            return None;
        }
        let cached = self
            .state
            .lock()
            .measured
            .filter(|(at, _)| now - *at < MEASURE_EVERY && *at <= now);
        let silence = match cached {
            Some((_, silence)) => silence,
            None => {
                let silence = measure(registry, now);
                self.state.lock().measured = Some((now, silence));
                silence
            }
        };
        (silence.silent >= self.rule.min_services.max(1)
            && silence.silent as f64 > self.rule.share * silence.total as f64)
            .then_some(silence)
    }

    /// Holds `entry` (already marked unreachable in its slot); the `mass_failure` event when
    /// this starts an episode.
    pub fn hold(
        &self,
        entry: Arc<Entry>,
        silence: Silence,
        now: DateTime<Utc>,
    ) -> Option<NewEvent> {
        let mut state = self.state.lock();
        let started = state.episode.is_none();
        let episode = state.episode.get_or_insert_with(|| Episode {
            since: now,
            silence,
            held: std::collections::VecDeque::new(),
            returned: 0,
            confirmed: 0,
            expired: 0,
        });
        episode.held.push_back((entry, now));
        started.then(|| {
            let mut event = whole_fleet(EventKind::MassFailure, now);
            event.reason = Some(format!(
                "{} of {} services went silent together: Vigil may be the one cut off. They are unreachable, not down, until they beat again, an admin runs `vigil confirm-down`, or {} s pass",
                silence.silent,
                silence.total,
                crate::model::seconds(self.rule.hold)
            ));
            event
        })
    }

    /// Looks at the held services (at most every [`TEND_EVERY`], at most [`TEND_CHUNK`] of them
    /// a time, in turn): forgets the ones that beat again or were deleted, releases those that
    /// stopped cleanly or were forced down meanwhile (returned, for the detector to file), has
    /// `declare` declare down (with a reason) the ones held longer than `hold`, and ends the
    /// episode once none is left. Returns the events to write and the released services.
    pub fn tend(
        &self,
        now: DateTime<Utc>,
        declare: &mut Declare,
    ) -> (Vec<NewEvent>, Vec<Arc<Entry>>) {
        let mut state = self.state.lock();
        if state.episode.is_none()
            || state
                .tended
                .is_some_and(|at| now - at < TEND_EVERY && at <= now)
        {
            return (Vec::new(), Vec::new());
        }
        state.tended = Some(now);
        let hold = self.rule.hold;
        let Some(episode) = state.episode.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        let mut events = Vec::new();
        let mut released = Vec::new();
        for _ in 0..episode.held.len().min(TEND_CHUNK) {
            let Some((entry, held_at)) = episode.held.pop_front() else {
                break;
            };
            let mut slot = entry.lock();
            if slot.deleted {
                continue;
            }
            if !slot.unreachable {
                episode.returned += 1;
                continue;
            }
            if slot.record.forced_down || crate::liveness::is_stopped(&slot.record) {
                // An admin's word, or the service's own: no longer the guard's to hold.
                slot.unreachable = false;
                episode.returned += 1;
                drop(slot);
                released.push(entry);
                continue;
            }
            if now - held_at >= hold {
                slot.unreachable = false;
                let reason = format!(
                    "unreachable for {:.0} s after a mass failure, and never beat again",
                    crate::model::seconds(now - held_at)
                );
                events.extend(declare(&mut slot, reason));
                episode.expired += 1;
                continue;
            }
            drop(slot);
            episode.held.push_back((entry, held_at));
        }
        if episode.held.is_empty() {
            events.push(ended(episode, now));
            state.episode = None;
        }
        (events, released)
    }

    /// Has `declare` declare down the held services of `host` (and `binary`), or all of them,
    /// as `actor` asks. Returns how many, and the events to write.
    pub fn confirm_down(
        &self,
        host: Option<&str>,
        binary: Option<&str>,
        actor: &Actor,
        now: DateTime<Utc>,
        declare: &mut Declare,
    ) -> (usize, Vec<NewEvent>) {
        let mut state = self.state.lock();
        let Some(episode) = state.episode.as_mut() else {
            return (0, Vec::new());
        };
        let mut events = Vec::new();
        let mut confirmed = 0;
        let mut returned = 0;
        episode.held.retain(|(entry, _)| {
            let mut slot = entry.lock();
            if slot.deleted || !slot.unreachable {
                returned += usize::from(!slot.deleted);
                return false;
            }
            if slot.record.forced_down || crate::liveness::is_stopped(&slot.record) {
                return true; // released by `tend`
            }
            if host.is_some_and(|h| *h != slot.record.host)
                || binary.is_some_and(|b| *b != slot.record.binary)
            {
                return true;
            }
            slot.unreachable = false;
            let who = actor.name.as_deref().unwrap_or("an admin");
            let reason = format!("confirmed down by {who} after a mass failure");
            events.extend(declare(&mut slot, reason).into_iter().map(|e| e.by(actor)));
            confirmed += 1;
            false
        });
        episode.confirmed += confirmed;
        episode.returned += returned;
        if episode.held.is_empty() {
            events.push(ended(episode, now));
            state.episode = None;
        }
        (confirmed, events)
    }

    /// The episode in progress, if any; its count of held services may include some that beat
    /// within the last [`TEND_EVERY`]s (one turn of `tend`). The lock order is the guard's state,
    /// then slots.
    pub fn episode(&self) -> Option<EpisodeView> {
        let state = self.state.lock();
        state.episode.as_ref().map(|e| EpisodeView {
            since: e.since,
            unreachable: e.held.len(),
            silence: e.silence,
        })
    }

    /// Whether an episode is in progress.
    pub fn active(&self) -> bool {
        self.state.lock().episode.is_some()
    }

    /// Forgets the episode (leadership lost: the next leader starts from the table).
    pub fn clear(&self) {
        *self.state.lock() = State::default();
    }
}

/// Services looked at by one measure: a fleet larger than this is surveyed by an even sample,
/// so that a measure costs a few milliseconds however large the fleet (a share is what counts).
const SAMPLE: usize = 20_000;

/// Counts the silent services at `now` (see the module's doc); in a fleet larger than
/// [`SAMPLE`], estimated from an even sample of it.
fn measure(registry: &Registry, now: DateTime<Utc>) -> Silence {
    let (entries, len) = registry.sample(SAMPLE);
    let mut silence = count(&entries, registry, now);
    if entries.len() < len && !entries.is_empty() {
        let scale = len as f64 / entries.len() as f64;
        silence.silent = (silence.silent as f64 * scale).round() as usize;
        silence.total = (silence.total as f64 * scale).round() as usize;
    }
    silence
}

fn count(entries: &[Arc<Entry>], registry: &Registry, now: DateTime<Utc>) -> Silence {
    let mut silence = Silence {
        silent: 0,
        total: 0,
    };
    for entry in entries {
        let slot = entry.lock();
        let record = &slot.record;
        if slot.deleted
            || slot.watched.is_some()
            || record.forced_down
            || crate::liveness::is_stopped(record)
            || (slot.declared_down && !slot.unreachable)
        {
            continue;
        }
        silence.total += 1;
        let age = now - record.updated_at.unwrap_or(record.created_at);
        if slot.unreachable || age * 2 >= registry.liveness.down_time(record) {
            silence.silent += 1;
        }
    }
    silence
}

/// An event about the whole fleet rather than one service (service id 0, host and binary `*`).
fn whole_fleet(kind: EventKind, at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        service_id: 0,
        host: "*".into(),
        binary: "*".into(),
        kind,
        at,
        reason: None,
        last_seen: None,
        threshold_s: None,
        actor: None,
        address: None,
    }
}

fn ended(episode: &Episode, now: DateTime<Utc>) -> NewEvent {
    let mut event = whole_fleet(EventKind::MassFailureEnded, now);
    event.reason = Some(format!(
        "the mass failure since {} is over: {} beat again (or stopped, or were forced down), {} confirmed down, {} down after the hold",
        episode.since.format("%Y-%m-%dT%H:%M:%SZ"),
        episode.returned,
        episode.confirmed,
        episode.expired
    ));
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::Liveness;
    use crate::model::ServiceRecord;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    /// `silent` services last seen at 0 s and `beating` ones at 9.5 s, judged at 10 s with a
    /// `service_down_time` of 10 s.
    fn registry(silent: usize, beating: usize) -> Registry {
        let record = |id: usize, seen: i64| ServiceRecord {
            report_count: 1,
            updated_at: Some(t(seen)),
            ..ServiceRecord::example(id as i64 + 1, &format!("h{id}"), "b", 1.0, t(0))
        };
        let records = (0..silent + beating)
            .map(|i| record(i, if i < silent { 0 } else { 9_500 }))
            .collect();
        Registry::new(records, Liveness::new(10.0, 8.0))
    }

    #[test]
    fn a_mass_silence_needs_the_share_and_the_count() {
        let guard = Guard::new(GuardRule::default());
        assert_eq!(
            guard.mass_silence(&registry(11, 10), t(10_000)),
            Some(Silence {
                silent: 11,
                total: 21
            })
        );
        let guard = Guard::new(GuardRule::default());
        assert_eq!(
            guard.mass_silence(&registry(10, 10), t(10_000)),
            None,
            "half is not more than half"
        );
        let guard = Guard::new(GuardRule::default());
        assert_eq!(
            guard.mass_silence(&registry(9, 0), t(10_000)),
            None,
            "fewer than 10"
        );
        let off = Guard::new(GuardRule {
            enabled: false,
            ..GuardRule::default()
        });
        assert_eq!(off.mass_silence(&registry(20, 0), t(10_000)), None);
    }

    #[test]
    fn a_large_fleet_is_measured_by_a_sample() {
        let registry = registry(30_000, 20_000);
        let silence = measure(&registry, t(10_000));
        assert_eq!(silence.total, 50_000);
        assert!(
            (29_000..=31_000).contains(&silence.silent),
            "about 30,000: {silence:?}"
        );
    }
}
