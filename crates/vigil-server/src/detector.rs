//! Active failure detection: every up→down transition is noticed within one tick of its
//! deadline, without anyone listing services, and written to the history.
//!
//! Design: a timer wheel of 100 ms buckets keyed by the time each service must be looked at
//! next (its down deadline, or earlier the moment its phi-accrual suspicion would cross the
//! threshold). Heartbeats never touch the wheel: when the detector reaches an entry whose
//! heartbeats moved its deadline, it simply files it again under the new time. So a
//! heartbeat costs the detector nothing, and the detector's work is proportional to the
//! number of services whose time comes up, never a scan of all of them.
//!
//! Down→up transitions are found on the heartbeat path ([`crate::app::App::heartbeat`]),
//! which files the revived service again. Every transition is queued to this task, which
//! writes them under its lease, so only the leader's writes land.
//!
//! [`StallWatch`] notices the process's own pauses (a stopped VM, a SIGSTOP): a wake-up
//! more than a second late opens a grace period (see [`crate::liveness`]) instead of declaring every
//! service whose heartbeats were held up meanwhile down at once.
//!
//! This module is the detector's state and its rules; it knows the registry, the event log and
//! the clock, never `App`. The loops that drive it (leadership, ticks, writing the queued
//! transitions, the stall watch's timer) are tasks in [`crate::tasks::detect`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::events::EventLog;
use crate::liveness::Liveness;
use crate::model::{EventKind, NewEvent};
use crate::registry::{seconds, Entry, Registry, Slot};

/// Width of a wheel bucket, and the detector's tick.
pub const TICK: Duration = Duration::from_millis(100);

/// A wake-up this late means the process stopped watching.
const PAUSE: Duration = Duration::from_secs(1);

/// Services to look at, by bucket, and whether this server leads detection.
#[derive(Default)]
pub struct Detector {
    wheel: Mutex<BTreeMap<i64, Vec<Arc<Entry>>>>,
    /// Leads detection: writes `down`, `up` and `suspect` events.
    leader: AtomicBool,
    pub stalls: StallWatch,
    /// Holds services back from `down` when many go silent together.
    pub guard: crate::guard::Guard,
}

/// When this process was last seen running, on the monotonic and the local wall clock.
pub struct StallWatch {
    last: Mutex<(std::time::Instant, DateTime<Utc>)>,
}

impl Default for StallWatch {
    fn default() -> Self {
        StallWatch {
            last: Mutex::new((std::time::Instant::now(), Utc::now())),
        }
    }
}

impl StallWatch {
    /// Opens a grace period when the process was away (not running) for over [`PAUSE`]
    /// since anyone last looked. Checked every [`TICK`] by a task that waits on nothing but a
    /// timer, and by the detector before each tick, so that no down is declared before a stall
    /// is noticed; a detector that was itself waiting for the database sees the watch's recent
    /// look, not a stall.
    pub fn check(&self, clock: &Clock, liveness: &Liveness) {
        // The gap is recorded under the same lock: a second checker (the detector's, on
        // another thread) must not see the watch's fresh look, find no stall, and tick before
        // the gap is set (a down declared at the resume, without grace).
        let mut last = self.last.lock();
        let mono = std::time::Instant::now();
        let wall = clock.local_now();
        let by_wall = (wall - last.1).to_std().unwrap_or_default();
        let away = mono.saturating_duration_since(last.0).max(by_wall);
        *last = (mono, wall);
        if away > TICK + PAUSE {
            let now = clock.now();
            let since = now - TimeDelta::from_std(away).unwrap_or_default();
            tracing::warn!(
                paused_s = away.as_secs_f64(),
                "the server stalled (paused process, stopped VM, clock stepped); services get a grace period before they count as down"
            );
            liveness.set_gap(since, now);
        }
    }
}

fn bucket(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
        .div_euclid(TICK.as_micros() as i64)
        .saturating_add(1)
}

