//! Watched OpenStack databases as a source of heartbeats: what one poll of a watch
//! ([`crate::watch::Step`]) does to the registry. The loop that polls is
//! [`crate::tasks::watch`].
//!
//! A watched service is a row of Cinder's or Nova's `services` table. It lives in memory only
//! (its database is the durable copy, read again at start-up) under an id of its own
//! ([`WatchState::id_of`]): `2^52 + (hash of the watch's name) * 2^32 + the row's id`, stable
//! across restarts, never one of Vigil's own (those count up from 1), and exact in JavaScript.
//! A row whose `report_count` went up is one heartbeat received now, on Vigil's clock; its
//! events (transitions, OpenStack's admin changes, removal) go through the detector's queue like
//! every other, so only the leader among replicas writes them. Vigil never writes to a watched
//! database, and refuses admin changes of watched services (`read_only_source`).

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;

use super::{admin_events, App, AppError};
use crate::model::{Beat, EventKind, NewEvent, RegistrationReason, ServiceRecord};
use crate::registry::Watched;
use crate::store::AdminChange;
use crate::watch::{openstack_state, Change, Poll, Step, WatchConfig, WatchKind, WatchedRow};

/// A watch as the server keeps it: its settings and whether it can read its database.
#[derive(Debug)]
pub struct WatchState {
    pub config: WatchConfig,
    pub name: Arc<str>,
    /// The high bits of its services' ids.
    tag: i64,
    status: Mutex<Status>,
}

#[derive(Debug, Default)]
struct Status {
    /// Why the last poll failed; `None` after a success.
    problem: Option<String>,
    /// Rows of the last successful poll.
    services: usize,
    /// A poll has succeeded since the start: rows new after it were really added.
    polled: bool,
}

/// One watch for `/readyz`.
#[derive(Debug, Clone)]
pub struct WatchStatus {
    pub name: String,
    pub kind: WatchKind,
    pub problem: Option<String>,
    pub services: usize,
}

/// Ids of watched services start here.
const WATCHED_IDS: i64 = 1 << 52;

impl WatchState {
    pub fn new(config: WatchConfig) -> WatchState {
        let name = config.name();
        // FNV-1a, 20 bits: stable across restarts and builds.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        WatchState {
            tag: (hash & 0xf_ffff) as i64,
            name: name.into(),
            config,
            status: Mutex::new(Status::default()),
        }
    }

    /// The Vigil id of the watched row `openstack_id`.
    pub fn id_of(&self, openstack_id: i64) -> i64 {
        WATCHED_IDS | (self.tag << 32) | (openstack_id & 0xffff_ffff)
    }

    /// Whether two watches would give their services the same ids.
    pub fn clashes_with(&self, other: &WatchState) -> bool {
        self.tag == other.tag
    }
}

/// Heartbeats seen before the observed cadence is trusted.
const CADENCE_BEATS: i64 = 3;

/// The `report_interval` a watched daemon is seen to run with: the time since its first
/// heartbeat seen over the `report_state` runs since (its `report_count`), once there are a
/// few (the polls' granularity spreads over them); `None` before.
fn observed_interval(slot: &mut crate::registry::Slot, now: DateTime<Utc>) -> Option<f64> {
    let count = slot.record.report_count;
    let watched = slot.watched.as_mut()?;
    let (since, from) = *watched.cadence_from.get_or_insert((now, count));
    let runs = count - from;
    (runs >= CADENCE_BEATS).then(|| {
        let seconds = crate::model::seconds(now - since) / runs as f64;
        ((seconds * 100.0).round() / 100.0).clamp(0.1, 3600.0)
    })
}

/// The `report_interval` of a watched daemon: the watch's setting, else OpenStack's default
/// until its cadence is observed.
fn report_interval(config: &WatchConfig) -> f64 {
    config
        .report_interval
        .unwrap_or(vigil_proto::DEFAULT_REPORT_INTERVAL)
}

impl App {
    /// Each watch and whether it can read its database.
    pub fn watch_status(&self) -> Vec<WatchStatus> {
        self.watches
            .iter()
            .map(|watch| {
                let status = watch.status.lock();
                WatchStatus {
                    name: watch.name.to_string(),
                    kind: watch.config.kind,
                    problem: status.problem.clone(),
                    services: status.services,
                }
            })
            .collect()
    }

