//! Wire types of the Vigil HTTP API (`/v1`).
//!
//! This crate is the contract between the server, the reporter crate that services embed, and the
//! CLI. It depends on nothing but serde and chrono so that the reporter stays light.
//!
//! Compatibility rule: a field added to a request body is `#[serde(default)]`, so reporters built
//! against an older version keep working against a newer server.
//!
//! # Layout
//! - [`ts`]: how timestamps are written (UTC, RFC 3339, microseconds).
//! - request bodies: [`RegisterRequest`], [`HeartbeatRequest`], [`BatchHeartbeatRequest`],
//!   [`UpdateServiceRequest`].
//! - response bodies: [`Service`], [`ServiceList`], [`HeartbeatResponse`],
//!   [`BatchHeartbeatResponse`], [`Event`],
//!   [`EventList`], [`Finding`], [`Diagnosis`], [`ErrorBody`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod ts;

mod maintenance;
pub use maintenance::{Maintenance, MaintenanceList, MaintenanceRequest, MAX_MAINTENANCE_S};

/// Longest accepted `host`, `binary`, `topic`, `zone`, `version` or `disabled_reason`, in
/// characters (Cinder's column width).
pub const MAX_FIELD_LEN: usize = 255;

/// Accepted range of a declared `report_interval`, in seconds.
pub const REPORT_INTERVAL_RANGE: std::ops::RangeInclusive<f64> = 0.1..=3600.0;

/// Cinder's default `report_interval`, in seconds.
pub const DEFAULT_REPORT_INTERVAL: f64 = 10.0;

/// Body of `POST /v1/services`: get-or-create a service by (host, binary).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"host": "node-1", "binary": "cinder-volume", "topic": "cinder-volume", "zone": "nova", "report_interval": 10.0, "version": "1.4.2"})))]
pub struct RegisterRequest {
    /// Required, non-empty, at most 255 characters without control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub host: String,
    /// Required, non-empty, at most 255 characters without control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub binary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub zone: Option<String>,
    /// Seconds between heartbeats this reporter intends to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.1, maximum = 3600.0))]
    pub report_interval: Option<f64>,
    /// The reporter's software version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub version: Option<String>,
    /// This service's own `service_down_time`, in seconds: within the server's bounds
    /// (`service_down_time_min`, `service_down_time_max`) and at least twice
    /// `report_interval`. Absent: the server's, or its pattern for this binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_down_time: Option<f64>,
}

/// Body of `POST /v1/services/{id}/heartbeat`. Every field is optional; `{}` is a valid beat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"sent_at": "2026-11-25T11:03:11.322598Z", "last_rtt_s": 0.004, "overrun_s": 0.0})))]
pub struct HeartbeatRequest {
    /// Moves the service to another availability zone (as Cinder's `report_state` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub zone: Option<String>,
    /// The reporter's wall clock when it sent this beat. Used only to measure its clock offset;
    /// never to decide liveness.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "ts::option")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Round trip of the reporter's previous heartbeat, in seconds: bounds the offset estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rtt_s: Option<f64>,
    /// How many seconds the reporter's previous loop run outlasted its interval (0 when on time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrun_s: Option<f64>,
    /// The last error the reporter met since its previous successful beat (a failed health
    /// callback, a request timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 4096))]
    pub last_error: Option<String>,
    /// What the service says of itself beside being alive (Consul's pass, warn, fail); absent:
    /// as before. A beat with `failing` still keeps the service `up`: alive but failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthStatus>,
    /// Why, in a few words; kept with `health` (ignored without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub message: Option<String>,
}

/// Longest accepted heartbeat `message`, in characters.
pub const MAX_HEALTH_MESSAGE: usize = 1024;

/// A service's own word on its health, sent with its heartbeats: `ok`, `warning` (working,
/// degraded) or `failing` (alive but not doing its work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Warning,
    Failing,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Warning => "warning",
            HealthStatus::Failing => "failing",
        }
    }
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"report_count": 42, "service_down_time": 60.0})))]
pub struct HeartbeatResponse {
    pub report_count: i64,
    /// The server's `service_down_time`, in seconds, so a reporter can warn about its interval.
    pub service_down_time: f64,
}

