//! Durable storage behind the in-memory registry. It speaks the types of [`crate::model`];
//! the wire types (`vigil_proto`) are the APIs' business.
//!
//! [`Store`] is the one interface the rest of the server uses; each database has its own
//! implementation with its own SQL and its own `migrations/` folder, run at start-up.
//!
//! **Only this module knows SQL.**

use async_trait::async_trait;
use chrono::{DateTime, Utc};

mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
#[cfg(test)]
pub(crate) use sqlite::testing as sqlite_testing;
pub use sqlite::SqliteStore;

pub use crate::model::{
    Actor, AdminChange, BeatFlush, BeatState, ClockSample, Event, EventKind, Health,
    MaintenanceWindow, Name, NewEvent, NewService, RegistrationReason, Role, ServiceRecord,
    TokenRecord,
};

/// Derives the events of an admin change from the row as it was before the change.
/// Meta key holding the last time a server was known to be watching (for the grace rule):
/// written by every flush.
pub const LAST_ALIVE: &str = "last_alive";

pub type EventsFor<'a> = dyn for<'r> Fn(&'r ServiceRecord) -> Vec<NewEvent> + Send + Sync + 'a;

/// Which events to list; all filters are ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub service_id: Option<i64>,
    pub host: Option<String>,
    pub binary: Option<String>,
    pub kind: Option<EventKind>,
    pub since: Option<DateTime<Utc>>,
    /// Only events with a smaller id (paging towards older events).
    pub before: Option<i64>,
    /// Only events with a larger id, oldest first (tailing a stream).
    pub after: Option<i64>,
    pub limit: i64,
}

/// A row of `tokens`, with the time type of its database.
#[derive(sqlx::FromRow)]
struct TokenRow<T> {
    name: String,
    role: String,
    hosts: String,
    hash: String,
    created_at: T,
    created_by: Option<String>,
    expires_at: Option<T>,
}

impl<T> TokenRow<T> {
    /// The model's token; `None` for a role this version does not know.
    fn into_token(self, time: impl Fn(T) -> DateTime<Utc>) -> Option<TokenRecord> {
        Some(TokenRecord {
            role: Role::parse(&self.role)?,
            hosts: self
                .hosts
                .lines()
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
            name: self.name,
            hash: self.hash,
            created_at: time(self.created_at),
            created_by: self.created_by,
            expires_at: self.expires_at.map(time),
        })
    }
}

/// A row of `maintenance`, with the time type of its database.
#[derive(sqlx::FromRow)]
struct MaintenanceRow<T> {
    id: i64,
    host: String,
    binary: Option<String>,
    reason: String,
    starts_at: T,
    ends_at: T,
    created_by: Option<String>,
    address: Option<String>,
    ended_at: Option<T>,
    ended_by: Option<String>,
}

/// The columns of [`MaintenanceRow`], in a `SELECT` or `RETURNING`.
const MAINTENANCE_COLUMNS: &str =
    r#"id, host, "binary", reason, starts_at, ends_at, created_by, address, ended_at, ended_by"#;

