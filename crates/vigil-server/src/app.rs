//! What the server does, apart from how it is asked: register, heartbeat, list, change,
//! delete. Both HTTP front ends (the Vigil API and the Cinder-compatible one) call these, so
//! validation, events and durability are the same whichever way a change comes in.

use std::sync::Arc;

use vigil_proto::{HeartbeatResponse, Service};

use crate::auth::{Caller, Need};
use crate::clock::Clock;
use crate::config::Config;
use crate::detector::Detector;
use crate::events::EventLog;
use crate::registry::{Beat, ListFilter, Registry};
use crate::store::{AdminChange, EventKind, NewEvent, NewService, Store};
use crate::validate;

pub use crate::error::AppError;

mod beat_health;
mod diagnose;
mod guard;
mod health;
mod maintenance;
mod start;
mod stop;
mod stream;
pub(crate) mod sync;
mod tokens;
pub(crate) mod watch;

pub use health::DatabaseHealth;
pub use maintenance::NewMaintenance;
pub(crate) use start::build;
pub use tokens::{expired, NewToken};

/// Beats of services unknown here that one batch may look up in the database, one by one
/// (after one read of what other replicas wrote); the rest get `service_not_found` from
/// memory, and their reporters register again.
const READ_THROUGH_PER_BATCH: usize = 64;

/// A registration as received, before validation.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub host: Option<String>,
    pub binary: Option<String>,
    pub topic: Option<String>,
    pub zone: Option<String>,
    pub report_interval: Option<f64>,
    pub version: Option<String>,
    pub service_down_time: Option<f64>,
}

/// The server's shared state.
pub struct App {
    pub config: Config,
    pub clock: Clock,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub events: Arc<EventLog>,
    /// The timer wheel of deadlines, and whether this server leads detection.
    pub detector: Detector,
    /// Where this server is in the other replicas' changes.
    pub sync: tokio::sync::Mutex<sync::SyncState>,
    /// Where this server is in other replicas' flushed heartbeats ([`Store::beats_since`]).
    pub beat_cursor: tokio::sync::Mutex<i64>,
    /// The tokens this server accepts, and what each may do.
    pub tokens: crate::auth::Tokens,
    /// How fast each caller may write.
    pub limits: crate::limits::WriteLimits,
    pub database: DatabaseHealth,
    /// The watched OpenStack databases: more sources of heartbeats.
    pub watches: Vec<Arc<watch::WatchState>>,
    pub metrics: crate::metrics::Metrics,
}

impl App {
    /// Get-or-create by (host, binary); written through before it is acknowledged.
    /// The caller must be allowed to write services of the host (an agent token for it).
    pub async fn register(
        &self,
        input: Registration,
        caller: &Caller,
    ) -> Result<(Service, bool), AppError> {
        self.tokens.may_write(caller)?;
        validate::text("host", input.host.as_deref(), true)?;
        self.tokens.authorize(
            caller,
            Need::Write {
                host: input.host.as_deref().unwrap_or_default(),
            },
        )?;
        validate::text("binary", input.binary.as_deref(), true)?;
        validate::text("topic", input.topic.as_deref(), false)?;
        validate::text("zone", input.zone.as_deref(), false)?;
        validate::text("version", input.version.as_deref(), false)?;
        let report_interval = input
            .report_interval
            .unwrap_or(vigil_proto::DEFAULT_REPORT_INTERVAL);
        validate::report_interval(report_interval)?;
        if let Some(own) = input.service_down_time {
            validate::service_down_time(own, report_interval, &self.config)?;
        }
        let new = NewService {
            host: input.host.unwrap_or_default(),
            binary: input.binary.unwrap_or_default(),
            topic: input.topic,
            zone: input
                .zone
                .filter(|z| !z.is_empty())
                .unwrap_or_else(|| self.config.default_zone.clone()),
            report_interval,
            version: input.version,
            service_down_time: input.service_down_time,
        };
        if self.registry.find(&new.host, &new.binary).is_none()
            && self.registry.len() >= self.config.limits.max_services
        {
            return Err(AppError::TooManyServices(self.config.limits.max_services));
        }
        self.limit_writes(caller)?;
        let now = self.clock.now();
        let registered = self.store.register(&new, now, &caller.actor()).await;
        self.database.record(&registered);
        let (record, created) = registered?;
        crate::doctor::log_registration(&record, self.registry.liveness.down_time_s(&record));
        self.metrics.written([EventKind::Registered]);
        self.events.notify();
        let entry = self.absorb(record);
        let slot = entry.lock();
        Ok((self.registry.view(&slot, now), created))
    }

