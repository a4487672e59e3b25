//! The embedded default: one SQLite file in WAL mode, `synchronous = FULL` so that an
//! acknowledged admin change survives a power cut. Times are stored as UTC microseconds.
//!
//! A service is two rows: `services` (what registration and admins write) and `heartbeats`
//! (`updated_at`, `report_count`: what every flush writes), read together through the
//! `service_rows` view.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::{
    Actor, AdminChange, BeatFlush, Event, EventFilter, EventKind, EventsFor, Health, Name,
    NewEvent, NewService, RegistrationReason, ServiceRecord, Store, StoreError, StoreResult,
    TokenRecord, TokenRow,
};
use super::{MaintenanceRow, MaintenanceWindow, MAINTENANCE_COLUMNS};

/// SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Taken by every write transaction before SQLite's own lock: writers queue here in
    /// order. SQLite's busy handler instead retries after sleeps of up to 100 ms, so a
    /// writer that waits there (the detector's events) can miss every gap between the
    /// flusher's back-to-back transactions and wait out a whole flush.
    writer: Arc<tokio::sync::Mutex<()>>,
}

#[derive(sqlx::FromRow)]
struct ServiceRow {
    id: i64,
    host: String,
    binary: String,
    topic: Option<String>,
    zone: String,
    disabled: bool,
    disabled_reason: Option<String>,
    forced_down: bool,
    frozen: bool,
    report_count: i64,
    report_interval: f64,
    version: Option<String>,
    created_at: i64,
    updated_at: Option<i64>,
    modified_at: Option<i64>,
    stopped_at: Option<i64>,
    health: Option<String>,
    health_message: Option<String>,
    service_down_time: Option<f64>,
}

impl From<ServiceRow> for ServiceRecord {
    fn from(row: ServiceRow) -> Self {
        ServiceRecord {
            id: row.id,
            host: row.host.into(),
            binary: row.binary.into(),
            topic: row.topic.map(Into::into),
            zone: row.zone.into(),
            disabled: row.disabled,
            forced_down: row.forced_down,
            frozen: row.frozen,
            report_count: row.report_count,
            report_interval: row.report_interval,
            version: row.version.map(Into::into),
            created_at: from_micros(row.created_at),
            updated_at: row.updated_at.map(from_micros),
            health: row.health.as_deref().and_then(Health::parse),
            service_down_time: row.service_down_time,
            row_version: 0,
            notes: None,
        }
        .with_notes(
            row.disabled_reason,
            row.health_message,
            row.modified_at.map(from_micros),
            row.stopped_at.map(from_micros),
        )
    }
}

/// One row of [`Store::load_services`]'s JSON pages, columns in [`SERVICE_COLUMNS`] order
/// (SQLite's booleans are integers).
#[derive(serde::Deserialize)]
struct PackedService(
    i64,
    Name,
    Name,
    Option<Name>,
    Name,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
    f64,
    Option<Name>,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<f64>,
);

impl PackedService {
    fn into_record(self) -> ServiceRecord {
        ServiceRecord {
            id: self.0,
            host: self.1,
            binary: self.2.into(),
            topic: self.3.map(Into::into),
            zone: self.4.into(),
            disabled: self.5 != 0,
            forced_down: self.7 != 0,
            frozen: self.8 != 0,
            report_count: self.9,
            report_interval: self.10,
            version: self.11.map(Into::into),
            created_at: from_micros(self.12),
            updated_at: self.13.map(from_micros),
            health: self.16.as_deref().and_then(Health::parse),
            service_down_time: self.18,
            row_version: 0,
            notes: None,
        }
        .with_notes(
            self.6,
            self.17,
            self.14.map(from_micros),
            self.15.map(from_micros),
        )
    }
}