impl Detector {
    /// Whether this server leads detection (always, alone on its database).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub fn set_leader(&self, leads: bool) {
        self.leader.store(leads, Ordering::Relaxed);
    }

    /// Files `entry` unless it is already filed, declared down (a heartbeat files it again)
    /// or deleted. Only the leader files.
    pub fn file(&self, liveness: &Liveness, entry: &Arc<Entry>, now: DateTime<Utc>) {
        if !self.is_leader() {
            return;
        }
        let at = {
            let mut slot = entry.lock();
            if slot.filed || slot.declared_down || slot.unreachable || slot.deleted {
                return;
            }
            slot.filed = true;
            next_visit(liveness, &slot, now)
        };
        self.watch(entry.clone(), at);
    }

    /// Files `entry` to be looked at at `at`; the caller has set its `filed` flag.
    fn watch(&self, entry: Arc<Entry>, at: DateTime<Utc>) {
        self.wheel.lock().entry(bucket(at)).or_default().push(entry);
    }

    /// With `guard` holding services back from `down` in a mass failure.
    pub fn with_guard(guard: crate::guard::GuardRule) -> Detector {
        Detector {
            guard: crate::guard::Guard::new(guard),
            ..Detector::default()
        }
    }

    /// Forgets every filing and declaration (leadership lost or about to be rebuilt).
    pub fn clear(&self, registry: &Registry) {
        self.wheel.lock().clear();
        self.guard.clear();
        registry.liveness.set_cut_off(false);
        for entry in registry.entries() {
            let mut slot = entry.lock();
            slot.filed = false;
            slot.declared_down = false;
            slot.declared_suspect = false;
            slot.unreachable = false;
            slot.recovering = 0;
        }
    }

    /// Takes every entry whose bucket has passed at `now`.
    fn due(&self, now: DateTime<Utc>) -> Vec<Arc<Entry>> {
        let mut wheel = self.wheel.lock();
        // Buckets before `now`'s hold only times that have passed.
        let later = wheel.split_off(&bucket(now));
        let due = std::mem::replace(&mut *wheel, later);
        due.into_values().flatten().collect()
    }
}

/// When `entry` must be looked at next, given that it is up: its down deadline, or the
/// earlier moment its suspicion would cross the threshold.
pub fn next_visit(liveness: &Liveness, slot: &Slot, now: DateTime<Utc>) -> DateTime<Utc> {
    let deadline = liveness.deadline(&slot.record);
    if slot.declared_suspect || slot.record.forced_down {
        return deadline;
    }
    let last_seen = slot.record.updated_at.unwrap_or(slot.record.created_at);
    match slot.stats.suspect_after(liveness.phi_threshold) {
        Some(after) => {
            let at = last_seen + crate::model::delta(after);
            at.min(deadline)
        }
        // Too few gaps to judge yet: look again once there should be enough.
        None => {
            let soon = last_seen + crate::model::delta(4.0 * slot.record.report_interval);
            if soon > now {
                soon.min(deadline)
            } else {
                deadline
            }
        }
    }
}

impl Detector {
    /// Starts detection where the history left each service: a service in `down` (its latest
    /// transition) stays declared down (no second `down`), every other one is filed, so that
    /// one that died while nobody was watching gets its `down` now, once.
    pub fn start_from(
        &self,
        registry: &Registry,
        down: &std::collections::HashSet<i64>,
        now: DateTime<Utc>,
    ) {
        self.clear(registry);
        for entry in registry.entries() {
            let mut slot = entry.lock();
            slot.declared_down = down.contains(&slot.record.id);
            drop(slot);
            self.file(&registry.liveness, &entry, now);
        }
    }

