//! The in-memory table of services: the hot path.
//!
//! A heartbeat touches one entry under its own lock and marks it dirty; nothing else. The
//! flusher later writes every dirty entry in one transaction, so the database sees at most one
//! write per service per `flush_interval`, however fast services beat. Reads (lists, detail,
//! detection) come from here too, so they show the newest heartbeat, not the last flush.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};

use crate::id_table::IdTable;
use crate::liveness::Liveness;
use crate::model::{BeatFlush, Health, Name, ServiceRecord, Symbol};
use crate::stats::BeatStats;
use crate::watch::{OpenstackState, WatchKind};

/// One service in memory. (Its id is its record's: ten million copies of it beside the
/// record would cost 16 bytes a service with malloc's rounding, see the size test below.)
pub struct Entry {
    slot: Mutex<Slot>,
}

/// The mutable part of an [`Entry`].
pub struct Slot {
    pub record: ServiceRecord,
    /// Heartbeats received since the last flush.
    pub pending_beats: i64,
    /// Zone and health changes received since the last flush: rare, so out of line.
    pub pending: Option<Box<PendingChange>>,
    /// Queued for the flusher.
    pub dirty: bool,
    /// Removed from the table; a late flush must skip it.
    pub deleted: bool,
    /// What the detector last declared.
    pub declared_down: bool,
    /// Crossed the suspicion threshold while up (an event is sent once per crossing).
    pub declared_suspect: bool,
    /// Past its deadline while many services went silent together: held `unreachable` by the
    /// partition guard ([`crate::guard`]) rather than declared down, until it beats again.
    pub unreachable: bool,
    /// Declared down, and this many on-time heartbeats since, short of the
    /// `up_after_beats` that bring it back up (0: not recovering).
    pub recovering: u8,
    /// Filed in the detector's wheel.
    pub filed: bool,
    /// Heartbeat timing, for suspicion and diagnosis.
    pub stats: BeatStats,
    /// Recent up/down transitions, for flapping (counted by the leader of detection).
    pub flaps: crate::flapping::Flaps,
    /// A row of a watched OpenStack database (`None`: registered with Vigil). Such a service
    /// lives in memory only: its database is the durable copy, read again at start-up.
    pub watched: Option<Box<Watched>>,
}

/// A zone or health that a heartbeat changed since the last flush.
#[derive(Debug, Default)]
pub struct PendingChange {
    pub zone: Option<String>,
    /// The health and its message.
    pub health: Option<(Health, Option<String>)>,
}

/// What a watched service has that Vigil's own do not.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// The watch's name: the service's `source`.
    pub source: Arc<str>,
    pub kind: WatchKind,
    /// The row's id in the watched table.
    pub openstack_id: i64,
    /// OpenStack's own verdict at the last poll.
    pub openstack_state: OpenstackState,
    /// The watch cannot read its database now: the service's state is unknown, not down.
    pub unreachable: bool,
    /// When a heartbeat was first seen and `report_count` then: the observed cadence since,
    /// for a watch that is not told its `report_interval`.
    pub cadence_from: Option<(DateTime<Utc>, i64)>,
}

impl Entry {
    /// Its id (takes its lock: not while holding it).
    pub fn id(&self) -> i64 {
        self.slot.lock().record.id
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, Slot> {
        self.slot.lock()
    }
}

pub use crate::model::Beat;

/// Result of a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatOutcome {
    pub report_count: i64,
    /// The beat revived a service the detector had declared down.
    pub revived: bool,
    /// The beat came from a service the partition guard held unreachable.
    pub reachable_again: bool,
    /// Gap since the previous beat minus `report_interval`, seconds (`None` for the first).
    pub lateness_s: Option<f64>,
    /// The beat changed the service's health: from what (`None`: never reported) to what.
    pub health_changed: Option<(Option<Health>, Health)>,
    /// The `service_down_time` that judges the service, seconds.
    pub service_down_time_s: f64,
}

