//! Wire types of maintenance windows (`/v1/maintenance`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ts;

/// Longest a maintenance window may last: 30 days.
pub const MAX_MAINTENANCE_S: f64 = 30.0 * 86_400.0;

/// Body of `POST /v1/maintenance`: start a window now, for `duration_s` or until `ends_at`
/// (one of the two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"host": "node-1", "binary": "cinder-volume", "duration_s": 7200, "reason": "disk swap, ticket OPS-1234"})))]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// The host whose services the window covers. Required, non-empty, at most 255 characters
    /// without control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub host: String,
    /// Only this binary of the host; absent: every binary of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub binary: Option<String>,
    /// How long the window lasts from now, in seconds (above 0, at most 30 days). Give this or
    /// `ends_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(exclusive_minimum = 0.0, maximum = 2592000.0)
    )]
    pub duration_s: Option<f64>,
    /// When the window ends: in the future, at most 30 days away. Give this or `duration_s`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "ts::option")]
    pub ends_at: Option<DateTime<Utc>>,
    /// Why: shown with the services, in their `down` events and by the doctor. Required,
    /// non-empty, at most 255 characters without control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 255,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
        )
    )]
    pub reason: String,
}

/// A maintenance window: the services of `host` (of `binary`, or every binary of the host)
/// are `in_maintenance` from `starts_at` until `ends_at`, or until it is ended early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"id": 3, "host": "node-1", "binary": "cinder-volume", "reason": "disk swap, ticket OPS-1234", "starts_at": "2026-11-25T11:00:00.000000Z", "ends_at": "2026-11-25T13:00:00.000000Z", "created_by": "ops-alice", "address": "10.0.0.7", "ended_at": null, "ended_by": null, "active": true})))]
pub struct Maintenance {
    pub id: i64,
    pub host: String,
    /// `null`: every binary of the host.
    #[serde(default)]
    pub binary: Option<String>,
    pub reason: String,
    #[serde(with = "ts")]
    pub starts_at: DateTime<Utc>,
    /// When it ends by itself.
    #[serde(with = "ts")]
    pub ends_at: DateTime<Utc>,
    /// The name of the token that started it.
    #[serde(default)]
    pub created_by: Option<String>,
    /// The client address it was started from.
    #[serde(default)]
    pub address: Option<String>,
    /// When it was ended early (`DELETE /v1/maintenance/{id}`); `null` otherwise.
    #[serde(default, with = "ts::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// The name of the token that ended it early.
    #[serde(default)]
    pub ended_by: Option<String>,
    /// Whether it holds now (started, not ended early, `ends_at` not passed).
    #[serde(default)]
    pub active: bool,
}

/// `GET /v1/maintenance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceList {
    pub windows: Vec<Maintenance>,
}