    /// Applies one heartbeat in memory. A service unknown here is looked up in the database
    /// first: another replica may have registered it.
    /// The caller must be allowed to write services of the service's host.
    pub async fn heartbeat(
        &self,
        id: i64,
        beat: Beat,
        caller: &Caller,
    ) -> Result<HeartbeatResponse, AppError> {
        check_beat(&beat)?;
        self.tokens.may_write(caller)?;
        let entry = self.entry(id).await?;
        self.beat_entry(&entry, &beat, caller, self.clock.now())
    }

    /// One checked beat of a service in hand, received at `now`: authorized for its host,
    /// applied, measured, and what it changed (revived, reachable again, health) followed up.
    fn beat_entry(
        &self,
        entry: &Arc<crate::registry::Entry>,
        beat: &Beat,
        caller: &Caller,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<HeartbeatResponse, AppError> {
        if !self.tokens.may_write_any_host(caller) {
            let host = entry.lock().record.host.clone();
            self.tokens.authorize(caller, Need::Write { host: &host })?;
        }
        let outcome = self
            .registry
            .heartbeat_entry(entry, beat, now)
            .ok_or_else(|| AppError::NotFound(entry.id()))?;
        self.metrics.beat(outcome.lateness_s);
        if outcome.revived || outcome.reachable_again {
            if outcome.revived {
                self.revived(&mut entry.lock(), now);
            }
            self.detector.file(&self.registry.liveness, entry, now);
        }
        if let Some((before, _)) = outcome.health_changed {
            self.health_changed(entry, before);
        }
        Ok(HeartbeatResponse {
            report_count: outcome.report_count,
            service_down_time: outcome.service_down_time_s,
        })
    }

    /// Applies many services' beats in order, each exactly as [`App::heartbeat`] does; one
    /// beat's failure never fails the others. The beats of services in memory share one
    /// receipt time, read once for the request and again after each wait for the database.
    /// Once the database is found unavailable, the remaining beats of services unknown here
    /// get `DatabaseUnavailable` at once rather than each waiting for the database in turn.
    /// A caller who may write no service at all is refused whole, before any service is
    /// looked up.
    pub async fn heartbeat_batch(
        &self,
        beats: Vec<(i64, Beat)>,
        caller: &Caller,
    ) -> Result<Vec<(i64, Result<HeartbeatResponse, AppError>)>, AppError> {
        self.tokens.may_write(caller)?;
        let mut now = self.clock.now();
        let mut results = Vec::with_capacity(beats.len());
        let mut unavailable: Option<String> = None;
        let mut misses = 0usize;
        for (id, beat) in beats {
            let result = match (self.registry.get(id), &unavailable) {
                (Some(entry), _) => {
                    check_beat(&beat).and_then(|()| self.beat_entry(&entry, &beat, caller, now))
                }
                (None, Some(reason)) => Err(AppError::DatabaseUnavailable(reason.clone())),
                // A batch of ids nobody registered must not become as many database reads.
                (None, None) if misses >= READ_THROUGH_PER_BATCH => Err(AppError::NotFound(id)),
                (None, None) => {
                    if misses == 0 && self.store.shared() {
                        // What other replicas registered, in one read for the batch.
                        self.sync_for_read().await;
                    }
                    misses += 1;
                    let result = self.heartbeat(id, beat, caller).await;
                    // The database was waited for: the beats after it were received later.
                    now = self.clock.now();
                    result
                }
            };
            if let Err(AppError::DatabaseUnavailable(reason)) = &result {
                unavailable.get_or_insert_with(|| reason.clone());
            }
            results.push((id, result));
        }
        Ok(results)
    }

    /// One service, from memory (read through to the database when unknown here).
    pub async fn get(&self, id: i64) -> Result<Service, AppError> {
        self.sync_for_read().await;
        let entry = self.entry(id).await?;
        let slot = entry.lock();
        Ok(self.registry.view(&slot, self.clock.now()))
    }

    /// One service's entry: from memory, or read through to the database when unknown here
    /// (another replica may have registered it).
    pub async fn entry(&self, id: i64) -> Result<Arc<crate::registry::Entry>, AppError> {
        if let Some(entry) = self.registry.get(id) {
            return Ok(entry);
        }
        // Known down: say so at once rather than wait for the database to time out.
        self.database.refuse_if_down()?;
        let record = self
            .store
            .get_service(id)
            .await?
            .ok_or(AppError::NotFound(id))?;
        Ok(self.absorb(record))
    }

    /// Services matching `filter`, in id order. On a shared database, what other replicas
    /// wrote is read first, so a change acknowledged anywhere shows here at once.
    pub async fn list(&self, filter: &ListFilter) -> Vec<Service> {
        self.sync_for_read().await;
        self.registry.list(filter, self.clock.now())
    }

    /// Puts a row read from or written to the database into memory, files it with the
    /// detector, and, when this server leads detection, records a revival the row shows (a
    /// heartbeat received by another replica, or forced down lifted from a live service).
    pub fn absorb(&self, record: crate::store::ServiceRecord) -> Arc<crate::registry::Entry> {
        let before = self.registry.get(record.id).map(|e| e.lock().record.health);
        let entry = self.registry.upsert(record);
        self.health_absorbed(&entry, before);
        self.recheck(&entry);
        entry
    }

    /// Takes heartbeats another replica flushed. Services unknown here are skipped: their rows
    /// arrive through the services change feed, with these fields in them.
    pub fn absorb_beat(&self, beat: &crate::store::BeatState) {
        if let Some(entry) = self.registry.get(beat.id) {
            {
                let mut slot = entry.lock();
                let before = slot.record.report_count;
                slot.merge_flushed(beat.updated_at, beat.report_count);
                if slot.declared_down && self.registry.liveness.up_after_beats > 1 {
                    // Beats another replica received count towards `up_after_beats` here (their
                    // punctuality is that replica's to see).
                    let more = (slot.record.report_count - before).clamp(0, 255) as u8;
                    slot.recovering = slot.recovering.saturating_add(more);
                }
            }
            self.recheck(&entry);
        }
    }

    /// After a change read from the database: a service declared down that is up again is
    /// revived, and its deadline filed.
    fn recheck(&self, entry: &Arc<crate::registry::Entry>) {
        let now = self.clock.now();
        {
            let mut slot = entry.lock();
            let up = self.registry.liveness.is_up(&slot.record, now);
            // Back up once `flapping.up_after_beats` heartbeats came, here or through other
            // replicas (counted by `heartbeat` and `absorb_beat`).
            let beats_enough = self.registry.liveness.up_after_beats <= 1
                || u32::from(slot.recovering) >= self.registry.liveness.up_after_beats;
            if slot.declared_down && !slot.deleted && up && beats_enough {
                slot.declared_down = false;
                slot.recovering = 0;
                self.revived(&mut slot, now);
            }
            if slot.unreachable && (up || crate::liveness::is_stopped(&slot.record)) {
                // Held by the partition guard, and beat through another replica, or stopped.
                slot.unreachable = false;
            }
            if crate::liveness::is_stopped(&slot.record) && self.detector.is_leader() {
                // It said it stops: never `down`; its next heartbeat is an `up`.
                slot.declared_down = true;
            }
        }
        self.detector.file(&self.registry.liveness, entry, now);
    }

    /// The `up` event of a service declared down that beat again, and its transition counted
    /// for flapping.
    fn revived(&self, slot: &mut crate::registry::Slot, now: chrono::DateTime<chrono::Utc>) {
        self.events
            .emit(NewEvent::about(&slot.record, EventKind::Up, now));
        let rule = &self.registry.liveness.flapping;
        if let Some(count) = slot.flaps.record(now, rule) {
            self.events
                .emit(crate::flapping::event(&slot.record, true, count, rule, now));
        }
    }

    /// Whether a write can commit now: `None`, or why not (see [`DatabaseHealth::check`]).
    pub async fn readiness(&self) -> Option<String> {
        self.database.check(self.store.as_ref()).await
    }

    /// Whether this server leads detection (always, alone on its database).
    pub fn is_leader(&self) -> bool {
        self.detector.is_leader()
    }

    /// Finds a service by (host, binary), after reading other replicas' changes.
    pub async fn find(&self, host: &str, binary: &str) -> Option<i64> {
        self.sync_for_read().await;
        self.registry.find(host, binary).map(|entry| entry.id())
    }

    /// Enable, disable (with a reason), force down or up, freeze or thaw. Written through, with
    /// its events, before it is acknowledged. Never moves `updated_at`.
    /// `caller` (whose admin role the front end checked) is recorded in the events.
    pub async fn update(
        &self,
        id: i64,
        mut change: AdminChange,
        caller: &Caller,
    ) -> Result<Service, AppError> {
        if let Some(Some(reason)) = &change.disabled_reason {
            validate::text("disabled_reason", Some(reason), false)?;
        }
        if change.disabled == Some(false) {
            // An enabled service has no reason to be disabled.
            change.disabled_reason = Some(None);
        }
        self.refuse_if_watched(id, false)?;
        self.limit_writes(caller)?;
        let now = self.clock.now();
        let kinds = parking_lot::Mutex::new(Vec::new());
        let events_for = |before: &crate::store::ServiceRecord| {
            let actor = caller.actor();
            let events: Vec<NewEvent> = admin_events(before, &change, now)
                .into_iter()
                .map(|e| e.by(&actor))
                .collect();
            *kinds.lock() = events.iter().map(|e| e.kind).collect();
            events
        };
        let updated = self.store.update_admin(id, &change, now, &events_for).await;
        self.database.record(&updated);
        let record = updated?.ok_or(AppError::NotFound(id))?;
        self.metrics.written(kinds.into_inner());
        self.events.notify();
        let entry = self.absorb(record);
        let slot = entry.lock();
        Ok(self.registry.view(&slot, now))
    }

    /// Deletes a service. A service that is up is refused unless `force`: its process would
    /// re-create it at its next heartbeat (Cinder's `service remove` pitfall).
    /// `caller` (whose admin role the front end checked) is recorded in the event.
    pub async fn delete(&self, id: i64, force: bool, caller: &Caller) -> Result<(), AppError> {
        self.refuse_if_watched(id, true)?;
        self.limit_writes(caller)?;
        let now = self.clock.now();
        let record = self.entry(id).await?.lock().record.clone();
        if !force && self.registry.liveness.is_up(&record, now) {
            return Err(AppError::ServiceUp {
                host: record.host.into(),
                binary: record.binary.to_string(),
            });
        }
        let mut event = NewEvent::about(&record, EventKind::Deleted, now).by(&caller.actor());
        if force {
            event.reason = Some("forced".into());
        }
        let deleted = self.store.delete(id, &event).await;
        self.database.record(&deleted);
        if !deleted? {
            self.registry.remove(id);
            return Err(AppError::NotFound(id));
        }
        self.events.notify();
        self.metrics.written([EventKind::Deleted]);
        self.registry.remove(id);
        Ok(())
    }
}

impl App {
    /// 429 for a caller that writes faster than `limits.writes_per_second` (a token by its
    /// name, else an address).
    pub fn limit_writes(&self, caller: &Caller) -> Result<(), AppError> {
        let who = match (&caller.grant, &caller.address) {
            (Some(grant), _) => format!("token {}", grant.name),
            (None, Some(address)) => format!("address {address}"),
            (None, None) => return Ok(()),
        };
        self.limits
            .check(&who)
            .map_err(|wait| AppError::RateLimited {
                who,
                per_second: self.config.limits.writes_per_second,
                burst: self.config.limits.write_burst,
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            })
    }
}

/// The events an admin change makes of a service as it was: only real transitions count, so
/// disabling a disabled service records nothing.
pub(crate) fn admin_events(
    before: &crate::store::ServiceRecord,
    change: &AdminChange,
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    let mut event = |kind: EventKind, reason: Option<String>| {
        let mut event = NewEvent::about(before, kind, at);
        event.reason = reason;
        events.push(event);
    };
    match change.disabled {
        Some(true) if !before.disabled => {
            event(
                EventKind::Disabled,
                change.disabled_reason.clone().flatten(),
            );
        }
        Some(false) if before.disabled => event(EventKind::Enabled, None),
        _ => {}
    }
    match change.forced_down {
        Some(true) if !before.forced_down => event(EventKind::ForcedDown, None),
        Some(false) if before.forced_down => event(EventKind::Unforced, None),
        _ => {}
    }
    match change.frozen {
        Some(true) if !before.frozen => event(EventKind::Frozen, None),
        Some(false) if before.frozen => event(EventKind::Thawed, None),
        _ => {}
    }
    events
}

/// What a beat may carry, checked before anything is looked up: its zone's text, the length
/// of its `last_error`, its health and message.
fn check_beat(beat: &Beat) -> Result<(), AppError> {
    if let Some(zone) = &beat.zone {
        validate::text("zone", Some(zone), false)?;
    }
    if let Some(error) = &beat.last_error {
        if error.chars().count() > 4096 {
            return Err(AppError::Invalid {
                code: "invalid_last_error".into(),
                message: "last_error is longer than 4096 characters".into(),
            });
        }
    }
    beat_health::validate(beat)
}