/// Filters of a list; all are ANDed.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub host: Option<String>,
    pub binary: Option<String>,
    pub zone: Option<String>,
    pub state: Option<vigil_proto::State>,
    pub status: Option<vigil_proto::Status>,
    /// `vigil`, or a watch's name.
    pub source: Option<String>,
    /// Text that the host, binary, zone, topic, version or disabled reason contains (ASCII
    /// letters in either case).
    pub text: Option<String>,
}

#[derive(Default)]
struct Table {
    by_id: IdTable<Arc<Entry>>,
    /// host → binary → id: finds a service by its key, and lists one host without a scan. A
    /// watched service's key is its binary, a NUL and its source ([`index_key`]), so it never
    /// takes the key of Vigil's own service of the same host and binary.
    by_host: HashMap<Name, Binaries>,
}

/// One host's services in `by_host`: binary (or watched key) → id, sorted by key. A sorted
/// vector rather than a `BTreeMap`: a host runs a handful of services, and a B-tree's first
/// node holds room for eleven (about 370 bytes a host, against 16 bytes a service here).
#[derive(Default)]
struct Binaries(Vec<(Symbol, i64)>);

impl Binaries {
    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(known, _)| known.as_str().cmp(key))
    }

    fn get(&self, key: &str) -> Option<&i64> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    fn insert(&mut self, key: Symbol, id: i64) {
        match self.position(&key) {
            Ok(i) => self.0[i].1 = id,
            Err(i) => self.0.insert(i, (key, id)),
        }
    }

    fn remove(&mut self, key: &str) {
        if let Ok(i) = self.position(key) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries whose key is `from` or after it, in key order.
    fn from(&self, from: &str) -> impl Iterator<Item = (&Symbol, &i64)> {
        let start = self.position(from).unwrap_or_else(|i| i);
        self.0[start..].iter().map(|(key, id)| (key, id))
    }

    fn values(&self) -> impl Iterator<Item = &i64> {
        self.0.iter().map(|(_, id)| id)
    }
}

/// A slot's key in `by_host`'s binaries.
fn index_key(record: &ServiceRecord, watched: Option<&Watched>) -> Symbol {
    match watched {
        None => record.binary.clone(),
        Some(watched) => Symbol::new(&format!("{}\0{}", record.binary, watched.source)),
    }
}

/// The in-memory registry.
pub struct Registry {
    table: RwLock<Table>,
    dirty: Mutex<Vec<Arc<Entry>>>,
    pub liveness: Liveness,
    /// The maintenance windows that hold (see [`crate::maintenance`]).
    pub maintenance: crate::maintenance::Windows,
}

impl Registry {
    pub fn new(records: Vec<ServiceRecord>, liveness: Liveness) -> Registry {
        let registry = Registry {
            table: RwLock::new(Table::default()),
            dirty: Mutex::new(Vec::new()),
            liveness,
            maintenance: crate::maintenance::Windows::default(),
        };
        registry.insert_loaded(records);
        registry
    }

    /// Files services read at start-up (a page of them, in id order: filed in any order they
    /// would be found, but ids below the first one filed would go to the table's map).
    pub fn insert_loaded(&self, records: Vec<ServiceRecord>) {
        let mut table = self.table.write();
        for record in records {
            Self::insert_into(&mut table, record, None);
        }
    }

    fn insert_into(
        table: &mut Table,
        record: ServiceRecord,
        watched: Option<Box<Watched>>,
    ) -> Arc<Entry> {
        let id = record.id;
        let key = index_key(&record, watched.as_deref());
        let binaries = table.by_host.entry(record.host.clone()).or_default();
        // Never point the key back at an older (deleted) service.
        if binaries.get(&key).is_none_or(|known| *known < id) {
            binaries.insert(key, id);
        }
        let entry = Arc::new(Entry {
            slot: Mutex::new(Slot {
                record,
                pending_beats: 0,
                pending: None,
                dirty: false,
                deleted: false,
                declared_down: false,
                declared_suspect: false,
                unreachable: false,
                recovering: 0,
                filed: false,
                stats: BeatStats::default(),
                flaps: crate::flapping::Flaps::default(),
                watched,
            }),
        });
        table.by_id.insert(id, entry.clone());
        entry
    }

