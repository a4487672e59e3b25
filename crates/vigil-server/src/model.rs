//! The domain's own types, apart from the wire (`vigil_proto`, converted in `api/` and
//! `cinder/` only) and from SQL (`store/`): a service, what a reporter declares, an admin
//! change, heartbeats, events and their kinds, and the one conversion of durations.

use chrono::{DateTime, TimeDelta, Utc};

/// A short text kept per service: stored inline up to 24 bytes (host names nearly always
/// fit), so a million services hold no heap allocation for them.
pub type Name = compact_str::CompactString;

/// A name many services repeat (binary, zone, topic, version): one shared copy, 8 bytes a
/// service.
pub use crate::symbol::Symbol;

/// A service as stored (row type; the JSON type is `vigil_proto::Service`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub id: i64,
    pub host: Name,
    pub binary: Symbol,
    pub topic: Option<Symbol>,
    pub zone: Symbol,
    pub disabled: bool,
    pub forced_down: bool,
    pub frozen: bool,
    pub report_count: i64,
    pub report_interval: f64,
    pub version: Option<Symbol>,
    pub created_at: DateTime<Utc>,
    /// Server receipt time of the newest heartbeat (Cinder's `updated_at`).
    pub updated_at: Option<DateTime<Utc>>,
    /// What its heartbeats last reported of its health (`None`: none did since it registered);
    /// the message that came with it is among the [`Notes`].
    pub health: Option<Health>,
    /// The `service_down_time` it declared when it registered (`None`: the server's).
    pub service_down_time: Option<f64>,
    /// Position of this row's last write in the change feed of a shared database (0 on an
    /// unshared one): a replica never lets an older read undo a newer write.
    pub row_version: i64,
    /// What few services have: out of line, 8 bytes for the many that have none of it (ten
    /// million services in memory, see BENCHMARKS.md). Read and set through the accessors.
    /// A literal gives `None`, and sets them with [`ServiceRecord::with_notes`] or the setters.
    pub notes: Option<Box<Notes>>,
}

/// A service's rarely set fields (see [`ServiceRecord`]'s accessors).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notes {
    disabled_reason: Option<String>,
    health_message: Option<String>,
    modified_at: Option<DateTime<Utc>>,
    stopped_at: Option<DateTime<Utc>>,
}

impl Notes {
    fn is_empty(&self) -> bool {
        *self == Notes::default()
    }
}

impl ServiceRecord {
    /// Why an admin disabled it (Cinder's `disabled_reason`).
    pub fn disabled_reason(&self) -> Option<&str> {
        self.notes.as_ref()?.disabled_reason.as_deref()
    }

    /// The message that came with its last reported health.
    pub fn health_message(&self) -> Option<&str> {
        self.notes.as_ref()?.health_message.as_deref()
    }

    /// When an admin last changed it (Cinder's `modified_at`).
    pub fn modified_at(&self) -> Option<DateTime<Utc>> {
        self.notes.as_ref()?.modified_at
    }

    /// When the service last said it stops (`POST /v1/services/{id}/stop`); it is `stopped`
    /// while no heartbeat came after this. Cleared when it registers again.
    pub fn stopped_at(&self) -> Option<DateTime<Utc>> {
        self.notes.as_ref()?.stopped_at
    }

    pub fn set_disabled_reason(&mut self, reason: Option<String>) {
        self.note(|notes| notes.disabled_reason = reason);
    }

    pub fn set_health_message(&mut self, message: Option<String>) {
        self.note(|notes| notes.health_message = message);
    }

    pub fn set_modified_at(&mut self, at: Option<DateTime<Utc>>) {
        self.note(|notes| notes.modified_at = at);
    }

    pub fn set_stopped_at(&mut self, at: Option<DateTime<Utc>>) {
        self.note(|notes| notes.stopped_at = at);
    }

    /// With these notes (a row read from the database): `None` for each it lacks.
    pub fn with_notes(
        mut self,
        disabled_reason: Option<String>,
        health_message: Option<String>,
        modified_at: Option<DateTime<Utc>>,
        stopped_at: Option<DateTime<Utc>>,
    ) -> ServiceRecord {
        let notes = Notes {
            disabled_reason,
            health_message,
            modified_at,
            stopped_at,
        };
        self.notes = (!notes.is_empty()).then(|| Box::new(notes));
        self
    }

    /// Changes the notes, allocating them when the first is set and freeing them when the
    /// last is cleared.
    fn note(&mut self, change: impl FnOnce(&mut Notes)) {
        let notes = self.notes.get_or_insert_with(Box::default);
        change(notes);
        if notes.is_empty() {
            self.notes = None;
        }
    }
}

