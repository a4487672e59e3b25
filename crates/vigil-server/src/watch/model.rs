//! What one poll of a watched `services` table returns.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One non-deleted row of a watched `services` table, narrow columns only.
///
/// Times are OpenStack's: naive UTC in the database (oslo's `utcnow()`), written with the
/// clock of whichever node wrote them (`updated_at` and `last_seen_up`: the service's own node;
/// `modified_at`: the API node that took the admin change). Columns a kind does not have are
/// `None`/`false`: Nova's table has no `availability_zone`, `modified_at`, `frozen` nor
/// `cluster_name`; Cinder's has no `forced_down`, `last_seen_up` nor `version` (see
/// [`super::reader`] for where each list comes from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchedRow {
    /// The row's primary key; the identity of a row across polls (a re-created service is a
    /// new id).
    pub id: i64,
    pub host: String,
    pub binary: String,
    pub topic: Option<String>,
    pub availability_zone: Option<String>,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub report_count: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Cinder only: when an admin last changed the row (the API node's clock).
    pub modified_at: Option<DateTime<Utc>>,
    /// Cinder only: the backend is frozen (replication failover).
    pub frozen: bool,
    /// Cinder only: the cluster of an active-active volume service.
    pub cluster_name: Option<String>,
    pub uuid: Option<String>,
    /// Nova only: an admin declared the service down (`openstack compute service set
    /// --down`).
    pub forced_down: bool,
    /// Nova only: set by the servicegroup `db` driver's `report_state`, when `report_count`
    /// goes up.
    pub last_seen_up: Option<DateTime<Utc>>,
    /// Nova only: the service's object version.
    pub version: Option<i64>,
}

impl WatchedRow {
    /// The admin-controlled fields, compared by [`super::diff`].
    pub fn admin(&self) -> AdminFields {
        AdminFields {
            disabled: self.disabled,
            disabled_reason: self.disabled_reason.clone(),
            forced_down: self.forced_down,
            frozen: self.frozen,
        }
    }
}

/// What an OpenStack admin changes on a service (`openstack volume service set`, `openstack
/// compute service set`, a failover): never a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminFields {
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    pub frozen: bool,
}

/// One poll: the database's clock and the rows, read on one connection one after the other.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Poll {
    /// The database's own UTC clock, read just before the rows (`UTC_TIMESTAMP(6)` on MySQL
    /// and MariaDB, `now()` on PostgreSQL, `strftime('%Y-%m-%d %H:%M:%f', 'now')` on SQLite,
    /// whose clock is the reading machine's).
    pub db_now: DateTime<Utc>,
    /// The rows in id order.
    pub rows: Vec<WatchedRow>,
    /// How long the poll took, both statements, as this process measured it.
    #[serde(skip)]
    pub took: Duration,
    /// Seconds: the resolution of the table's time columns (1 on MySQL and MariaDB, whose
    /// `DATETIME` columns as OpenStack creates them keep no fraction; a microsecond elsewhere).
    pub time_resolution: f64,
}

impl Poll {
    /// The row with this id.
    pub fn row(&self, id: i64) -> Option<&WatchedRow> {
        self.rows
            .binary_search_by_key(&id, |row| row.id)
            .ok()
            .map(|i| &self.rows[i])
    }
}