    /// Number of services.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.table.read().by_id.len()
    }

    pub fn get(&self, id: i64) -> Option<Arc<Entry>> {
        self.table.read().by_id.get(id).cloned()
    }

    /// The service (host, binary): Vigil's own when there is one, else a watched one (whose
    /// key is the binary, a NUL and its source).
    pub fn find(&self, host: &str, binary: &str) -> Option<Arc<Entry>> {
        let table = self.table.read();
        let binaries = table.by_host.get(host)?;
        let id = binaries.get(binary).or_else(|| {
            let watched = format!("{binary}\0");
            binaries
                .from(&watched)
                .next()
                .filter(|(key, _)| key.starts_with(&watched))
                .map(|(_, id)| id)
        })?;
        table.by_id.get(*id).cloned()
    }

    /// Puts a row just written to the database into memory. A row already known keeps the
    /// heartbeat fields memory owns (newer than the database's until the next flush).
    pub fn upsert(&self, record: ServiceRecord) -> Arc<Entry> {
        if let Some(entry) = self.get(record.id) {
            entry.lock().merge_stored(record);
            return entry;
        }
        let mut table = self.table.write();
        if let Some(entry) = table.by_id.get(record.id).cloned() {
            drop(table);
            entry.lock().merge_stored(record);
            return entry;
        }
        Self::insert_into(&mut table, record, None)
    }

    /// Puts a watched service into memory the first time its watch sees it; `None` when its
    /// id is taken already.
    pub fn insert_watched(&self, record: ServiceRecord, watched: Watched) -> Option<Arc<Entry>> {
        let mut table = self.table.write();
        if table.by_id.get(record.id).is_some() {
            return None;
        }
        Some(Self::insert_into(
            &mut table,
            record,
            Some(Box::new(watched)),
        ))
    }

    /// Forgets a service (deleted through this server or another replica).
    pub fn remove(&self, id: i64) -> Option<Arc<Entry>> {
        let mut table = self.table.write();
        let entry = table.by_id.remove(id)?;
        let mut slot = entry.lock();
        slot.deleted = true;
        let key = index_key(&slot.record, slot.watched.as_deref());
        if let Some(binaries) = table.by_host.get_mut(&slot.record.host) {
            // The key may already name a newer service (deleted and registered again).
            if binaries.get(&key) == Some(&id) {
                binaries.remove(&key);
            }
            if binaries.is_empty() {
                table.by_host.remove(&slot.record.host);
            }
        }
        drop(slot);
        Some(entry)
    }

    /// Applies one heartbeat received at `now` (server clock). `None` when the service is
    /// unknown here.
    pub fn heartbeat(&self, id: i64, beat: &Beat, now: DateTime<Utc>) -> Option<BeatOutcome> {
        self.heartbeat_entry(&self.get(id)?, beat, now)
    }

    /// [`Registry::heartbeat`] of an entry in hand; `None` when it was deleted meanwhile.
    pub fn heartbeat_entry(
        &self,
        entry: &Arc<Entry>,
        beat: &Beat,
        now: DateTime<Utc>,
    ) -> Option<BeatOutcome> {
        let mut slot = entry.lock();
        if slot.deleted {
            return None;
        }
        let previous = slot.record.updated_at;
        let lateness_s = previous.map(|p| seconds(now - p) - slot.record.report_interval);
        let was_stopped = crate::liveness::is_stopped(&slot.record);
        slot.stats.record_beat(previous, now, beat);
        slot.record.updated_at = Some(now);
        slot.record.report_count += 1;
        slot.pending_beats += 1;
        if let Some(zone) = beat.zone.as_ref().filter(|z| !z.is_empty()) {
            if *zone != slot.record.zone {
                slot.record.zone = zone.as_str().into();
                slot.pending_change().zone = Some(zone.clone());
            }
        }
        let mut health_changed = None;
        if let Some(health) = beat.health {
            let message = beat.message.clone();
            if slot.record.health != Some(health) {
                health_changed = Some((slot.record.health, health));
            }
            if slot.record.health != Some(health)
                || slot.record.health_message() != message.as_deref()
            {
                slot.record.health = Some(health);
                slot.record.set_health_message(message.clone());
                slot.pending_change().health = Some((health, message));
            }
        }
        slot.declared_suspect = false;
        // Held by the partition guard: it was never down, so it is simply up again.
        let reachable_again = std::mem::take(&mut slot.unreachable);
        let mut revived = slot.declared_down && !slot.record.forced_down;
        if revived && !was_stopped && self.liveness.up_after_beats > 1 {
            // Hysteresis: up again only after `up_after_beats` on-time beats in a row; a beat
            // later than half an interval starts the count again.
            let on_time = slot.recovering == 0
                || lateness_s.is_none_or(|late| late <= slot.record.report_interval / 2.0);
            slot.recovering = if on_time {
                slot.recovering.saturating_add(1)
            } else {
                1
            };
            revived = u32::from(slot.recovering) >= self.liveness.up_after_beats;
        }
        if revived {
            slot.declared_down = false;
            slot.recovering = 0;
        }
        let report_count = slot.record.report_count;
        let service_down_time_s = self.liveness.down_time_s(&slot.record);
        // A watched service's heartbeats are its own database's to keep.
        if !slot.dirty && slot.watched.is_none() {
            slot.dirty = true;
            drop(slot);
            self.dirty.lock().push(entry.clone());
        }
        Some(BeatOutcome {
            report_count,
            revived,
            reachable_again,
            lateness_s,
            health_changed,
            service_down_time_s,
        })
    }

    /// Takes every dirty entry's pending heartbeats for one flush.
    pub fn take_dirty(&self) -> Vec<BeatFlush> {
        let entries = std::mem::take(&mut *self.dirty.lock());
        let mut batch = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut slot = entry.lock();
            slot.dirty = false;
            if slot.deleted || slot.pending_beats == 0 {
                continue;
            }
            let Some(updated_at) = slot.record.updated_at else {
                continue;
            };
            let change = slot.pending.take().map(|change| *change);
            let (zone, health) = change.map_or((None, None), |c| (c.zone, c.health));
            batch.push(BeatFlush {
                id: slot.record.id,
                updated_at,
                report_count_delta: std::mem::take(&mut slot.pending_beats),
                zone,
                health,
            });
        }
        // In id order, the database walks its primary key once from left to right instead of
        // seeking each row from the root.
        batch.sort_unstable_by_key(|beat| beat.id);
        batch
    }

    /// Puts back a batch whose flush failed, so that the next flush writes it.
    pub fn restore_dirty(&self, batch: Vec<BeatFlush>) {
        for beat in batch {
            let Some(entry) = self.get(beat.id) else {
                continue;
            };
            let mut slot = entry.lock();
            slot.pending_beats += beat.report_count_delta;
            if beat.zone.is_some() || beat.health.is_some() {
                let change = slot.pending_change();
                if change.zone.is_none() {
                    change.zone = beat.zone;
                }
                if change.health.is_none() {
                    change.health = beat.health;
                }
            }
            if !slot.dirty {
                slot.dirty = true;
                drop(slot);
                self.dirty.lock().push(entry.clone());
            }
        }
    }

    /// Every entry matching `filter`, in id order, with its API view at `now`.
    pub fn list(&self, filter: &ListFilter, now: DateTime<Utc>) -> Vec<vigil_proto::Service> {
        self.candidates(filter)
            .iter()
            .filter_map(|entry| {
                let slot = entry.lock();
                self.passes(&slot, filter, now)
                    .then(|| self.view(&slot, now))
            })
            .collect()
    }

    /// The entries that `filter.host` (with `filter.binary`) selects through the index, in id
    /// order; every entry without a host. The rest of the filter is [`Registry::passes`]'s,
    /// so that a large list can be viewed and sent a piece at a time.
    pub fn candidates(&self, filter: &ListFilter) -> Vec<Arc<Entry>> {
        let table = self.table.read();
        match &filter.host {
            Some(host) => match table.by_host.get(host.as_str()) {
                Some(binaries) => {
                    let mut ids: Vec<i64> = match &filter.binary {
                        // Vigil's own key, then the watched ones (the binary, a NUL, a source).
                        Some(binary) => binaries
                            .from(binary)
                            .take_while(|(key, _)| {
                                key.strip_prefix(binary.as_str())
                                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('\0'))
                            })
                            .map(|(_, id)| *id)
                            .collect(),
                        None => binaries.values().copied().collect(),
                    };
                    ids.sort_unstable();
                    ids.iter()
                        .filter_map(|id| table.by_id.get(*id).cloned())
                        .collect()
                }
                None => Vec::new(),
            },
            None => table.by_id.values().cloned().collect(),
        }
    }

    /// Whether `slot` passes `filter` at `now` (a candidate's remaining tests).
    pub fn passes(&self, slot: &Slot, filter: &ListFilter, now: DateTime<Utc>) -> bool {
        let record = &slot.record;
        !(filter.binary.as_ref().is_some_and(|b| *b != record.binary)
            || filter.zone.as_ref().is_some_and(|z| *z != record.zone)
            || filter
                .state
                .is_some_and(|s| s != self.judge(slot, now).state())
            || filter.status.is_some_and(|s| s != status(record))
            || filter.source.as_ref().is_some_and(|s| s != source(slot))
            || filter.text.as_ref().is_some_and(|t| !mentions(record, t)))
    }

    /// What `slot`'s service is at `now`: the one judgement every view reads (the list's
    /// filter, the detail, the list's JSON writer, the Cinder API).
    pub fn judge(&self, slot: &Slot, now: DateTime<Utc>) -> Judgement {
        let record = &slot.record;
        let last_seen = record.updated_at.unwrap_or(record.created_at);
        // Declared down and recovering: down until enough on-time beats came.
        let up = self.liveness.is_up(record, now) && slot.recovering == 0;
        let suspicion = slot.stats.phi(now, last_seen);
        Judgement {
            unknown: slot.watched.as_ref().is_some_and(|w| w.unreachable),
            // An admin's forced down wins over the guard's doubt. In a mass failure, one past
            // its deadline that the detector has not reached yet will be held: unreachable.
            unreachable: !record.forced_down
                && (slot.unreachable
                    || (!up
                        && !slot.declared_down
                        && slot.watched.is_none()
                        && self.liveness.cut_off()
                        && !crate::liveness::is_stopped(record))),
            stopped: !record.forced_down && crate::liveness::is_stopped(record),
            up,
            suspect: up && suspicion.is_some_and(|phi| phi >= self.liveness.phi_threshold),
            suspicion,
            last_seen,
            age: now - last_seen,
            in_maintenance: self.maintenance.covers(&record.host, &record.binary, now),
        }
    }

    /// The API view of one slot at `now`.
    pub fn view(&self, slot: &Slot, now: DateTime<Utc>) -> vigil_proto::Service {
        let record = &slot.record;
        let judgement = self.judge(slot, now);
        vigil_proto::Service {
            id: record.id,
            host: record.host.to_string(),
            binary: record.binary.to_string(),
            topic: record.topic.as_ref().map(|t| t.to_string()),
            zone: record.zone.to_string(),
            disabled: record.disabled,
            disabled_reason: record.disabled_reason().map(str::to_owned),
            forced_down: record.forced_down,
            frozen: record.frozen,
            report_count: record.report_count,
            report_interval: record.report_interval,
            version: record.version.as_ref().map(|v| v.to_string()),
            created_at: record.created_at,
            updated_at: record.updated_at,
            modified_at: record.modified_at(),
            state: judgement.state(),
            status: status(record),
            last_heartbeat_age_s: judgement.age_s(),
            suspect: judgement.suspect,
            suspicion: judgement.suspicion_shown(),
            source: source(slot).to_string(),
            openstack_state: slot.watched.as_ref().map(|w| match w.openstack_state {
                OpenstackState::Up => vigil_proto::State::Up,
                OpenstackState::Down => vigil_proto::State::Down,
            }),
            health: record.health.map(health_status),
            health_message: record.health_message().map(str::to_owned),
            service_down_time: Some(self.liveness.down_time_s(record)),
            flapping: slot.flaps.flapping(now, &self.liveness.flapping),
            recent_transitions: slot.flaps.count(now, &self.liveness.flapping) as u64,
            in_maintenance: judgement.in_maintenance,
            maintenance_reason: self.maintenance_reason(slot, &judgement, now),
        }
    }

    /// The reason of the maintenance window `slot`'s service is in at `now`, as judged.
    pub fn maintenance_reason(
        &self,
        slot: &Slot,
        judgement: &Judgement,
        now: DateTime<Utc>,
    ) -> Option<String> {
        if !judgement.in_maintenance {
            return None;
        }
        self.maintenance
            .find(&slot.record.host, &slot.record.binary, now)
            .map(|window| window.reason.clone())
    }

    /// At most about `max` entries spread evenly over the table (every one when there are no
    /// more than `max`), and how many there are in all: a survey of a large fleet without
    /// holding every entry.
    pub fn sample(&self, max: usize) -> (Vec<Arc<Entry>>, usize) {
        let table = self.table.read();
        let len = table.by_id.len();
        let step = len.div_ceil(max.max(1)).max(1);
        (table.by_id.values().step_by(step).cloned().collect(), len)
    }

    /// Every entry, for the detector and the diagnosis of all services.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.table.read().by_id.values().cloned().collect()
    }
}