/// Most beats one `POST /v1/heartbeats` may carry; more is refused whole with 400
/// `batch_too_large`.
pub const MAX_BATCH_BEATS: usize = 10_000;

/// Largest body of `POST /v1/heartbeats`, in bytes: [`MAX_BATCH_BEATS`] beats of about 800
/// bytes each (a beat with every field but a long `last_error` takes about 200).
pub const MAX_BATCH_BODY: usize = 8 * 1024 * 1024;

/// Body of `POST /v1/heartbeats`: many services' beats in one request, applied in order, each
/// as `POST /v1/services/{id}/heartbeat` would apply it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"beats": [{"id": 1, "sent_at": "2026-11-25T11:03:11.322598Z", "overrun_s": 0.0}, {"id": 9}, {"id": 4, "zone": "nova-2", "last_error": "disk slow"}]})))]
pub struct BatchHeartbeatRequest {
    pub beats: Vec<BatchBeat>,
}

/// One service's beat in a batch: its id and the fields of a single [`HeartbeatRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchBeat {
    pub id: i64,
    #[serde(flatten)]
    pub beat: HeartbeatRequest,
}

/// A [`BatchBeat`] as read: its fields side by side. serde reads a `flatten`ed field by first
/// buffering every key and value of the object, an allocation each, which was a tenth of the
/// server's time per beat in a batch of 100; this reads them straight into place.
#[derive(Deserialize)]
struct BatchBeatFields {
    id: i64,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default, with = "ts::option")]
    sent_at: Option<DateTime<Utc>>,
    #[serde(default)]
    last_rtt_s: Option<f64>,
    #[serde(default)]
    overrun_s: Option<f64>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    health: Option<HealthStatus>,
    #[serde(default)]
    message: Option<String>,
}

impl<'de> Deserialize<'de> for BatchBeat {
    /// From a JSON object only: a derived `Deserialize` would also take an array of the fields
    /// in order (`[7]`), which no beat is.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<BatchBeat, D::Error> {
        struct Beat;
        impl<'de> serde::de::Visitor<'de> for Beat {
            type Value = BatchBeat;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a beat: an object with the service's integer `id`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BatchBeat, A::Error> {
                BatchBeatFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(BatchBeat::from)
            }
        }
        deserializer.deserialize_map(Beat)
    }
}

impl From<BatchBeatFields> for BatchBeat {
    fn from(fields: BatchBeatFields) -> BatchBeat {
        BatchBeat {
            id: fields.id,
            beat: HeartbeatRequest {
                zone: fields.zone,
                sent_at: fields.sent_at,
                last_rtt_s: fields.last_rtt_s,
                overrun_s: fields.overrun_s,
                last_error: fields.last_error,
                health: fields.health,
                message: fields.message,
            },
        }
    }
}

/// Answer to `POST /v1/heartbeats`: one result per beat, in the order of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"results": [{"id": 1, "report_count": 5}, {"id": 9, "error": {"code": "service_not_found", "message": "service 9 not found"}}, {"id": 4, "report_count": 12}], "service_down_time": 60.0})))]
pub struct BatchHeartbeatResponse {
    pub results: Vec<BatchResult>,
    /// The server's `service_down_time`, in seconds, as in [`HeartbeatResponse`].
    pub service_down_time: f64,
}

/// What became of one beat of a batch: its `report_count`, or the error the single heartbeat
/// would have answered (`service_not_found`, `invalid_zone`, `database_unavailable`...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResult {
    pub id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Body of `PATCH /v1/services/{id}` (admin). Absent fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", schema(example = json!({"disabled": true, "disabled_reason": "disk sdb failed"})))]
pub struct UpdateServiceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `null` is the same as absent.
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `null` clears the reason.
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")
    )]
    pub disabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `null` is the same as absent.
    pub forced_down: Option<bool>,
}