/// A write transaction: `BEGIN IMMEDIATE` (the write lock from the start) on a pooled
/// connection, which goes back to the pool only after a `COMMIT` or `ROLLBACK` that succeeded.
///
/// SQLite rolls a transaction back by itself on some errors (a full disk, an I/O error), and
/// sqlx's own transactions then lose track of the connection's state: its later
/// "transactions" became savepoints inside one that never committed, holding the write lock,
/// while the API acknowledged writes that were never on disk. So transactions are plain SQL
/// here, and a connection whose transaction did not end cleanly (an error, an early return
/// without [`WriteTx::rollback`], a cancelled request) is closed instead of reused: closing
/// rolls back whatever it had open. The pool opens a fresh one when it needs it.
struct WriteTx {
    conn: Option<PoolConnection<Sqlite>>,
    /// The store's writer turn, held until the transaction ends. (A transaction dropped
    /// unfinished gives it up at once; its detached connection rolls back as it closes, and a
    /// writer that goes meanwhile meets SQLite's own lock and busy handler, as before.)
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn begin(store: &SqliteStore) -> StoreResult<WriteTx> {
        // Bounded like the pool's acquire: a database that fails every write (a read-only
        // file makes each writer wait out the acquire) must not queue writers without end.
        let turn = tokio::time::timeout(WRITER_WAIT, store.writer.clone().lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "database busy: no turn to write within {} s",
                    WRITER_WAIT.as_secs()
                ))
            })?;
        let conn = store.pool.acquire().await?;
        let mut tx = WriteTx {
            conn: Some(conn),
            _turn: turn,
        };
        sqlx::query("BEGIN IMMEDIATE").execute(tx.conn()).await?;
        Ok(tx)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a transaction in progress has its connection")
    }

    /// Commits; `Ok` only once SQLite says the commit is durable (`synchronous = FULL`).
    async fn commit(mut self) -> StoreResult<()> {
        sqlx::query("COMMIT").execute(self.conn()).await?;
        drop(self.conn.take());
        Ok(())
    }

    /// Rolls back a transaction that found nothing to do.
    async fn rollback(mut self) -> StoreResult<()> {
        sqlx::query("ROLLBACK").execute(self.conn()).await?;
        drop(self.conn.take());
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Detached, it is closed as it drops (on its worker thread), never pooled again.
            drop(conn.detach());
        }
    }
}

/// The longest a writer waits for its turn ([`SqliteStore::writer`]).
const WRITER_WAIT: Duration = Duration::from_secs(5);

/// Runs one write statement in a [`WriteTx`] of its own.
async fn write_one<'q>(
    store: &SqliteStore,
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> StoreResult<u64> {
    let mut tx = WriteTx::begin(store).await?;
    let rows = query.execute(tx.conn()).await?.rows_affected();
    tx.commit().await?;
    Ok(rows)
}

/// Whether an idle pooled connection may be handed out: not inside a transaction (never the
/// case with [`WriteTx`]; checked so that no path can leak one), and able to write (SQLite
/// opens a file it may not write, after `chmod` or `chattr +i`, read-only and keeps it so;
/// a fresh connection sees the file as it is now).
fn fit_for_use(
    conn: &mut SqliteConnection,
) -> futures_util::future::BoxFuture<'_, sqlx::Result<bool>> {
    Box::pin(async move {
        let mut handle = conn.lock_handle().await?;
        let raw = handle.as_raw_handle().as_ptr();
        // SAFETY: the handle is locked for the duration of these two reads of its state.
        let (autocommit, read_only) = unsafe {
            (
                libsqlite3_sys::sqlite3_get_autocommit(raw),
                libsqlite3_sys::sqlite3_db_readonly(raw, c"main".as_ptr()),
            )
        };
        Ok(autocommit != 0 && read_only == 0)
    })
}

/// An error opening the database: one that says the file cannot be written says so plainly.
fn opening(err: sqlx::Error) -> StoreError {
    let read_only = matches!(&err, sqlx::Error::Database(db)
        if db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 8));
    if read_only {
        StoreError::Other(format!("the database cannot be written: {err}"))
    } else {
        StoreError::Unavailable(err.to_string())
    }
}

/// The lease of the one server on an embedded database: it always leads.
struct SoleLease {
    store: SqliteStore,
}

#[async_trait]
impl super::Lease for SoleLease {
    async fn holds(&mut self) -> bool {
        true
    }