impl Slot {
    /// The changes waiting for the next flush, made room for.
    fn pending_change(&mut self) -> &mut PendingChange {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Takes a row read from the database: its admin-owned fields as they are, the count as the
    /// database's plus the beats this server has not flushed yet, and the later heartbeat of
    /// the two (other replicas' beats arrive this way).
    fn merge_stored(&mut self, stored: ServiceRecord) {
        if stored.row_version < self.record.row_version {
            // Read before a write this server has already applied (a change-feed page racing
            // an admin change): the newer write stands.
            return;
        }
        let memory_zone = std::mem::take(&mut self.record.zone);
        let pending_zone = self.pending.as_ref().is_some_and(|c| c.zone.is_some());
        let memory_health = (
            self.record.health,
            self.record.health_message().map(str::to_owned),
        );
        let pending_health = self.pending.as_ref().is_some_and(|c| c.health.is_some());
        let (memory_updated, memory_count) = (self.record.updated_at, self.record.report_count);
        let (stored_updated, stored_count) = (stored.updated_at, stored.report_count);
        self.record = stored;
        self.record.updated_at = memory_updated;
        self.record.report_count = memory_count;
        self.merge_flushed(stored_updated, stored_count);
        if pending_zone {
            self.record.zone = memory_zone;
        }
        if pending_health {
            self.record.health = memory_health.0;
            self.record.set_health_message(memory_health.1);
        }
    }

    /// Takes heartbeat fields read from the database: the later heartbeat of the two, and the
    /// count as the database's plus the beats this server has not flushed yet.
    pub fn merge_flushed(&mut self, updated_at: Option<DateTime<Utc>>, report_count: i64) {
        self.record.updated_at = self.record.updated_at.max(updated_at);
        // A flush in flight is in neither the stored count nor `pending_beats`: never go back.
        self.record.report_count =
            (report_count + self.pending_beats).max(self.record.report_count);
    }
}

/// A signed duration in seconds.
pub use crate::model::seconds;

/// A service at one instant, as [`Registry::judge`] finds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// A watched service whose database cannot be read now: neither up nor down.
    pub unknown: bool,
    /// Held by the partition guard: past its deadline in a mass failure, neither up nor
    /// confirmed down.
    pub unreachable: bool,
    /// Said it stops, and has not heartbeated since (never when forced down: an admin's
    /// word wins).
    pub stopped: bool,
    /// The liveness rule ([`Liveness::is_up`]).
    pub up: bool,
    /// Up, but its suspicion crossed the threshold: likely down soon.
    pub suspect: bool,
    /// The phi-accrual suspicion, once enough heartbeats were seen.
    pub suspicion: Option<f64>,
    /// The server's receipt time of the newest heartbeat (or the creation before the first).
    pub last_seen: DateTime<Utc>,
    /// `now - last_seen`.
    pub age: chrono::TimeDelta,
    /// A maintenance window covers it: judged all the same, and said so.
    pub in_maintenance: bool,
}

