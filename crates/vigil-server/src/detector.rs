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
//! [`watch_pauses`] notices the process's own pauses (a stopped VM, a SIGSTOP): a wake-up
//! more than a second late opens a grace period (see [`crate::liveness`]) instead of declaring every
//! service whose heartbeats were held up meanwhile down at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::app::App;
use crate::registry::{seconds, Entry};
use crate::store::{EventKind, NewEvent};

/// Width of a wheel bucket, and the detector's tick.
pub const TICK: Duration = Duration::from_millis(100);

/// Services to look at, by bucket.
#[derive(Default)]
pub struct Detector {
    wheel: Mutex<BTreeMap<i64, Vec<Arc<Entry>>>>,
    stalls: StallWatch,
}

/// When this process was last seen running, on the monotonic and the local wall clock.
struct StallWatch {
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
    /// since anyone last looked. Checked every [`TICK`] by [`watch_pauses`], which waits on
    /// nothing but a timer, and by the detector before each tick, so that no down is declared
    /// before a stall is noticed; a detector that was itself waiting for the database sees
    /// the watch's recent look, not a stall.
    fn check(&self, app: &App) {
        let mono = std::time::Instant::now();
        let wall = app.clock.local_now();
        let away = {
            let mut last = self.last.lock();
            let by_wall = (wall - last.1).to_std().unwrap_or_default();
            let away = mono.saturating_duration_since(last.0).max(by_wall);
            *last = (mono, wall);
            away
        };
        if away > TICK + PAUSE {
            let now = app.clock.now();
            let since = now - TimeDelta::from_std(away).unwrap_or_default();
            tracing::warn!(
                paused_s = away.as_secs_f64(),
                "the server stalled (paused process, stopped VM, clock stepped); services get a grace period before they count as down"
            );
            app.registry.liveness.set_gap(since, now);
        }
    }
}

fn bucket(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
        .div_euclid(TICK.as_micros() as i64)
        .saturating_add(1)
}

impl Detector {
    /// Files `entry` unless it is already filed, declared down (a heartbeat files it again)
    /// or deleted.
    pub fn file(&self, app: &App, entry: &Arc<Entry>) {
        if !app.is_leader() {
            return;
        }
        let at = {
            let mut slot = entry.lock();
            if slot.filed || slot.declared_down || slot.deleted {
                return;
            }
            slot.filed = true;
            next_visit(app, &slot, app.clock.now())
        };
        self.watch(entry.clone(), at);
    }

    /// Files `entry` to be looked at at `at`; the caller has set its `filed` flag.
    fn watch(&self, entry: Arc<Entry>, at: DateTime<Utc>) {
        self.wheel.lock().entry(bucket(at)).or_default().push(entry);
    }