/// Liveness as Cinder computes it: `up` iff the newest heartbeat is at most
/// `service_down_time` old (and the service is not forced down). `unknown`: a watched
/// service whose database cannot be read now; not evidence that it is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Down,
    Unknown,
    /// The service said it exits (`POST /v1/services/{id}/stop`): not running, and not a
    /// failure. Its next heartbeat makes it `up` again.
    Stopped,
    /// Past its deadline while many services went silent together (a `mass_failure`): Vigil
    /// may be the one cut off, so not `down` until it is confirmed (`vigil confirm-down`), a
    /// hold passes, or, when it beats again, `up`.
    Unreachable,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Unknown => "unknown",
            State::Stopped => "stopped",
            State::Unreachable => "unreachable",
        }
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(State::Up),
            "down" => Ok(State::Down),
            "unknown" => Ok(State::Unknown),
            "stopped" => Ok(State::Stopped),
            "unreachable" => Ok(State::Unreachable),
            other => Err(format!(
                "state must be up, down, unknown, stopped or unreachable, not {other:?}"
            )),
        }
    }
}

/// Administrative status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Enabled,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enabled" => Ok(Status::Enabled),
            "disabled" => Ok(Status::Disabled),
            other => Err(format!("status must be enabled or disabled, not {other:?}")),
        }
    }
}

/// One service as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"id": 1, "host": "node-1", "binary": "cinder-volume", "topic": null, "zone": "nova", "disabled": false, "disabled_reason": null, "forced_down": false, "frozen": false, "report_count": 42, "report_interval": 10.0, "version": "1.4.2", "created_at": "2026-11-25T11:00:00.000000Z", "updated_at": "2026-11-25T11:07:00.120000Z", "modified_at": null, "state": "up", "status": "enabled", "last_heartbeat_age_s": 3.2, "suspect": false, "suspicion": 0.41, "source": "vigil", "health": "ok", "health_message": null})))]
pub struct Service {
    pub id: i64,
    pub host: String,
    pub binary: String,
    pub topic: Option<String>,
    pub zone: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub forced_down: bool,
    /// Frozen by Cinder's `freeze-host` (replication); shown, never acted on.
    #[serde(default)]
    pub frozen: bool,
    pub report_count: i64,
    /// Declared by the reporter, seconds.
    pub report_interval: f64,
    pub version: Option<String>,
    #[serde(with = "ts")]
    pub created_at: DateTime<Utc>,
    /// Server receipt time of the newest heartbeat; `null` before the first one.
    #[serde(with = "ts::option")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Time of the last admin change (enable, disable, forced down); never moves liveness.
    #[serde(with = "ts::option")]
    pub modified_at: Option<DateTime<Utc>>,
    pub state: State,
    pub status: Status,
    /// Seconds since `updated_at` (or `created_at` before the first heartbeat), server clock.
    pub last_heartbeat_age_s: f64,
    /// Phi-accrual suspicion crossed its threshold while the service is still up.
    #[serde(default)]
    pub suspect: bool,
    /// Phi-accrual suspicion level, rounded to two decimals; `null` until enough beats are known.
    #[serde(default)]
    pub suspicion: Option<f64>,
    /// Where its heartbeats come from: `vigil` (registered with Vigil), or the name of the
    /// watch of an OpenStack database that it is a row of.
    #[serde(default = "vigil_source")]
    pub source: String,
    /// What OpenStack itself shows for a watched service (its own rule, on its database's
    /// clock); absent for Vigil's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack_state: Option<State>,
    /// The health its heartbeats last reported; `null` when none did since it registered.
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// The `message` that came with that health.
    #[serde(default)]
    pub health_message: Option<String>,
    /// The `service_down_time` that judges this service, in seconds: its own, its binary's
    /// pattern's, or the server's.
    #[serde(default)]
    pub service_down_time: Option<f64>,
    /// It went up and down at least the server's `flapping.transitions` times within
    /// `flapping.window` (as the leader of detection counted them).
    #[serde(default)]
    pub flapping: bool,
    /// Its up/down transitions within `flapping.window`.
    #[serde(default)]
    pub recent_transitions: u64,
    /// A maintenance window covers it now (`/v1/maintenance`): it is judged all the same, and
    /// its `down` events say so.
    #[serde(default)]
    pub in_maintenance: bool,
    /// The reason of that window; absent when not in maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_reason: Option<String>,
}

/// The `source` of services registered with Vigil.
pub const VIGIL_SOURCE: &str = "vigil";

fn vigil_source() -> String {
    VIGIL_SOURCE.into()
}