#[cfg(test)]
impl ServiceRecord {
    /// A service for unit tests: enabled, in zone `nova`, reporting every `report_interval`
    /// seconds, registered at `created_at` and never heard from since; a test changes the
    /// fields it is about (`ServiceRecord { zone: ..., ..ServiceRecord::example(...) }`).
    pub fn example(
        id: i64,
        host: &str,
        binary: &str,
        report_interval: f64,
        created_at: DateTime<Utc>,
    ) -> ServiceRecord {
        ServiceRecord {
            id,
            host: host.into(),
            binary: binary.into(),
            topic: None,
            zone: "nova".into(),
            disabled: false,
            forced_down: false,
            frozen: false,
            report_count: 0,
            report_interval,
            version: None,
            created_at,
            updated_at: None,
            health: None,
            service_down_time: None,
            row_version: 0,
            notes: None,
        }
    }
}

/// What a reporter declares when it registers.
#[derive(Debug, Clone, PartialEq)]
pub struct NewService {
    pub host: String,
    pub binary: String,
    pub topic: Option<String>,
    pub zone: String,
    pub report_interval: f64,
    pub version: Option<String>,
    /// Its own `service_down_time`, validated.
    pub service_down_time: Option<f64>,
}

/// An admin change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdminChange {
    pub disabled: Option<bool>,
    /// `Some(None)` clears the reason.
    pub disabled_reason: Option<Option<String>>,
    pub forced_down: Option<bool>,
    pub frozen: Option<bool>,
}

/// Heartbeats of one service received since the last flush.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatFlush {
    pub id: i64,
    /// Newest receipt time; the store keeps the later of this and what it has, so replicas
    /// flushing out of order never move a service back in time.
    pub updated_at: DateTime<Utc>,
    /// Heartbeats counted since the last flush; added to the stored `report_count`.
    pub report_count_delta: i64,
    pub zone: Option<String>,
    /// A health (and message) received since the last flush that differs from the stored one.
    pub health: Option<(Health, Option<String>)>,
}

/// A service's own word on its health, beside liveness (the wire's `HealthStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    Ok,
    Warning,
    Failing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Failing => "failing",
        }
    }

    pub fn parse(text: &str) -> Option<Health> {
        [Health::Ok, Health::Warning, Health::Failing]
            .into_iter()
            .find(|h| h.as_str() == text)
    }
}

/// A service's heartbeat fields as a database holds them, read back by other replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct BeatState {
    pub id: i64,
    pub updated_at: Option<DateTime<Utc>>,
    /// The stored count: every replica's flushed heartbeats.
    pub report_count: i64,
}

/// Kinds of events; the strings are the API's and the database's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Registered,
    Down,
    Up,
    Disabled,
    Enabled,
    ForcedDown,
    Unforced,
    Deleted,
    Suspect,
    Frozen,
    Thawed,
    /// The service said it exits cleanly.
    Stopped,
    /// The health its heartbeats report changed.
    Health,
    /// It went up and down too often lately.
    Flapping,
    /// No longer flapping.
    FlappingEnded,
    /// Many services went silent together; the partition guard holds them `unreachable`
    /// (about the whole fleet: service id 0, host and binary `*`).
    MassFailure,
    /// Every service the guard held beat again, was confirmed down, or was held too long.
    MassFailureEnded,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::Registered,
        EventKind::Down,
        EventKind::Up,
        EventKind::Disabled,
        EventKind::Enabled,
        EventKind::ForcedDown,
        EventKind::Unforced,
        EventKind::Deleted,
        EventKind::Suspect,
        EventKind::Frozen,
        EventKind::Thawed,
        EventKind::Stopped,
        EventKind::Health,
        EventKind::Flapping,
        EventKind::FlappingEnded,
        EventKind::MassFailure,
        EventKind::MassFailureEnded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Down => "down",
            EventKind::Up => "up",
            EventKind::Disabled => "disabled",
            EventKind::Enabled => "enabled",
            EventKind::ForcedDown => "forced_down",
            EventKind::Unforced => "unforced",
            EventKind::Deleted => "deleted",
            EventKind::Suspect => "suspect",
            EventKind::Frozen => "frozen",
            EventKind::Thawed => "thawed",
            EventKind::Stopped => "stopped",
            EventKind::Health => "health",
            EventKind::Flapping => "flapping",
            EventKind::FlappingEnded => "flapping_ended",
            EventKind::MassFailure => "mass_failure",
            EventKind::MassFailureEnded => "mass_failure_ended",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// An event to append to the history.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub service_id: i64,
    pub host: String,
    pub binary: String,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub threshold_s: Option<f64>,
    /// Who asked for it (a token's name), for registrations and admin changes.
    pub actor: Option<String>,
    /// The client address it came from.
    pub address: Option<String>,
}