    /// Looks at every due entry: declares the ones past their deadline down, flags new suspects,
    /// files the rest again. Returns, for each down declared, how long after its deadline.
    pub fn tick(
        &self,
        registry: &Registry,
        events: &EventLog,
        now: DateTime<Utc>,
    ) -> Vec<TimeDelta> {
        let liveness = &registry.liveness;
        let mut lags = Vec::new();
        let mut missed = Vec::new();
        // Two ticks ahead (a bucket is due a tick after its time; the next look may come late):
        // a service that will miss its deadline before the next look is taken now, so that in
        // a mass silence it is held `unreachable` before any reader can see it `down` (it is
        // filed again for its deadline otherwise).
        let ahead = TimeDelta::from_std(TICK).unwrap_or_default() * 2;
        let mut soon = Vec::new();
        for entry in self.due(now + ahead * 2) {
            let mut slot = entry.lock();
            slot.filed = false;
            if slot.deleted || slot.declared_down || slot.unreachable {
                continue;
            }
            if slot.watched.as_ref().is_some_and(|w| w.unreachable) {
                // Its database cannot be read: neither down nor up until it can; look again
                // in a second.
                slot.filed = true;
                drop(slot);
                self.watch(entry, now + TimeDelta::from_std(PAUSE).unwrap_or_default());
                continue;
            }
            if crate::liveness::is_stopped(&slot.record) {
                // It said it stops: no `down`, and a heartbeat brings it back with an `up`.
                slot.declared_down = true;
                slot.declared_suspect = false;
                continue;
            }
            let deadline = liveness.deadline(&slot.record);
            if now > deadline {
                lags.push(now - deadline);
                drop(slot);
                missed.push(entry);
                continue;
            }
            if deadline <= now + ahead
                && self.guard.rule.enabled
                && !slot.record.forced_down
                && slot.watched.is_none()
            {
                drop(slot);
                soon.push(entry);
                continue;
            }
            if let Some(count) = slot.flaps.settle(now, &liveness.flapping) {
                events.emit(crate::flapping::event(
                    &slot.record,
                    false,
                    count,
                    &liveness.flapping,
                    now,
                ));
            }
            if !slot.declared_suspect {
                // Not past its deadline: up unless forced down, which is never suspect.
                let judgement = registry.judge(&slot, now);
                if let (true, Some(phi)) = (judgement.suspect, judgement.suspicion) {
                    slot.declared_suspect = true;
                    let mut event = NewEvent::about(&slot.record, EventKind::Suspect, now);
                    event.last_seen = Some(judgement.last_seen);
                    event.reason = Some(format!(
                        "phi {phi:.1} >= {} after {:.2} s without a heartbeat",
                        liveness.phi_threshold,
                        seconds(judgement.age)
                    ));
                    events.emit(event);
                }
            }
            let at = next_visit(liveness, &slot, now).max(now);
            slot.filed = true;
            drop(slot);
            self.watch(entry, at);
        }
        if !missed.is_empty() || !soon.is_empty() {
            // Measured before any of them is declared: the silence they are part of.
            let mass = self.guard.mass_silence(registry, now);
            missed.append(&mut soon);
            for entry in missed {
                let mut slot = entry.lock();
                if slot.deleted || slot.declared_down || slot.unreachable || slot.filed {
                    continue;
                }
                // Looked at again under the lock: a heartbeat may have come since the due list
                // was taken (while the silence was measured).
                let deadline = liveness.deadline(&slot.record);
                // The guard holds Vigil's own services only: an admin's forced down is no
                // silence, and a watched service's database is read, not cut off.
                let holdable = !slot.record.forced_down && slot.watched.is_none();
                match mass {
                    Some(silence) if holdable && deadline <= now + ahead => {
                        slot.unreachable = true;
                        slot.declared_suspect = false;
                        drop(slot);
                        if let Some(event) = self.guard.hold(entry, silence, now) {
                            tracing::warn!(
                                silent = silence.silent,
                                of = silence.total,
                                "many services went silent together: holding them unreachable, not down (Vigil may be the one cut off)"
                            );
                            events.emit(event);
                        }
                    }
                    _ if now > deadline => {
                        for event in declare_down(registry, &mut slot, now, None) {
                            events.emit(event);
                        }
                    }
                    _ => {
                        // Not held, not past its deadline (or it beat meanwhile): looked at
                        // again at its next visit.
                        let at = next_visit(liveness, &slot, now).max(now);
                        slot.filed = true;
                        drop(slot);
                        self.watch(entry, at);
                    }
                }
            }
        }
        let mut declare =
            |slot: &mut Slot, reason: String| declare_down(registry, slot, now, Some(reason));
        let (tended, released) = self.guard.tend(now, &mut declare);
        for event in tended {
            events.emit(event);
        }
        for entry in released {
            self.file(liveness, &entry, now);
        }
        liveness.set_cut_off(self.guard.active());
        lags
    }
}

/// Declares `slot`'s service down at `now`: its `down` event (with `reason`, if any), and a
/// `flapping` event when that transition makes it flap.
pub fn declare_down(
    registry: &Registry,
    slot: &mut Slot,
    now: DateTime<Utc>,
    reason: Option<String>,
) -> Vec<NewEvent> {
    let liveness = &registry.liveness;
    slot.declared_down = true;
    slot.declared_suspect = false;
    slot.recovering = 0;
    let mut event = NewEvent::about(&slot.record, EventKind::Down, now);
    event.last_seen = Some(slot.record.updated_at.unwrap_or(slot.record.created_at));
    event.threshold_s = Some(liveness.down_time_s(&slot.record));
    let window = registry
        .maintenance
        .note(&slot.record.host, &slot.record.binary, now);
    event.reason = match (reason, window) {
        (Some(reason), Some(window)) => Some(format!("{reason} ({window})")),
        (reason, window) => reason.or(window),
    };
    let mut events = vec![event];
    if let Some(count) = slot.flaps.record(now, &liveness.flapping) {
        events.push(crate::flapping::event(
            &slot.record,
            true,
            count,
            &liveness.flapping,
            now,
        ));
    }
    events
}