/// `GET /v1/services`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"services": [{"id": 1, "host": "node-1", "binary": "cinder-volume", "topic": null, "zone": "nova", "disabled": false, "disabled_reason": null, "forced_down": false, "frozen": false, "report_count": 42, "report_interval": 10.0, "version": "1.4.2", "created_at": "2026-11-25T11:00:00.000000Z", "updated_at": "2026-11-25T11:07:00.120000Z", "modified_at": null, "state": "up", "status": "enabled", "last_heartbeat_age_s": 3.2, "suspect": false, "suspicion": 0.41, "source": "vigil"}]})))]
pub struct ServiceList {
    pub services: Vec<Service>,
}

/// What happened to a service; persisted, listed by `GET /v1/events`, streamed by
/// `GET /v1/events/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"id": 17, "service_id": 1, "host": "node-1", "binary": "cinder-volume", "kind": "down", "at": "2026-11-25T11:08:01.004211Z", "reason": null, "last_seen": "2026-11-25T11:07:00.120000Z", "threshold_s": 60.0})))]
pub struct Event {
    /// Increasing; also the SSE event id, so a watcher resumes with `Last-Event-ID`.
    pub id: i64,
    pub service_id: i64,
    pub host: String,
    pub binary: String,
    /// `registered`, `down`, `up`, `disabled`, `enabled`, `forced_down`, `unforced`, `deleted`,
    /// `suspect`, `frozen`, `thawed`.
    pub kind: String,
    /// Server clock.
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    /// For `down`: the heartbeat (or creation) time that was too old.
    #[serde(default, with = "ts::option")]
    pub last_seen: Option<DateTime<Utc>>,
    /// For `down`: the `service_down_time` in force, seconds.
    #[serde(default)]
    pub threshold_s: Option<f64>,
    /// For registrations, deletions and admin changes: the name of the token that asked
    /// (`admin`, `agent`, or a token made with `vigil token create`); absent for what the
    /// server found by itself and for anonymous calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The client address the change came from, beside `actor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"events": [{"id": 17, "service_id": 1, "host": "node-1", "binary": "cinder-volume", "kind": "down", "at": "2026-11-25T11:08:01.004211Z", "reason": null, "last_seen": "2026-11-25T11:07:00.120000Z", "threshold_s": 60.0}], "next_before": null})))]
pub struct EventList {
    pub events: Vec<Event>,
    /// Pass as `before=` to get the next (older) page; `null` on the last page.
    #[serde(default)]
    pub next_before: Option<i64>,
}

/// Severity of a diagnosis finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One check of `GET /v1/services/{id}/diagnosis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"check": "heartbeats", "severity": "error", "summary": "no heartbeat for 75.2 s", "detail": "the last heartbeat was received at 2026-11-25T11:07:00.120000Z; service_down_time is 60 s", "remedy": "check that the process runs on node-1 and can reach the server"})))]
pub struct Finding {
    pub check: String,
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    pub remedy: String,
}

/// `GET /v1/services/{id}/diagnosis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Diagnosis {
    pub service: Service,
    pub findings: Vec<Finding>,
}

/// Every error the API answers: `{"error":{"code":"...","message":"..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": {"code": "service_not_found", "message": "service 9 not found"}})))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable snake_case `code` for programs and a `message` for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `GET /readyz` and `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"status": "ok", "role": "leader"})))]
pub struct Health {
    /// `ok`; `degraded` when a watch cannot read its database; or `unavailable` with a
    /// `reason`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `leader` when this server detects transitions (writes `down` events), else `follower`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Each watched OpenStack database and whether it can be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<WatchHealth>,
    /// A mass failure in progress: services held `unreachable` by the partition guard
    /// (`status` is then `degraded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_failure: Option<MassFailure>,
}

/// A mass failure in progress, in `/readyz`: many services went silent together, and the
/// ones past their deadline are held `unreachable`, not `down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MassFailure {
    pub since: DateTime<Utc>,
    /// Services held `unreachable` now.
    pub unreachable: u64,
    /// Silent services, of `total` counted, when it began.
    pub silent: u64,
    pub total: u64,
    /// What it may mean, and what to do.
    pub message: String,
}

/// Body of `POST /v1/confirm-down`: which services held `unreachable` to declare `down`
/// (every one when both are absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfirmDownRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
}