impl NewEvent {
    /// An event about `service` with no detail.
    pub fn about(service: &ServiceRecord, kind: EventKind, at: DateTime<Utc>) -> NewEvent {
        NewEvent {
            service_id: service.id,
            host: service.host.to_string(),
            binary: service.binary.to_string(),
            kind,
            at,
            reason: None,
            last_seen: None,
            threshold_s: None,
            actor: None,
            address: None,
        }
    }

    /// The same event, recorded as asked for by `actor`.
    pub fn by(mut self, actor: &Actor) -> NewEvent {
        self.actor = actor.name.clone();
        self.address = actor.address.clone();
        self
    }
}

/// Who asked for a change, for the history: the name of the token it came with and the
/// client's address. Both unknown for what the server does by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub name: Option<String>,
    pub address: Option<String>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Register and heartbeat services on the hosts its patterns match; nothing else.
    Agent,
    /// Every read.
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Reader => "reader",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::Agent, Role::Reader]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// A token as stored: never its secret, only the secret's SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    /// An agent's host patterns (globs); empty: any host.
    pub hosts: Vec<String>,
    /// SHA-256 of the secret, lowercase hex.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    /// The name of the token that created it.
    pub created_by: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One reading of a reference clock, bracketed by the local clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSample {
    pub before: DateTime<Utc>,
    pub reference: DateTime<Utc>,
    pub after: DateTime<Utc>,
}

/// What a reporter sends with a beat, as the registry needs it.
#[derive(Debug, Clone, Default)]
pub struct Beat {
    pub zone: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_rtt_s: Option<f64>,
    pub overrun_s: Option<f64>,
    pub last_error: Option<String>,
    pub health: Option<Health>,
    pub message: Option<String>,
}

/// An event of the history, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub service_id: i64,
    pub host: String,
    pub binary: String,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub threshold_s: Option<f64>,
    pub actor: Option<String>,
    pub address: Option<String>,
}

/// Why a `registered` event was recorded: its reason, written by the store, read by the
/// doctor (a reporter that keeps starting again is a crash loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationReason {
    NewService,
    StartedAgain,
}

impl RegistrationReason {
    pub fn new(created: bool) -> RegistrationReason {
        if created {
            RegistrationReason::NewService
        } else {
            RegistrationReason::StartedAgain
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationReason::NewService => "new service",
            RegistrationReason::StartedAgain => "reporter started again",
        }
    }

    pub fn parse(text: &str) -> Option<RegistrationReason> {
        [
            RegistrationReason::NewService,
            RegistrationReason::StartedAgain,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// A duration as seconds (configuration and the wire speak seconds; the core, `TimeDelta`).
pub fn seconds(delta: TimeDelta) -> f64 {
    delta.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// Seconds as a duration, to the microsecond.
pub fn delta(seconds: f64) -> TimeDelta {
    TimeDelta::microseconds((seconds * 1e6) as i64)
}

/// A maintenance window: the services of `host` (of `binary` only, or every binary of the host
/// when `None`) are in maintenance from `starts_at` until `ends_at`, unless an admin ended the
/// window earlier (`ended_at`). They keep being judged; their views, events, metrics and
/// diagnosis say so. Kept after it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindow {
    /// 0 until stored.
    pub id: i64,
    pub host: String,
    pub binary: Option<String>,
    pub reason: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// The name of the token that started it, and the client address it came from.
    pub created_by: Option<String>,
    pub address: Option<String>,
    /// When an admin ended it before `ends_at`, and who.
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
}

impl MaintenanceWindow {
    /// Whether it holds at `now`: started, not ended early, not past its end.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.ended_at.is_none() && self.starts_at <= now && now < self.ends_at
    }

    /// Whether it covers the service (`host`, `binary`).
    pub fn covers(&self, host: &str, binary: &str) -> bool {
        self.host == host && self.binary.as_deref().is_none_or(|b| b == binary)
    }

    /// When it ends, or ended: early by an admin, or at `ends_at`.
    pub fn end(&self) -> DateTime<Utc> {
        self.ended_at
            .map_or(self.ends_at, |at| at.min(self.ends_at))
    }
}