    /// 409 `read_only_source` for a watched service: its OpenStack owns it.
    pub(super) fn refuse_if_watched(&self, id: i64, deleting: bool) -> Result<(), AppError> {
        let Some(entry) = self.registry.get(id) else {
            return Ok(());
        };
        let slot = entry.lock();
        let Some(watched) = &slot.watched else {
            return Ok(());
        };
        let (host, binary) = (slot.record.host.to_string(), slot.record.binary.to_string());
        let command = match (watched.kind, deleting) {
            (WatchKind::Cinder, false) => format!(
                "openstack volume service set --enable|--disable [--disable-reason REASON] {host} {binary}"
            ),
            (WatchKind::Cinder, true) => format!("cinder-manage service remove {binary} {host}"),
            (WatchKind::Nova, false) => format!(
                "openstack compute service set --enable|--disable [--disable-reason REASON] [--up|--down] {host} {binary}"
            ),
            (WatchKind::Nova, true) => format!(
                "openstack compute service delete {}",
                watched.openstack_id
            ),
        };
        Err(AppError::ReadOnlySource {
            host,
            binary,
            watch: watched.source.to_string(),
            command,
        })
    }

    /// Takes one successful poll of `watch`: new rows, heartbeats, OpenStack's admin changes,
    /// removed rows, and OpenStack's own verdict on every row.
    pub fn apply_watch(&self, watch: &WatchState, step: &Step) {
        let now = self.clock.now();
        let poll = &step.poll;
        // The watched database's clock to Vigil's: both read at this poll.
        let shift = now - poll.db_now;
        let announce = watch.status.lock().polled;
        for change in &step.changes {
            match change {
                Change::New { row } => self.watched_new(watch, row, poll, now, shift, announce),
                Change::Heartbeat {
                    id,
                    report_count,
                    clock_offset,
                    ..
                } => {
                    let id = watch.id_of(*id);
                    let Some(outcome) = self.registry.heartbeat(id, &Beat::default(), now) else {
                        continue;
                    };
                    let Some(entry) = self.registry.get(id) else {
                        continue;
                    };
                    {
                        let mut slot = entry.lock();
                        // OpenStack's own count, however many beats one poll held.
                        slot.record.report_count = *report_count;
                        if watch.config.report_interval.is_none() {
                            if let Some(observed) = observed_interval(&mut slot, now) {
                                slot.record.report_interval = observed;
                            }
                        }
                        if let Some(offset) = clock_offset {
                            // The middle of the interval the true offset lies in, and its half.
                            let (low, high) = (offset.low_s(), offset.high_s());
                            slot.stats
                                .set_clock_offset((low + high) / 2.0, Some((high - low) / 2.0));
                        }
                    }
                    if outcome.revived {
                        let event = NewEvent::about(&entry.lock().record, EventKind::Up, now);
                        self.events.emit(event);
                    }
                    if outcome.revived || outcome.reachable_again {
                        self.detector.file(&self.registry.liveness, &entry, now);
                    }
                }
                Change::Admin {
                    id,
                    after,
                    modified_at,
                    ..
                } => {
                    let Some(entry) = self.registry.get(watch.id_of(*id)) else {
                        continue;
                    };
                    let change = AdminChange {
                        disabled: Some(after.disabled),
                        disabled_reason: Some(after.disabled_reason.clone()),
                        forced_down: Some(after.forced_down),
                        frozen: Some(after.frozen),
                    };
                    let mut slot = entry.lock();
                    // Made in OpenStack, by someone Vigil cannot know: the watch that saw it
                    // is the actor; the reason is OpenStack's own.
                    let actor = crate::model::Actor {
                        name: Some(format!("watch:{}", watch.name)),
                        address: None,
                    };
                    for event in admin_events(&slot.record, &change, now) {
                        self.events.emit(event.by(&actor));
                    }
                    let record = &mut slot.record;
                    record.disabled = after.disabled;
                    record.set_disabled_reason(after.disabled_reason.clone());
                    record.forced_down = after.forced_down;
                    record.frozen = after.frozen;
                    record.set_modified_at(Some(modified_at.map_or(now, |at| at + shift)));
                    drop(slot);
                    self.detector.file(&self.registry.liveness, &entry, now);
                }
                Change::Removed { row } => {
                    if let Some(entry) = self.registry.remove(watch.id_of(row.id)) {
                        let mut event =
                            NewEvent::about(&entry.lock().record, EventKind::Deleted, now);
                        event.reason = Some(format!("removed from {}", watch.name));
                        event.actor = Some(format!("watch:{}", watch.name));
                        self.events.emit(event);
                    }
                }
                Change::CountReset { id, to, .. } => {
                    if let Some(entry) = self.registry.get(watch.id_of(*id)) {
                        entry.lock().record.report_count = *to;
                    }
                }
            }
        }
        let service_down_time = watch.config.openstack_service_down_time();
        let recovered = watch.status.lock().problem.is_some();
        for row in &poll.rows {
            let Some(entry) = self.registry.get(watch.id_of(row.id)) else {
                continue;
            };
            let verdict = openstack_state(watch.config.kind, row, poll.db_now, service_down_time);
            let mut slot = entry.lock();
            if let Some(watched) = slot.watched.as_mut() {
                watched.openstack_state = verdict;
                watched.unreachable = false;
            }
        }
        let mut status = watch.status.lock();
        status.problem = None;
        status.services = poll.rows.len();
        status.polled = true;
        drop(status);
        if recovered {
            tracing::info!(watch = %watch.name, "watched database readable again");
        }
    }