    /// Forgets every filing and declaration (leadership lost or about to be rebuilt).
    pub fn clear(&self, app: &App) {
        self.wheel.lock().clear();
        for entry in app.registry.entries() {
            let mut slot = entry.lock();
            slot.filed = false;
            slot.declared_down = false;
            slot.declared_suspect = false;
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
pub fn next_visit(app: &App, slot: &crate::registry::Slot, now: DateTime<Utc>) -> DateTime<Utc> {
    let deadline = app.registry.liveness.deadline(&slot.record);
    if slot.declared_suspect || slot.record.forced_down {
        return deadline;
    }
    let last_seen = slot.record.updated_at.unwrap_or(slot.record.created_at);
    match slot
        .stats
        .suspect_after(app.registry.liveness.phi_threshold)
    {
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

/// Starts detection where the history left each service: a service whose latest transition
/// is `down` stays declared down (no second `down`), every other one is filed, so that one
/// that died while nobody was watching gets its `down` now, once.
pub async fn prime(app: &App) -> crate::store::StoreResult<()> {
    let down: std::collections::HashSet<i64> = app
        .store
        .last_transitions()
        .await?
        .into_iter()
        .filter(|(_, kind)| *kind == EventKind::Down)
        .map(|(id, _)| id)
        .collect();
    app.detector.clear(app);
    for entry in app.registry.entries() {
        entry.lock().declared_down = down.contains(&entry.id);
        app.detector.file(app, &entry);
    }
    Ok(())
}

/// Looks at every due entry: declares the ones past their deadline down, flags new suspects,
/// files the rest again.
pub fn tick(app: &App, now: DateTime<Utc>) {
    let liveness = &app.registry.liveness;
    for entry in app.detector.due(now) {
        let mut slot = entry.lock();
        slot.filed = false;
        if slot.deleted || slot.declared_down {
            continue;
        }
        let deadline = liveness.deadline(&slot.record);
        if now > deadline {
            app.metrics.detected(now - deadline);
            slot.declared_down = true;
            slot.declared_suspect = false;
            let mut event = NewEvent::about(&slot.record, EventKind::Down, now);
            event.last_seen = Some(slot.record.updated_at.unwrap_or(slot.record.created_at));
            event.threshold_s = Some(liveness.service_down_time_s());
            app.events.emit(event);
            continue;
        }
        let last_seen = slot.record.updated_at.unwrap_or(slot.record.created_at);
        if !slot.declared_suspect {
            if let Some(phi) = slot.stats.phi(now, last_seen) {
                if phi >= liveness.phi_threshold && !slot.record.forced_down {
                    slot.declared_suspect = true;
                    let mut event = NewEvent::about(&slot.record, EventKind::Suspect, now);
                    event.last_seen = Some(last_seen);
                    event.reason = Some(format!(
                        "phi {phi:.1} >= {} after {:.2} s without a heartbeat",
                        liveness.phi_threshold,
                        seconds(now - last_seen)
                    ));
                    app.events.emit(event);
                }
            }
        }
        let at = next_visit(app, &slot, now).max(now);
        slot.filed = true;
        drop(slot);
        app.detector.watch(entry, at);
    }
}

/// A wake-up this late means the process stopped watching.
const PAUSE: Duration = Duration::from_secs(1);

/// Notices this process's stalls (a stopped VM, SIGSTOP, a starved runtime) and the local
/// clock jumping forward, and opens a grace period for each (see [`crate::liveness`]).
///
/// A task of its own that waits on nothing but a timer: the detector's loop also waits for the
/// database, and a slow database is not a stalled process (that mistake opened a grace period
/// after every outage and delayed real downs). Both the monotonic clock (which runs through a
/// SIGSTOP) and the local wall clock (which also runs through a suspended machine) are watched.
pub async fn watch_pauses(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        app.detector.stalls.check(&app);
    }
}

/// How often a follower tries to take over detection, and a leader checks its lease.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// Leads detection whenever this server can: takes the lease (at once, alone on a database;
/// among replicas, when no other holds it), starts from the history, and runs [`tick`] every
/// [`TICK`] while the lease holds, until `shutdown`.
pub async fn run(
    app: Arc<App>,
    mut queue: mpsc::UnboundedReceiver<NewEvent>,
    retry: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut warned = false;
    loop {
        // Nothing queued while not leading is ours to write.
        while queue.try_recv().is_ok() {}
        let lease = match app.store.try_lead().await {
            Ok(Some(lease)) => Some(lease),
            Ok(None) => None,
            Err(err) => {
                if !warned {
                    tracing::warn!(error = %err, "cannot reach the database to lead detection");
                    warned = true;
                }
                None
            }
        };
        let Some(mut lease) = lease else {
            tokio::select! {
                _ = tokio::time::sleep(retry.min(LEASE_CHECK)) => continue,
                _ = shutdown.changed() => return,
            }
        };
        warned = false;
        app.leader.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(err) = prime(&app).await {
            app.leader
                .store(false, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %err, "cannot read the history to start detection");
            tokio::select! {
                _ = tokio::time::sleep(retry) => continue,
                _ = shutdown.changed() => return,
            }
        }
        if app.store.shared() {
            tracing::info!("this replica leads detection");
        }
        let stopped = lead(&app, lease.as_mut(), &mut queue, &mut shutdown).await;
        app.leader
            .store(false, std::sync::atomic::Ordering::Relaxed);
        app.detector.clear(&app);
        if stopped {
            return;
        }
        tracing::warn!("lost the lead of detection; another replica takes over");
    }
}

/// Ticks while the lease holds, writing the transitions found; `true` when stopped by
/// `shutdown` (after writing what is queued).
async fn lead(
    app: &App,
    lease: &mut dyn crate::store::Lease,
    queue: &mut mpsc::UnboundedReceiver<NewEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checked = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {
                write_queued(app, lease, queue).await;
                return true;
            }
        }
        app.detector.stalls.check(app);
        tick(app, app.clock.now());
        if !write_queued(app, lease, queue).await {
            return false;
        }
        if checked.elapsed() >= LEASE_CHECK {
            if !lease.holds().await {
                return false;
            }
            checked = std::time::Instant::now();
        }
    }
}

/// Longest wait for the transitions of one tick to be written.
const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Writes the queued transitions through the lease. `false` when that failed: the lease can
/// no longer be trusted, so they are dropped and the lead given up; whoever leads next
/// derives them again from the history and the table (a service past its deadline whose
/// latest event is not `down` gets its `down`), so none is lost and none written twice.
async fn write_queued(
    app: &App,
    lease: &mut dyn crate::store::Lease,
    queue: &mut mpsc::UnboundedReceiver<NewEvent>,
) -> bool {
    let mut batch = Vec::new();
    while let Ok(event) = queue.try_recv() {
        batch.push(event);
    }
    if batch.is_empty() {
        return true;
    }
    let failure = match tokio::time::timeout(WRITE_LIMIT, lease.append_events(&batch)).await {
        Ok(Ok(())) => {
            app.metrics.written(batch.iter().map(|e| e.kind));
            app.events.notify();
            return true;
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => format!("no answer within {WRITE_LIMIT:?}"),
    };
    tracing::warn!(
        error = %failure,
        dropped = batch.len(),
        "cannot write transitions under the detection lease; giving up the lead to start again from the history"
    );
    false
}