    async fn append_events(&mut self, events: &[NewEvent]) -> StoreResult<()> {
        self.store.append_events(events).await.map(|_| ())
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    service_id: i64,
    host: String,
    binary: String,
    kind: String,
    at: i64,
    reason: Option<String>,
    last_seen: Option<i64>,
    threshold_s: Option<f64>,
    actor: Option<String>,
    address: Option<String>,
}

impl EventRow {
    /// The model's event; `None` for a kind this version does not know (written by a newer
    /// one sharing the database).
    fn into_event(self) -> Option<Event> {
        Some(Event {
            id: self.id,
            service_id: self.service_id,
            host: self.host,
            binary: self.binary,
            kind: EventKind::parse(&self.kind)?,
            at: from_micros(self.at),
            reason: self.reason,
            last_seen: self.last_seen.map(from_micros),
            threshold_s: self.threshold_s,
            actor: self.actor,
            address: self.address,
        })
    }
}

const SERVICE_COLUMNS: &str = r#"id, host, "binary", topic, zone, disabled, disabled_reason,
    forced_down, frozen, report_count, report_interval, version, created_at, updated_at, modified_at,
    stopped_at, health, health_message, service_down_time"#;

/// Rows per multi-row INSERT: 7 parameters each stays under SQLite's limit of 32,766 bound
/// parameters per statement.
#[cfg(feature = "bench")]
const BULK_CHUNK: usize = 4_000;

/// Services per page of [`Store::load_services`].
const LOAD_PAGE: i64 = 10_000;

/// Heartbeats per flush statement, largest first; a batch is cut into pieces of these sizes.
/// Ending with 1 fits every batch; 512 rows keep a statement's 1,536 parameters far below
/// SQLite's limit, and the ratio of 8 bounds the statements per batch (at most 7 of each
/// smaller size).
const FLUSH_SIZES: [usize; 4] = [512, 64, 8, 1];

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(value).unwrap_or_default()
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH` or `sqlite::memory:`)
    /// and runs its migrations.
    pub async fn connect(url: &str) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("invalid database url {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // A flush statement updates hundreds of rows, and SQLite copies each page it
            // first changes into a statement journal, which spills to a temporary file
            // past 64 KiB; kept in memory, that copy is a memcpy instead of a write.
            .pragma("temp_store", "memory")
            // Up to 64 MiB of pages per connection (4 at most), instead of SQLite's 2 MB: a
            // flush touches every heartbeats page (~20 MB at a million services), and with the
            // default cache each flush read them back from the OS.
            .pragma("cache_size", "-65536");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .before_acquire(|conn, _| fit_for_use(conn))
            .connect_with(options)
            .await
            .map_err(opening)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::Execute(e) => opening(e),
                e => StoreError::Other(format!("migrations failed: {e}")),
            })?;
        let store = SqliteStore {
            pool,
            writer: Arc::default(),
        };
        // A file SQLite may read but not write opens read-only and would refuse every write
        // for as long as the server runs: better not to start.
        store
            .probe_write()
            .await
            .map_err(|e| StoreError::Other(format!("the database cannot be written: {e}")))?;
        Ok(store)
    }

    async fn insert_events(
        tx: &mut SqliteConnection,
        events: &[NewEvent],
    ) -> StoreResult<Vec<i64>> {
        let mut ids = Vec::with_capacity(events.len());
        for event in events {
            let id: i64 = sqlx::query_scalar(
                r#"INSERT INTO events (service_id, host, "binary", kind, at, reason, last_seen,
                                      threshold_s, actor, address)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"#,
            )
            .bind(event.service_id)
            .bind(&event.host)
            .bind(&event.binary)
            .bind(event.kind.as_str())
            .bind(micros(event.at))
            .bind(&event.reason)
            .bind(event.last_seen.map(micros))
            .bind(event.threshold_s)
            .bind(&event.actor)
            .bind(&event.address)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn fetch_service(
        conn: &mut SqliteConnection,
        id: i64,
    ) -> StoreResult<Option<ServiceRecord>> {
        let row: Option<ServiceRow> = sqlx::query_as(&format!(
            "SELECT {SERVICE_COLUMNS} FROM service_rows WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(Into::into))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load_services(
        &self,
        page: &mut (dyn FnMut(Vec<ServiceRecord>) + Send),
    ) -> StoreResult<()> {
        // Pages of rows packed into one JSON value each, rather than a row at a time: sqlx
        // hands every row from its SQLite worker thread to the caller through a channel (a
        // thread wake-up) and copies every value on the way, which at a million services was
        // most of the start-up time. SQLite writes the JSON in C; serde reads it back. The
        // next page is read (on its own task, by SQLite's thread) while this one is parsed and
        // filed, so that the two halves of the work share the machine's cores. (A third stage,
        // the parse on a thread of its own, gained nothing on two cores: 11.2-11.6 s either way
        // at ten million.) A page's rows are packed in whatever order the scan gives them and
        // put in id order here: an `ORDER BY` in the aggregate made SQLite sort every page
        // again in a temporary B-tree, a third of its thread's time.
        let read = |after: i64| {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                sqlx::query_as::<_, (Option<String>, Option<i64>)>(
                    r#"SELECT json_group_array(json_array(id, host, "binary", topic, zone,
                               disabled, disabled_reason, forced_down, frozen, report_count,
                               report_interval, version, created_at, updated_at, modified_at,
                               stopped_at, health, health_message, service_down_time)),
                              MAX(id)
                       FROM (SELECT * FROM service_rows WHERE id > ? ORDER BY id LIMIT ?)"#,
                )
                .bind(after)
                .bind(LOAD_PAGE)
                .fetch_one(&pool)
                .await
            })
        };
        let joined = |result: Result<_, tokio::task::JoinError>| {
            result.map_err(|e| StoreError::Other(format!("cannot read services: {e}")))
        };
        let mut next = read(i64::MIN);
        loop {
            let (json, last) = joined(next.await)??;
            let Some(last) = last else {
                return Ok(());
            };
            next = read(last);
            let rows: Vec<PackedService> =
                match serde_json::from_str(json.as_deref().unwrap_or("[]")) {
                    Ok(rows) => rows,
                    Err(e) => {
                        next.abort();
                        return Err(StoreError::Other(format!("cannot read services: {e}")));
                    }
                };
            let mut records: Vec<ServiceRecord> =
                rows.into_iter().map(PackedService::into_record).collect();
            // In id order, which the scan gives in practice (so this costs one pass) and
            // which keeps the registry's table of ids dense.
            records.sort_unstable_by_key(|r| r.id);
            page(records);
        }
    }

    #[cfg(feature = "bench")]
    async fn bulk_insert_services(
        &self,
        services: &[NewService],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = WriteTx::begin(self).await?;
        for chunk in services.chunks(BULK_CHUNK) {
            let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
                r#"INSERT INTO services (host, "binary", topic, zone, report_interval, version, created_at) "#,
            );
            query.push_values(chunk, |mut row, new| {
                row.push_bind(&new.host)
                    .push_bind(&new.binary)
                    .push_bind(&new.topic)
                    .push_bind(&new.zone)
                    .push_bind(new.report_interval)
                    .push_bind(&new.version)
                    .push_bind(micros(at));
            });
            query.build().execute(tx.conn()).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_service(&self, id: i64) -> StoreResult<Option<ServiceRecord>> {
        let mut conn = self.pool.acquire().await?;
        Self::fetch_service(&mut conn, id).await
    }

    async fn register(
        &self,
        new: &NewService,
        at: DateTime<Utc>,
        by: &Actor,
    ) -> StoreResult<(ServiceRecord, bool)> {
        let mut tx = WriteTx::begin(self).await?;
        let inserted: Option<i64> = sqlx::query_scalar(
            r#"INSERT INTO services (host, "binary", topic, zone, report_interval, version, created_at,
                   service_down_time)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (host, "binary") DO NOTHING
               RETURNING id"#,
        )
        .bind(&new.host)
        .bind(&new.binary)
        .bind(&new.topic)
        .bind(&new.zone)
        .bind(new.report_interval)
        .bind(&new.version)
        .bind(micros(at))
        .bind(new.service_down_time)
        .fetch_optional(tx.conn())
        .await?;
        let (id, created) = match inserted {
            Some(id) => (id, true),
            None => {
                let id: i64 = sqlx::query_scalar(
                    r#"UPDATE services SET topic = COALESCE(?, topic), zone = ?,
                           report_interval = ?, version = COALESCE(?, version),
                           stopped_at = NULL, health = NULL, health_message = NULL,
                           service_down_time = ?
                       WHERE host = ? AND "binary" = ?
                       RETURNING id"#,
                )
                .bind(&new.topic)
                .bind(&new.zone)
                .bind(new.report_interval)
                .bind(&new.version)
                .bind(new.service_down_time)
                .bind(&new.host)
                .bind(&new.binary)
                .fetch_one(tx.conn())
                .await?;
                (id, false)
            }
        };
        let record = Self::fetch_service(tx.conn(), id)
            .await?
            .ok_or_else(|| StoreError::Other(format!("service {id} vanished while registering")))?;
        let mut event = NewEvent::about(&record, super::EventKind::Registered, at).by(by);
        event.reason = Some(RegistrationReason::new(created).as_str().into());
        Self::insert_events(tx.conn(), &[event]).await?;
        tx.commit().await?;
        Ok((record, created))
    }

    async fn update_admin(
        &self,
        id: i64,
        change: &AdminChange,
        at: DateTime<Utc>,
        events_for: &EventsFor<'_>,
    ) -> StoreResult<Option<ServiceRecord>> {
        // BEGIN IMMEDIATE: the write lock is held before the row its events are derived from
        // is read.
        let mut tx = WriteTx::begin(self).await?;
        let Some(before) = Self::fetch_service(tx.conn(), id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let events = events_for(&before);
        let (set_reason, reason) = match &change.disabled_reason {
            Some(reason) => (true, reason.clone()),
            None => (false, None),
        };
        sqlx::query(
            r#"UPDATE services SET
                   disabled = COALESCE(?, disabled),
                   disabled_reason = CASE WHEN ? THEN ? ELSE disabled_reason END,
                   forced_down = COALESCE(?, forced_down),
                   frozen = COALESCE(?, frozen),
                   modified_at = ?
               WHERE id = ?"#,
        )
        .bind(change.disabled)
        .bind(set_reason)
        .bind(reason)
        .bind(change.forced_down)
        .bind(change.frozen)
        .bind(micros(at))
        .bind(id)
        .execute(tx.conn())
        .await?;
        let Some(after) = Self::fetch_service(tx.conn(), id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        Self::insert_events(tx.conn(), &events).await?;
        tx.commit().await?;
        Ok(Some(after))
    }

    async fn stop(&self, id: i64, event: &NewEvent) -> StoreResult<Option<ServiceRecord>> {
        let mut tx = WriteTx::begin(self).await?;
        let stopped = sqlx::query("UPDATE services SET stopped_at = ? WHERE id = ?")
            .bind(micros(event.at))
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected()
            > 0;
        let after = match stopped {
            true => Self::fetch_service(tx.conn(), id).await?,
            false => None,
        };
        let Some(after) = after else {
            tx.rollback().await?;
            return Ok(None);
        };
        Self::insert_events(tx.conn(), std::slice::from_ref(event)).await?;
        tx.commit().await?;
        Ok(Some(after))
    }

    async fn delete(&self, id: i64, event: &NewEvent) -> StoreResult<bool> {
        let mut tx = WriteTx::begin(self).await?;
        let deleted = sqlx::query("DELETE FROM services WHERE id = ?")
            .bind(id)
            .execute(tx.conn())
            .await?
            .rows_affected()
            > 0;
        if deleted {
            Self::insert_events(tx.conn(), std::slice::from_ref(event)).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn flush_beats(&self, beats: &[BeatFlush]) -> StoreResult<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = WriteTx::begin(self).await?;
        // Zones and health change rarely (a reporter moved, a service degraded); they go to
        // the wide row, one by one.
        for beat in beats {
            if let Some(zone) = &beat.zone {
                sqlx::query("UPDATE services SET zone = ? WHERE id = ?")
                    .bind(zone)
                    .bind(beat.id)
                    .execute(tx.conn())
                    .await?;
            }
            if let Some((health, message)) = &beat.health {
                sqlx::query("UPDATE services SET health = ?, health_message = ? WHERE id = ?")
                    .bind(health.as_str())
                    .bind(message)
                    .bind(beat.id)
                    .execute(tx.conn())
                    .await?;
            }
        }
        // Many rows per statement rather than one: each statement is a round trip to sqlx's
        // SQLite worker thread (two thread wake-ups), which cost more than the update itself;
        // at 100,000 rows a second they were a fifth of the server's CPU. Only the few sizes
        // of FLUSH_SIZES are used, so each statement is parsed once and then cached: parsing
        // a statement of every batch's own size cost as much again.
        let mut rest = beats;
        for size in FLUSH_SIZES {
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                let mut query: QueryBuilder<Sqlite> =
                    QueryBuilder::new("WITH v (id, updated_at, delta) AS (");
                query.push_values(chunk, |mut row, beat| {
                    row.push_bind(beat.id)
                        .push_bind(micros(beat.updated_at))
                        .push_bind(beat.report_count_delta);
                });
                query.push(
                    r#") UPDATE heartbeats SET
                           updated_at = MAX(COALESCE(heartbeats.updated_at, 0), v.updated_at),
                           report_count = heartbeats.report_count + v.delta
                       FROM v WHERE heartbeats.id = v.id"#,
                );
                query.build().execute(tx.conn()).await?;
                rest = tail;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The default, but two in the crate's own tests.
    fn flush_transaction_rows(&self) -> usize {
        // A handful of services then make several transactions.
        if cfg!(test) {
            2
        } else {
            20_000
        }
    }

    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
        let mut tx = WriteTx::begin(self).await?;
        let ids = Self::insert_events(tx.conn(), events).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
            r#"SELECT id, service_id, host, "binary", kind, at, reason, last_seen, threshold_s,
                      actor, address
               FROM events WHERE 1 = 1"#,
        );
        if let Some(id) = filter.service_id {
            query.push(" AND service_id = ").push_bind(id);
        }
        if let Some(host) = &filter.host {
            query.push(" AND host = ").push_bind(host.clone());
        }
        if let Some(binary) = &filter.binary {
            query.push(r#" AND "binary" = "#).push_bind(binary.clone());
        }
        if let Some(kind) = filter.kind {
            query.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(since) = filter.since {
            query.push(" AND at >= ").push_bind(micros(since));
        }
        if let Some(before) = filter.before {
            query.push(" AND id < ").push_bind(before);
        }
        match filter.after {
            Some(after) => query
                .push(" AND id > ")
                .push_bind(after)
                .push(" ORDER BY id ASC"),
            None => query.push(" ORDER BY id DESC"),
        };
        query.push(" LIMIT ").push_bind(filter.limit);
        let rows: Vec<EventRow> = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().filter_map(EventRow::into_event).collect())
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        // Each service's latest down/up event stays, however old: it is where a new detector
        // starts from (see `last_transitions`); without it a long-dead service would get a
        // fresh `down` at the next restart.
        let query = sqlx::query(
            "DELETE FROM events WHERE at < ? AND id NOT IN (
                 SELECT MAX(id) FROM events WHERE kind IN ('down', 'up', 'stopped') GROUP BY service_id
             )",
        )
        .bind(micros(before));
        write_one(self, query).await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows: Vec<TokenRow<i64>> = sqlx::query_as(
            "SELECT name, role, hosts, hash, created_at, created_by, expires_at FROM tokens
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| row.into_token(from_micros))
            .collect())
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<bool> {
        let query = sqlx::query(
            "INSERT INTO tokens (name, role, hosts, hash, created_at, created_by, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(token.hosts.join("\n"))
        .bind(&token.hash)
        .bind(micros(token.created_at))
        .bind(&token.created_by)
        .bind(token.expires_at.map(micros));
        Ok(write_one(self, query).await? == 1)
    }

    async fn revoke_token(&self, name: &str) -> StoreResult<bool> {
        let query = sqlx::query("DELETE FROM tokens WHERE name = ?").bind(name);
        Ok(write_one(self, query).await? == 1)
    }

    async fn create_maintenance(
        &self,
        window: &MaintenanceWindow,
    ) -> StoreResult<MaintenanceWindow> {
        let mut tx = WriteTx::begin(self).await?;
        let row: MaintenanceRow<i64> = sqlx::query_as(&format!(
            r#"INSERT INTO maintenance (host, "binary", reason, starts_at, ends_at, created_by,
                                        address)
               VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {MAINTENANCE_COLUMNS}"#
        ))
        .bind(&window.host)
        .bind(&window.binary)
        .bind(&window.reason)
        .bind(micros(window.starts_at))
        .bind(micros(window.ends_at))
        .bind(&window.created_by)
        .bind(&window.address)
        .fetch_one(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.into_window(from_micros))
    }

    async fn end_maintenance(
        &self,
        id: i64,
        at: DateTime<Utc>,
        by: Option<&str>,
    ) -> StoreResult<Option<MaintenanceWindow>> {
        let mut tx = WriteTx::begin(self).await?;
        let row: Option<MaintenanceRow<i64>> = sqlx::query_as(&format!(
            "UPDATE maintenance SET ended_at = ?, ended_by = ?
             WHERE id = ? AND ended_at IS NULL AND ends_at > ? RETURNING {MAINTENANCE_COLUMNS}"
        ))
        .bind(micros(at))
        .bind(by)
        .bind(id)
        .bind(micros(at))
        .fetch_optional(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(row.map(|row| row.into_window(from_micros)))
    }

    async fn list_maintenance(
        &self,
        active_at: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<MaintenanceWindow>> {
        let rows: Vec<MaintenanceRow<i64>> = match active_at {
            Some(at) => {
                sqlx::query_as(&format!(
                    "SELECT {MAINTENANCE_COLUMNS} FROM maintenance
                     WHERE ended_at IS NULL AND ends_at > ? ORDER BY id"
                ))
                .bind(micros(at))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "SELECT {MAINTENANCE_COLUMNS} FROM maintenance ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|row| row.into_window(from_micros))
            .collect())
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        let query = sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value);
        write_one(self, query).await.map(|_| ())
    }

    async fn last_transitions(&self) -> StoreResult<Vec<(i64, EventKind)>> {
        // SQLite returns the bare column `kind` from the row holding MAX(id).
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT service_id, kind, MAX(id) FROM events WHERE kind IN ('down', 'up', 'stopped') GROUP BY service_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, kind, _)| EventKind::parse(&kind).map(|k| (id, k)))
            .collect())
    }

    async fn try_lead(&self) -> StoreResult<Option<Box<dyn super::Lease>>> {
        Ok(Some(Box::new(SoleLease {
            store: self.clone(),
        })))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn probe_write(&self) -> StoreResult<()> {
        // A value that changes, so that the commit writes a page: a commit of nothing would
        // not notice a full disk.
        let query = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('write_probe', ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(micros(Utc::now()).to_string());
        write_one(self, query).await.map(|_| ())
    }

    async fn clock_sample(
        &self,
        _local: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> StoreResult<Option<super::ClockSample>> {
        Ok(None)
    }
}

/// Faults and readings for tests elsewhere in the crate, so that no SQL leaves `store/`.
#[cfg(test)]
pub(crate) mod testing {
    use sqlx::{Connection, SqliteConnection};

    /// A connection of the test's own to the database at `url`.
    pub(crate) async fn connect(url: &str) -> SqliteConnection {
        SqliteConnection::connect(url).await.unwrap()
    }

    /// From now on, every transaction that does `action` (`UPDATE ON heartbeats`) to a row
    /// matching `when` fails: a fault from the database itself, a trigger named `name` raising.
    async fn inject_fault(conn: &mut SqliteConnection, name: &str, action: &str, when: &str) {
        sqlx::query(&format!(
            "CREATE TRIGGER {name} BEFORE {action} WHEN {when}
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        ))
        .execute(conn)
        .await
        .unwrap();
    }

    /// Ends [`inject_fault`]'s fault `name`.
    async fn end_fault(conn: &mut SqliteConnection, name: &str) {
        sqlx::query(&format!("DROP TRIGGER {name}"))
            .execute(conn)
            .await
            .unwrap();
    }

    /// From now on, every transaction that writes service `id`'s heartbeat row fails: a fault
    /// from the database itself (a trigger raising), on that row only.
    pub(crate) async fn break_heartbeat_row(conn: &mut SqliteConnection, id: i64) {
        let when = format!("NEW.id = {id}");
        inject_fault(conn, "fault", "UPDATE ON heartbeats", &when).await;
    }

    /// Ends [`break_heartbeat_row`]'s fault.
    pub(crate) async fn mend_heartbeat_row(conn: &mut SqliteConnection) {
        end_fault(conn, "fault").await;
    }

    /// From now on, every transaction that appends a `kind` event of service `id` fails.
    pub(crate) async fn break_event_inserts(conn: &mut SqliteConnection, id: i64, kind: &str) {
        let when = format!("NEW.service_id = {id} AND NEW.kind = '{kind}'");
        inject_fault(conn, "event_fault", "INSERT ON events", &when).await;
    }

    /// Ends [`break_event_inserts`]'s fault.
    pub(crate) async fn mend_event_inserts(conn: &mut SqliteConnection) {
        end_fault(conn, "event_fault").await;
    }

    /// The stored `report_count` of each of `ids`.
    pub(crate) async fn stored_counts(conn: &mut SqliteConnection, ids: &[i64]) -> Vec<i64> {
        let mut counts = Vec::new();
        for id in ids {
            let count: i64 = sqlx::query_scalar("SELECT report_count FROM heartbeats WHERE id = ?")
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            counts.push(count);
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, Store};

    fn service(host: &str, topic: Option<&str>) -> NewService {
        NewService {
            host: host.into(),
            binary: "cinder-volume".into(),
            topic: topic.map(Into::into),
            zone: "az-1".into(),
            report_interval: 2.5,
            version: None,
            service_down_time: None,
        }
    }

    /// A database written before the heartbeat fields had their own table keeps every
    /// service's count and last heartbeat through the migration.
    #[tokio::test]
    async fn heartbeats_migration_keeps_the_counts() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        for script in [
            include_str!("../../migrations/sqlite/0001_services.sql"),
            include_str!("../../migrations/sqlite/0002_transitions_index.sql"),
        ] {
            sqlx::raw_sql(script).execute(&pool).await.unwrap();
        }
        sqlx::query(
            r#"INSERT INTO services (id, host, "binary", zone, report_interval, created_at,
                   report_count, updated_at)
               VALUES (7, 'h', 'b', 'nova', 10, 1, 42, 1700000000000000), (8, 'h', 'c', 'nova', 10, 1, 0, NULL)"#,
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::raw_sql(include_str!("../../migrations/sqlite/0003_heartbeats.sql"))
            .execute(&pool)
            .await
            .unwrap();
        let rows: Vec<(i64, i64, Option<i64>)> =
            sqlx::query_as("SELECT id, report_count, updated_at FROM service_rows ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(rows, [(7, 42, Some(1_700_000_000_000_000)), (8, 0, None)]);
        sqlx::query("DELETE FROM services WHERE id = 7")
            .execute(&pool)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM heartbeats")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 1);
    }

    /// The packed JSON pages of `load_services` give back exactly the rows, odd text and
    /// NULLs included.
    #[tokio::test]
    async fn loaded_services_are_the_stored_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let (odd, _) = store
            .register(&service("h\"ö\\\n✓", Some("volume")), at, &Actor::default())
            .await
            .unwrap();
        let (plain, _) = store
            .register(&service("plain", None), at, &Actor::default())
            .await
            .unwrap();
        let change = AdminChange {
            disabled: Some(true),
            disabled_reason: Some(Some("disk \"sdb\" failed".into())),
            ..AdminChange::default()
        };
        let events_for =
            |before: &ServiceRecord| vec![NewEvent::about(before, EventKind::Disabled, at)];
        store
            .update_admin(odd.id, &change, at, &events_for)
            .await
            .unwrap();
        let beat = BeatFlush {
            id: plain.id,
            updated_at: at,
            report_count_delta: 3,
            zone: Some("az-2".into()),
            health: None,
        };
        store.flush_beats(&[beat]).await.unwrap();
        let mut expected = Vec::new();
        for id in [odd.id, plain.id] {
            expected.push(store.get_service(id).await.unwrap().unwrap());
        }
        let mut loaded = Vec::new();
        store
            .load_services(&mut |page| loaded.extend(page))
            .await
            .unwrap();
        assert_eq!(loaded, expected);
        assert_eq!(expected[1].report_count, 3);
        assert!(expected[0].disabled);
    }
}