    /// A row seen for the first time: into memory, last seen as long ago as its own stamp
    /// says on its database's clock (so a service dead for an hour is down at once, and a
    /// writer whose clock is ahead is not taken for one that beat in the future).
    fn watched_new(
        &self,
        watch: &WatchState,
        row: &WatchedRow,
        poll: &Poll,
        now: DateTime<Utc>,
        shift: TimeDelta,
        announce: bool,
    ) {
        let stamp = match watch.config.kind {
            WatchKind::Cinder => row.updated_at.or(row.created_at),
            WatchKind::Nova => row.last_seen_up.or(row.updated_at).or(row.created_at),
        };
        let age = stamp.map_or(TimeDelta::zero(), |stamp| {
            (poll.db_now - stamp).max(TimeDelta::zero())
        });
        let record = ServiceRecord {
            id: watch.id_of(row.id),
            host: row.host.as_str().into(),
            binary: row.binary.as_str().into(),
            topic: row.topic.as_deref().map(Into::into),
            zone: row
                .availability_zone
                .as_deref()
                .filter(|zone| !zone.is_empty())
                .unwrap_or(&self.config.default_zone)
                .into(),
            disabled: row.disabled,
            forced_down: row.forced_down,
            frozen: row.frozen,
            report_count: row.report_count,
            report_interval: report_interval(&watch.config),
            version: row.version.map(|v| v.to_string().into()),
            created_at: row.created_at.map_or(now, |at| (at + shift).min(now)),
            updated_at: stamp.map(|_| now - age),
            health: None,
            service_down_time: None,
            row_version: 0,
            notes: None,
        }
        .with_notes(
            row.disabled_reason.clone(),
            None,
            row.modified_at.map(|at| at + shift),
            None,
        );
        let watched = Watched {
            source: watch.name.clone(),
            kind: watch.config.kind,
            openstack_id: row.id,
            openstack_state: openstack_state(
                watch.config.kind,
                row,
                poll.db_now,
                watch.config.openstack_service_down_time(),
            ),
            unreachable: false,
            cadence_from: None,
        };
        let Some(entry) = self.registry.insert_watched(record, watched) else {
            return;
        };
        if announce {
            let mut event = NewEvent::about(&entry.lock().record, EventKind::Registered, now);
            event.reason = Some(RegistrationReason::NewService.as_str().into());
            self.events.emit(event);
        }
        self.detector.file(&self.registry.liveness, &entry, now);
    }

    /// A poll of `watch` failed: its services are unknown (not down) until one succeeds.
    pub fn watch_failed(&self, watch: &WatchState, problem: String) {
        let mut status = watch.status.lock();
        let first = status.problem.is_none();
        status.problem = Some(problem);
        drop(status);
        if first {
            for entry in self.registry.entries() {
                let mut slot = entry.lock();
                if let Some(watched) = slot.watched.as_mut() {
                    if watched.source == watch.name {
                        watched.unreachable = true;
                    }
                }
            }
        }
    }
}