/// Answer of `POST /v1/confirm-down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmDownResponse {
    /// Services declared `down` (their `down` events name the caller).
    pub confirmed: u64,
    /// Services still held `unreachable`.
    pub unreachable: u64,
    /// Whether this server leads detection: only the leader holds services, so on a
    /// follower nothing is confirmed.
    pub leader: bool,
}

/// One watch in `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchHealth {
    /// The watch's name, the `source` of its services.
    pub name: String,
    /// `cinder` or `nova`.
    pub kind: String,
    /// `ok`, or `unreachable` with a `reason` (its services are `unknown` meanwhile).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows of the last successful poll.
    pub services: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_beat_carries_the_single_beats_fields() {
        let batch: BatchHeartbeatRequest = serde_json::from_str(
            r#"{"beats":[{"id":3},{"id":4,"zone":"z","sent_at":"2026-11-25T11:03:11.322598Z","last_error":"e"}]}"#,
        )
        .unwrap();
        assert_eq!(batch.beats[0].id, 3);
        assert_eq!(batch.beats[0].beat, HeartbeatRequest::default());
        assert_eq!(batch.beats[1].beat.zone.as_deref(), Some("z"));
        assert!(batch.beats[1].beat.sent_at.is_some());
        let again: BatchHeartbeatRequest =
            serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert_eq!(again, batch);
        assert!(serde_json::from_str::<BatchHeartbeatRequest>(r#"{"beats":[{}]}"#).is_err());
        // A beat is an object, never its fields in a row.
        assert!(serde_json::from_str::<BatchHeartbeatRequest>(r#"{"beats":[[7]]}"#).is_err());
    }

    #[test]
    fn a_batch_beat_with_every_field_round_trips() {
        // `BatchBeatFields` repeats `HeartbeatRequest`'s fields: a field added to one and not
        // the other would be lost here.
        let beat = BatchBeat {
            id: 7,
            beat: HeartbeatRequest {
                zone: Some("z".into()),
                sent_at: Some(
                    DateTime::parse_from_rfc3339("2026-11-25T11:03:11.322598Z")
                        .unwrap()
                        .with_timezone(&Utc),
                ),
                last_rtt_s: Some(0.5),
                overrun_s: Some(1.5),
                last_error: Some("e".into()),
                health: Some(HealthStatus::Warning),
                message: Some("m".into()),
            },
        };
        let text = serde_json::to_value(&beat).unwrap();
        let single = serde_json::to_value(&beat.beat).unwrap();
        assert_eq!(
            text.as_object().unwrap().len(),
            single.as_object().unwrap().len() + 1,
            "every field of a single beat is set here"
        );
        assert_eq!(serde_json::from_value::<BatchBeat>(text).unwrap(), beat);
    }

    #[test]
    fn old_heartbeat_bodies_still_parse() {
        let beat: HeartbeatRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(beat, HeartbeatRequest::default());
    }

    #[test]
    fn times_have_microseconds_and_utc() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let beat = HeartbeatRequest {
            sent_at: Some(at),
            ..Default::default()
        };
        let text = serde_json::to_string(&beat).unwrap();
        assert_eq!(text, r#"{"sent_at":"2026-01-02T03:04:05.123456Z"}"#);
    }
}

/// What a token may do: `admin` everything; `agent` register and heartbeat services on the
/// hosts its patterns match; `reader` every read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Agent,
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
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"name": "stor-fleet", "role": "agent", "hosts": ["stor-*"], "expires_in_s": 7776000})))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1 to 64 letters, digits, `-`, `_` or `.`; unique; not `admin` or `agent`.
    pub name: String,
    pub role: Role,
    /// An agent token's host patterns (globs: `stor-*`, `node-[12]`, or one host; `*` for
    /// every host): at least one. Only agent tokens have them.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The token stops working this many seconds after it is made; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<f64>,
}

/// A token, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// Host patterns of an agent token; empty: any host.
    pub hosts: Vec<String>,
    #[serde(with = "ts")]
    pub created_at: DateTime<Utc>,
    /// The name of the token that made it.
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default, with = "ts::option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether `expires_at` has passed: the token is refused.
    #[serde(default)]
    pub expired: bool,
}

/// Answer to `POST /v1/tokens`: the token and its secret, shown this once (the server keeps
/// only its SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: Token,
    /// Send as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<Token>,
}