impl Judgement {
    pub fn state(&self) -> vigil_proto::State {
        if self.unknown {
            vigil_proto::State::Unknown
        } else if self.stopped {
            vigil_proto::State::Stopped
        } else if self.unreachable {
            vigil_proto::State::Unreachable
        } else if self.up {
            vigil_proto::State::Up
        } else {
            vigil_proto::State::Down
        }
    }

    pub fn age_s(&self) -> f64 {
        seconds(self.age)
    }

    /// The suspicion as the API shows it: two decimals.
    pub fn suspicion_shown(&self) -> Option<f64> {
        self.suspicion.map(|phi| (phi * 100.0).round() / 100.0)
    }
}

/// Where a service's heartbeats come from: `vigil`, or its watch's name.
pub fn source(slot: &Slot) -> &str {
    slot.watched
        .as_ref()
        .map_or(vigil_proto::VIGIL_SOURCE, |w| &w.source)
}

/// A health as the wire writes it.
pub fn health_status(health: Health) -> vigil_proto::HealthStatus {
    match health {
        Health::Ok => vigil_proto::HealthStatus::Ok,
        Health::Warning => vigil_proto::HealthStatus::Warning,
        Health::Failing => vigil_proto::HealthStatus::Failing,
    }
}

/// A service's admin status.
pub fn status(record: &ServiceRecord) -> vigil_proto::Status {
    if record.disabled {
        vigil_proto::Status::Disabled
    } else {
        vigil_proto::Status::Enabled
    }
}