impl<T> MaintenanceRow<T> {
    fn into_window(self, time: impl Fn(T) -> DateTime<Utc>) -> MaintenanceWindow {
        MaintenanceWindow {
            id: self.id,
            host: self.host,
            binary: self.binary,
            reason: self.reason,
            starts_at: time(self.starts_at),
            ends_at: time(self.ends_at),
            created_by: self.created_by,
            address: self.address,
            ended_at: self.ended_at.map(&time),
            ended_by: self.ended_by,
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer: the caller may retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::Database(ref db)
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
            {
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                if sqlite_unavailable(code) {
                    StoreError::Unavailable(err.to_string())
                } else {
                    StoreError::Other(err.to_string())
                }
            }
            sqlx::Error::Database(ref db) if db.code().as_deref().is_some_and(unavailable_code) => {
                StoreError::Unavailable(err.to_string())
            }
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// SQLSTATEs with which a database says it cannot serve now, rather than that the request is
/// wrong: connection exceptions (class 08), shutting down or starting up (57P01 to 57P05), and
/// too many connections (53300), and the server-side timeouts Vigil sets so that a stalled
/// peer cannot hold the write lock: lock wait (55P03), statement (57014), idle in transaction
/// (25P03). A stopped PostgreSQL answers 57P01 on every open connection.
/// Also: insufficient resources (class 53: a full disk, out of memory, too many
/// connections), system errors (class 58: I/O), and a read-only transaction (25006: a standby,
/// or `default_transaction_read_only`). None of them is the request's fault, and each clears.
fn unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || code.starts_with("53")
        || code.starts_with("58")
        || matches!(code, "55P03" | "57014" | "25P03" | "25006")
}

/// SQLite result codes (primary code in the low byte) with which the file or its disk, not
/// the request, is at fault: busy or locked (5, 6), read-only (8), an I/O error (10), a
/// corrupt file (11), a full disk (13), a file that cannot be opened (14), not a database (26).
fn sqlite_unavailable(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26)
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Leadership of detection, held while the lease holds.
#[async_trait]
pub trait Lease: Send {
    /// `false` once leadership is lost (the connection that held it broke).
    async fn holds(&mut self) -> bool;

    /// Appends the leader's events (`down`, `up`, `suspect`) under the lease: once the lease is
    /// lost, this fails, so a deposed leader cannot write a transition its successor writes
    /// too.
    async fn append_events(&mut self, events: &[NewEvent]) -> StoreResult<()>;
}

/// Durable storage of services and their history.
///
/// Every method that changes something commits before it returns, so that what the API
/// acknowledges is on disk.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Every service, for the in-memory table at start-up: handed to `page` a page at a time,
    /// in id order, so that the caller files one page while the next is read and no list of
    /// every row is ever held (at ten million services, 2 GB more at the start's peak).
    async fn load_services(
        &self,
        page: &mut (dyn FnMut(Vec<ServiceRecord>) + Send),
    ) -> StoreResult<()>;

    #[cfg(feature = "bench")]
    /// Inserts many new services at once, all created at `at`, without `registered` events.
    /// For benchmarks and bulk imports only: [`Store::register`] commits one transaction per
    /// service, which at a million services takes far longer than anything a benchmark wants
    /// to measure. Fails if a (host, binary) is already present.
    async fn bulk_insert_services(
        &self,
        services: &[NewService],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// One service by id, read through to the database (other replicas may have created it).
    async fn get_service(&self, id: i64) -> StoreResult<Option<ServiceRecord>>;

    /// Get-or-create by (host, binary), as Cinder's `Service.start()`. An existing row takes the
    /// newly declared topic, interval and version. Appends a `registered` event either way, so
    /// restarts (and crash loops) are visible. Returns the row and whether it was created.
    async fn register(
        &self,
        new: &NewService,
        at: DateTime<Utc>,
        by: &Actor,
    ) -> StoreResult<(ServiceRecord, bool)>;

    /// Applies an admin change and appends the events `events_for` derives from the row as it
    /// was, all in one transaction that no other write interleaves with, so concurrent changes
    /// (through several replicas) each record exactly the transitions they made. `None` when
    /// the service does not exist.
    async fn update_admin(
        &self,
        id: i64,
        change: &AdminChange,
        at: DateTime<Utc>,
        events_for: &EventsFor<'_>,
    ) -> StoreResult<Option<ServiceRecord>>;

    /// Marks a service stopped at `event.at` (a clean exit it announced) and appends its
    /// `stopped` event in one transaction. `None` when the service does not exist.
    async fn stop(&self, id: i64, event: &NewEvent) -> StoreResult<Option<ServiceRecord>>;

    /// Deletes a service and appends its `deleted` event in one transaction. `false` when it
    /// did not exist.
    async fn delete(&self, id: i64, event: &NewEvent) -> StoreResult<bool>;

    /// Writes a batch of heartbeats in one transaction. Rows deleted meanwhile are skipped.
    /// The batch comes in id order ([`crate::registry::Registry::take_dirty`]), the order of
    /// the primary key.
    async fn flush_beats(&self, beats: &[BeatFlush]) -> StoreResult<()>;

    /// The most services one [`Store::flush_beats`] should be given: the flusher splits a
    /// larger batch into transactions of this size. Both databases have one writer at a time
    /// (SQLite's lock; PostgreSQL's advisory write lock, which orders the change feed), and
    /// one transaction of every dirty service kept every other writer waiting: at ten million
    /// services beating every 30 s, SQLite's flush held its lock for 0.8 s and delayed the
    /// detector's `down` events past 2 s; PostgreSQL's held the advisory lock for 9 s, past
    /// the detector's 5 s limit on writing its events. 20,000 rows take about 50 ms on SQLite
    /// and 90 ms on PostgreSQL on this kind of machine.
    fn flush_transaction_rows(&self) -> usize {
        20_000
    }

    /// Appends events; returns their ids in order.
    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>>;

    /// Events matching `filter`: newest first, or oldest first when `filter.after` is set.
    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>>;

    /// Deletes events older than `before`; returns how many.
    async fn prune_events(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Every token that has not been revoked (expired ones included: they are listed, and
    /// refused when used).
    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>>;

    /// Adds a token; `false` when one of that name exists.
    async fn create_token(&self, token: &TokenRecord) -> StoreResult<bool>;

    /// Revokes (deletes) a token; `false` when there is none of that name.
    async fn revoke_token(&self, name: &str) -> StoreResult<bool>;

    /// Stores a new maintenance window; returns it with its id.
    async fn create_maintenance(
        &self,
        window: &MaintenanceWindow,
    ) -> StoreResult<MaintenanceWindow>;

    /// Ends a maintenance window early, at `at`, by `by`; `None` when there is no such window
    /// or it has ended already (early, or at its `ends_at`).
    async fn end_maintenance(
        &self,
        id: i64,
        at: DateTime<Utc>,
        by: Option<&str>,
    ) -> StoreResult<Option<MaintenanceWindow>>;

    /// Maintenance windows in id order: those not ended at `active_at` (not ended early,
    /// `ends_at` after it), or every window kept when `None`.
    async fn list_maintenance(
        &self,
        active_at: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<MaintenanceWindow>>;

    /// A small fact about the server itself.
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()>;

    /// Whether several servers may share this database: then each polls the others' changes
    /// ([`Store::changes_since`]) and one at a time leads detection ([`Store::try_lead`]).
    fn shared(&self) -> bool {
        false
    }

    /// Whether another server on this database is watching now (it holds the detection
    /// lease), so that the heartbeats it received meanwhile are in the database: a server
    /// that starts beside it owes no one a grace period. Never, on an embedded database.
    async fn watched_by_others(&self) -> StoreResult<bool> {
        Ok(false)
    }

    /// The cursor of [`Store::changes_since`] that covers everything written so far.
    async fn change_cursor(&self) -> StoreResult<i64> {
        Ok(0)
    }

    /// Services written (registered, changed, zone moved) after `cursor`, oldest
    /// change first, at most `limit`; and the cursor to ask from next time. Flushed heartbeats
    /// are [`Store::beats_since`]'s.
    async fn changes_since(
        &self,
        cursor: i64,
        _limit: i64,
    ) -> StoreResult<(Vec<ServiceRecord>, i64)> {
        Ok((Vec::new(), cursor))
    }

    /// The cursor of [`Store::beats_since`] that covers every heartbeat flushed so far.
    async fn beat_cursor(&self) -> StoreResult<i64> {
        Ok(0)
    }

    /// Heartbeats other servers flushed after `cursor`, oldest first; the cursor to ask from
    /// next time; and whether more are waiting (ask again at once).
    async fn beats_since(&self, cursor: i64) -> StoreResult<(Vec<BeatState>, i64, bool)> {
        Ok((Vec::new(), cursor, false))
    }

    /// Tries to become the one server that detects transitions. `None`: another server leads.
    /// An unshared database has one server, which always leads.
    async fn try_lead(&self) -> StoreResult<Option<Box<dyn Lease>>>;

    /// The latest `down`, `up` or `stopped` event of every service that has one: where the history left
    /// each service, so a new detector neither repeats nor misses a transition.
    async fn last_transitions(&self) -> StoreResult<Vec<(i64, EventKind)>>;

    /// Cheap round trip.
    async fn ping(&self) -> StoreResult<()>;

    /// Commits a tiny write, for `/readyz`: a database that answers reads may still refuse
    /// writes (a full disk, a read-only file or standby).
    async fn probe_write(&self) -> StoreResult<()>;

    /// A reading of the database's clock, when it has one that replicas share (PostgreSQL);
    /// `None` for an embedded database, whose clock is this process's. Taken on a connection
    /// already held, so that the round trip it is bracketed by (`local` before and after) is
    /// the query's alone, never a wait for the pool; the best of a few readings.
    async fn clock_sample(
        &self,
        local: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> StoreResult<Option<ClockSample>>;
}