/// Whether a field of `record` that people search by contains `text` (ASCII letters in either
/// case), without allocating.
fn mentions(record: &ServiceRecord, text: &str) -> bool {
    let needle = text.as_bytes();
    let contains = |hay: &str| {
        needle.is_empty()
            || hay
                .as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
    };
    contains(&record.host)
        || contains(&record.binary)
        || contains(&record.zone)
        || record.topic.as_deref().is_some_and(contains)
        || record.version.as_deref().is_some_and(contains)
        || record.disabled_reason().is_some_and(contains)
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// Ten million services live in one server's memory (BENCHMARKS.md, "Where a service's
    /// bytes go"): a field added to a service's state must be paid for here, knowingly. Rare
    /// state (pending zone and health, flapping transitions, a reporter's error) stays out of
    /// line, behind one pointer each (a record's notes too: disabled reason, health message, admin
    /// change and stop times); the names a fleet repeats are shared ([`Symbol`]).
    #[test]
    fn a_service_in_memory_stays_small() {
        // 312 bytes, 328 with the `Arc`'s counts: malloc's chunk of 336. At 329 and more the
        // chunk is 352, 16 bytes a service more, so the limit is one to keep.
        assert!(
            size_of::<super::Entry>() <= 312,
            "{}",
            size_of::<super::Entry>()
        );
        assert!(size_of::<crate::model::ServiceRecord>() <= 144);
        assert!(size_of::<crate::stats::BeatStats>() <= 120);
        assert_eq!(size_of::<crate::flapping::Flaps>(), 8);
        assert_eq!(size_of::<Option<Box<super::PendingChange>>>(), 8);
        assert_eq!(size_of::<Option<super::Symbol>>(), 8);
    }
}
