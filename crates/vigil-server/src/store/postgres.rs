//! PostgreSQL, for several stateless server replicas sharing one database. Times are
//! `TIMESTAMPTZ` (microseconds, as SQLite's integers).
//!
//! Three things differ from SQLite, where one process with one writer at a time owns the file:
//! - Every write takes one advisory lock first (see [`lock_writes`]), so that sequence values
//!   (event ids, `row_version`, beat log versions) become visible in order.
//! - Replicas read each other's writes: admin changes through `services.row_version`,
//!   heartbeats through `beat_log`, one entry per flush statement.
//! - A service is two rows, as on SQLite (`services` and `heartbeats`, read together through
//!   `service_rows`), and here the heartbeats row is updated in place (HOT, see migration 0003).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder};

use super::{
    Actor, AdminChange, BeatFlush, BeatState, Event, EventFilter, EventKind, EventsFor, NewEvent,
    NewService, RegistrationReason, ServiceRecord, Store, StoreError, StoreResult, TokenRecord,
    TokenRow,
};
use super::{MaintenanceRow, MaintenanceWindow, MAINTENANCE_COLUMNS};

/// How long a call waits for a connection before it reports the database `Unavailable`: short,
/// so that a dead database is an answer, not a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Rows per statement when flushing heartbeats or appending events (bounds the size of one
/// statement's parameters for very large batches), and per page of the start-up's load.
const CHUNK: usize = 10_000;

/// How long `beat_log` keeps an entry. A replica that has not read the log for longer (a
/// network cut, a stopped VM) reads the heartbeats table whole instead: one scan of a narrow
/// table, cheaper than keeping minutes of log at a million services.
const BEAT_LOG_KEEP: Duration = Duration::from_secs(30);

/// Log entries per page of [`Store::beats_since`] (each holds up to [`CHUNK`] heartbeats).
const BEAT_LOG_PAGE: i64 = 16;

/// Meta key: the newest `beat_log` version pruned.
const BEAT_LOG_PRUNED: &str = "beat_log_pruned_through";

/// The log position that covers every flush so far: the newest entry, or the pruning
/// watermark when that is newer (`$1` is [`BEAT_LOG_PRUNED`]).
const BEAT_LOG_POSITION: &str = "SELECT GREATEST(COALESCE(MAX(version), 0),
        COALESCE((SELECT value::bigint FROM meta WHERE key = $1), 0))
    FROM beat_log";

/// Keys of the advisory locks of one Vigil database. Advisory locks belong to the whole
/// PostgreSQL database, so the keys are derived from the schema Vigil's tables live in: two
/// deployments in two schemas of one database neither share a leader nor wait on each other.
#[derive(Debug, Clone, Copy)]
struct LockKeys {
    /// Transaction-level lock that serializes writes (see [`lock_writes`]).
    write: i64,
    /// Session-level lock held by the replica that leads detection.
    leader: i64,
}

impl LockKeys {
    fn for_schema(schema: &str) -> LockKeys {
        LockKeys {
            write: fnv1a(&format!("vigil:write:{schema}")),
            leader: fnv1a(&format!("vigil:leader:{schema}")),
        }
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike the std hasher.
fn fnv1a(text: &str) -> i64 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash as i64
}

/// PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: PgConnectOptions,
    /// The connection that asks for the detection lease, kept between attempts so that a
    /// follower does not open a connection every second.
    lease_conn: std::sync::Arc<tokio::sync::Mutex<Option<PgConnection>>>,
    keys: LockKeys,
    /// This process in `beat_log.writer`: its own entries are read back without their times.
    writer: i64,
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
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    modified_at: Option<DateTime<Utc>>,
    row_version: i64,
    stopped_at: Option<DateTime<Utc>>,
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
            created_at: row.created_at,
            updated_at: row.updated_at,
            health: row.health.as_deref().and_then(super::Health::parse),
            service_down_time: row.service_down_time,
            row_version: row.row_version,
            notes: None,
        }
        .with_notes(
            row.disabled_reason,
            row.health_message,
            row.modified_at,
            row.stopped_at,
        )
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    service_id: i64,
    host: String,
    binary: String,
    kind: String,
    at: DateTime<Utc>,
    reason: Option<String>,
    last_seen: Option<DateTime<Utc>>,
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
            at: self.at,
            reason: self.reason,
            last_seen: self.last_seen,
            threshold_s: self.threshold_s,
            actor: self.actor,
            address: self.address,
        })
    }
}

/// A connection of its own, out of the pool, for the detection lease: the session lock lives
/// as long as this session. The session is set to end soon after its holder stops talking
/// (dead, paused or cut off), not hours later when TCP gives up, so that another replica
/// can take over.
async fn lead_session_settings(conn: &mut PgConnection) -> StoreResult<()> {
    for setting in [
        "SET tcp_keepalives_idle = 5",
        "SET tcp_keepalives_interval = 1",
        "SET tcp_keepalives_count = 3",
    ] {
        sqlx::query(setting).execute(&mut *conn).await?;
    }
    // PostgreSQL 14 and later: the holder pings every second, so 5 s of silence means it is
    // gone. Older servers lack the setting and rely on the keepalives above.
    let _ = sqlx::query("SET idle_session_timeout = '5s'")
        .execute(&mut *conn)
        .await;
    Ok(())
}

async fn lease_connection(options: &PgConnectOptions) -> StoreResult<PgConnection> {
    let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| StoreError::Unavailable(format!("no answer within {ACQUIRE_TIMEOUT:?}")))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    lead_session_settings(&mut conn).await?;
    Ok(conn)
}

/// Leadership held by a session-level advisory lock on a dedicated connection.
struct PgLease {
    conn: PgConnection,
    write_key: i64,
}

#[async_trait]
impl super::Lease for PgLease {
    async fn holds(&mut self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&mut self.conn);
        matches!(tokio::time::timeout(ACQUIRE_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    async fn append_events(&mut self, events: &[NewEvent]) -> StoreResult<()> {
        // On the session that holds the lock: if it is gone, so is the right to write these.
        let mut tx = self.conn.begin().await?;
        insert_events(&mut tx, self.write_key, events).await?;
        tx.commit().await?;
        Ok(())
    }
}

const SERVICE_COLUMNS: &str = r#"id, host, "binary", topic, zone, disabled, disabled_reason,
    forced_down, frozen, report_count, report_interval, version, created_at, updated_at, modified_at,
    row_version, stopped_at, health, health_message, service_down_time"#;

/// A schema name is spliced into SQL (DDL takes no parameters), so only `[a-z0-9_]` passes.
fn check_identifier(name: &str) -> StoreResult<()> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(())
    } else {
        Err(StoreError::Other(format!(
            "schema name {name:?} must be lowercase letters, digits and underscores"
        )))
    }
}

/// Serializes the transactions that write services or events, until they commit.
///
/// Readers tail two sequences: watchers read `events` by `id > cursor`, replicas read
/// `services` by `row_version > cursor`. A sequence value is taken when a row is written but
/// becomes visible only when its transaction commits; with concurrent writers (several
/// replicas, or the event writer beside an admin call), value 8 can commit before value 7, a
/// reader sees 8 and moves its cursor past 7 for good. Holding this lock from before the first
/// write to the commit makes sequence order and commit order the same. Every writing
/// transaction takes it first, before any row lock, so it cannot deadlock with row locks; the
/// cost is that writes to one database are serial, which the batching of heartbeats makes
/// cheap (one flush per replica per `flush_interval`).
async fn lock_writes(tx: &mut PgConnection, key: i64) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Inserts `events` in order, one statement per chunk; returns their ids in the same order.
async fn insert_events(
    tx: &mut PgConnection,
    write_key: i64,
    events: &[NewEvent],
) -> StoreResult<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    lock_writes(tx, write_key).await?;
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(CHUNK) {
        let service_ids: Vec<i64> = chunk.iter().map(|e| e.service_id).collect();
        let hosts: Vec<&str> = chunk.iter().map(|e| e.host.as_str()).collect();
        let binaries: Vec<&str> = chunk.iter().map(|e| e.binary.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|e| e.kind.as_str()).collect();
        let ats: Vec<DateTime<Utc>> = chunk.iter().map(|e| e.at).collect();
        let reasons: Vec<Option<&str>> = chunk.iter().map(|e| e.reason.as_deref()).collect();
        let last_seens: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|e| e.last_seen).collect();
        let thresholds: Vec<Option<f64>> = chunk.iter().map(|e| e.threshold_s).collect();
        let actors: Vec<Option<&str>> = chunk.iter().map(|e| e.actor.as_deref()).collect();
        let addresses: Vec<Option<&str>> = chunk.iter().map(|e| e.address.as_deref()).collect();
        // Rows are inserted in ordinality order, so ids are taken in input order; RETURNING
        // does not promise an order, hence the sort.
        let mut chunk_ids: Vec<i64> = sqlx::query_scalar(
            r#"INSERT INTO events (service_id, host, "binary", kind, at, reason, last_seen,
                                  threshold_s, actor, address)
               SELECT service_id, host, "binary", kind, at, reason, last_seen, threshold_s,
                      actor, address
               FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                           $6::text[], $7::timestamptz[], $8::float8[], $9::text[], $10::text[])
                    WITH ORDINALITY
                    AS v(service_id, host, "binary", kind, at, reason, last_seen, threshold_s,
                         actor, address, n)
               ORDER BY n
               RETURNING id"#,
        )
        .bind(service_ids)
        .bind(hosts)
        .bind(binaries)
        .bind(kinds)
        .bind(ats)
        .bind(reasons)
        .bind(last_seens)
        .bind(thresholds)
        .bind(actors)
        .bind(addresses)
        .fetch_all(&mut *tx)
        .await?;
        chunk_ids.sort_unstable();
        ids.extend(chunk_ids);
    }
    Ok(ids)
}

async fn fetch_service(conn: &mut PgConnection, id: i64) -> StoreResult<Option<ServiceRecord>> {
    let row: Option<ServiceRow> = sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM service_rows WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Deletes `beat_log` entries older than `keep` and records how far it deleted. Runs inside a
/// transaction that holds the write lock, so it is ordered with every other write.
async fn prune_beat_log_in(tx: &mut PgConnection, keep: Duration) -> StoreResult<()> {
    sqlx::query(
        "WITH gone AS (
             DELETE FROM beat_log WHERE written_at < now() - make_interval(secs => $1)
             RETURNING version
         )
         INSERT INTO meta (key, value)
         SELECT $2, MAX(version)::text FROM gone HAVING COUNT(*) > 0
         ON CONFLICT (key) DO UPDATE
             SET value = GREATEST(meta.value::bigint, EXCLUDED.value::bigint)::text",
    )
    .bind(keep.as_secs_f64())
    .bind(BEAT_LOG_PRUNED)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl PostgresStore {
    /// Every service's heartbeat fields, for a reader whose cursor fell behind the pruned log:
    /// the table and the log position it reflects, in one statement (one snapshot).
    async fn all_beats(&self, pruned: i64) -> StoreResult<(Vec<BeatState>, i64, bool)> {
        let rows: Vec<(i64, Option<DateTime<Utc>>, i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, updated_at, report_count, ({BEAT_LOG_POSITION}) FROM heartbeats"
        ))
        .bind(BEAT_LOG_PRUNED)
        .fetch_all(&self.pool)
        .await?;
        let next = match rows.first() {
            Some(row) => row.3,
            None => self.beat_cursor().await?,
        }
        .max(pruned);
        let beats = rows
            .into_iter()
            .map(|(id, updated_at, report_count, _)| BeatState {
                id,
                updated_at,
                report_count,
            })
            .collect();
        Ok((beats, next, false))
    }

    /// Prunes `beat_log` entries older than `keep` now, as every flush does with a retention
    /// of 30 s (for tests of a replica that fell behind the log).
    pub async fn prune_beat_log(&self, keep: Duration) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        lock_writes(&mut tx, self.keys.write).await?;
        prune_beat_log_in(&mut tx, keep).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the empty schema `schema` in the database at `url` and returns a URL whose
    /// connections use it (through `search_path`). For benchmarks, which need a fresh database
    /// per run on a shared server; `schema` must be a plain identifier.
    pub async fn create_schema(url: &str, schema: &str) -> StoreResult<String> {
        check_identifier(schema)?;
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        let separator = if url.contains('?') { '&' } else { '?' };
        Ok(format!(
            "{url}{separator}options=-c%20search_path%3D{schema}"
        ))
    }

    /// Drops a schema made by [`PostgresStore::create_schema`], with everything in it.
    pub async fn drop_schema(url: &str, schema: &str) -> StoreResult<()> {
        check_identifier(schema)?;
        let mut conn = PgConnection::connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Connects to `url` (`postgres://` or `postgresql://`), runs the migrations and opens a
    /// pool of at most `max_connections`. Fails at once, with the driver's reason, when the
    /// database cannot be reached: a server that starts without its database would only
    /// answer errors.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PostgresStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("invalid database url: {e}")))?
            .application_name("vigil")
            // A replica that stalls inside a transaction (paused, cut off) must not hold the
            // write lock for the others until TCP gives up: the server ends it.
            .options([
                ("idle_in_transaction_session_timeout", "10s"),
                ("lock_timeout", "10s"),
                ("statement_timeout", "60s"),
                // No NOTICEs (sqlx logs them at INFO): two replicas starting together otherwise
                // log "relation _sqlx_migrations already exists, skipping".
                ("client_min_messages", "warning"),
            ]);
        // One plain connection first: the pool would retry a refused connection until its
        // timeout and then report only "pool timed out".
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| StoreError::Unavailable(format!("no answer within {ACQUIRE_TIMEOUT:?}")))?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        sqlx::migrate!("./migrations/postgres")
            .run_direct(&mut conn)
            .await
            .map_err(|e| StoreError::Other(format!("migrations failed: {e}")))?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let writer: i64 = sqlx::query_scalar("SELECT nextval('beat_log_writers')")
            .fetch_one(&pool)
            .await?;
        Ok(PostgresStore {
            pool,
            options,
            lease_conn: Default::default(),
            keys: LockKeys::for_schema(&schema),
            writer,
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn load_services(
        &self,
        page: &mut (dyn FnMut(Vec<ServiceRecord>) + Send),
    ) -> StoreResult<()> {
        // One statement, streamed: PostgreSQL joins the two tables once and sends rows while
        // this side decodes and files them. (Pages of their own statements, `WHERE id > $1
        // ORDER BY id LIMIT $2` on the view, made PostgreSQL walk the heartbeats from the
        // first row for every page: quadratic, hours at ten million.) Its transaction lifts
        // `statement_timeout`, which would otherwise count the whole load, filing included.
        let query = format!("SELECT {SERVICE_COLUMNS} FROM service_rows ORDER BY id");
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        {
            let mut rows = sqlx::query_as::<_, ServiceRow>(&query).fetch(&mut *tx);
            let mut records = Vec::with_capacity(CHUNK);
            while let Some(row) = rows.try_next().await? {
                records.push(row.into());
                if records.len() == CHUNK {
                    page(std::mem::replace(&mut records, Vec::with_capacity(CHUNK)));
                }
            }
            if !records.is_empty() {
                page(records);
            }
        }
        tx.rollback().await?;
        Ok(())
    }

    #[cfg(feature = "bench")]
    async fn bulk_insert_services(
        &self,
        services: &[NewService],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in services.chunks(CHUNK) {
            let hosts: Vec<&str> = chunk.iter().map(|s| s.host.as_str()).collect();
            let binaries: Vec<&str> = chunk.iter().map(|s| s.binary.as_str()).collect();
            let topics: Vec<Option<&str>> = chunk.iter().map(|s| s.topic.as_deref()).collect();
            let zones: Vec<&str> = chunk.iter().map(|s| s.zone.as_str()).collect();
            let intervals: Vec<f64> = chunk.iter().map(|s| s.report_interval).collect();
            let versions: Vec<Option<&str>> = chunk.iter().map(|s| s.version.as_deref()).collect();
            sqlx::query(
                r#"INSERT INTO services (host, "binary", topic, zone, report_interval, version, created_at)
                   SELECT host, "binary", topic, zone, report_interval, version, $7
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[])
                        AS v(host, "binary", topic, zone, report_interval, version)"#,
            )
            .bind(hosts)
            .bind(binaries)
            .bind(topics)
            .bind(zones)
            .bind(intervals)
            .bind(versions)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_service(&self, id: i64) -> StoreResult<Option<ServiceRecord>> {
        let mut conn = self.pool.acquire().await?;
        fetch_service(&mut conn, id).await
    }

    async fn register(
        &self,
        new: &NewService,
        at: DateTime<Utc>,
        by: &Actor,
    ) -> StoreResult<(ServiceRecord, bool)> {
        let mut tx = self.pool.begin().await?;
        lock_writes(&mut tx, self.keys.write).await?;
        // Two replicas registering the same new service: one inserts, the other's insert waits
        // for it, then does nothing and updates the committed row. Should another replica
        // delete the row between the two statements, the insert is tried again.
        let mut attempts = 0;
        let (id, created) = loop {
            attempts += 1;
            let inserted: Option<i64> = sqlx::query_scalar(
                r#"INSERT INTO services (host, "binary", topic, zone, report_interval, version, created_at,
                       service_down_time)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (host, "binary") DO NOTHING
                   RETURNING id"#,
            )
            .bind(&new.host)
            .bind(&new.binary)
            .bind(&new.topic)
            .bind(&new.zone)
            .bind(new.report_interval)
            .bind(&new.version)
            .bind(at)
            .bind(new.service_down_time)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = inserted {
                break (id, true);
            }
            let updated: Option<i64> = sqlx::query_scalar(
                r#"UPDATE services SET topic = COALESCE($1, topic), zone = $2,
                       report_interval = $3, version = COALESCE($4, version),
                       stopped_at = NULL, health = NULL, health_message = NULL,
                       service_down_time = $7, row_version = nextval('services_row_version')
                   WHERE host = $5 AND "binary" = $6
                   RETURNING id"#,
            )
            .bind(&new.topic)
            .bind(&new.zone)
            .bind(new.report_interval)
            .bind(&new.version)
            .bind(&new.host)
            .bind(&new.binary)
            .bind(new.service_down_time)
            .fetch_optional(&mut *tx)
            .await?;
            match updated {
                Some(id) => break (id, false),
                None if attempts < 3 => continue,
                None => {
                    return Err(StoreError::Other(format!(
                        "service {}/{} is being registered and deleted concurrently",
                        new.host, new.binary
                    )))
                }
            }
        };
        let record = fetch_service(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Other(format!("service {id} vanished while registering")))?;
        let mut event = NewEvent::about(&record, EventKind::Registered, at).by(by);
        event.reason = Some(RegistrationReason::new(created).as_str().into());
        insert_events(&mut tx, self.keys.write, &[event]).await?;
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
        let mut tx = self.pool.begin().await?;
        lock_writes(&mut tx, self.keys.write).await?;
        // The write lock keeps every other writer out until commit: this read is current.
        let Some(before) = fetch_service(&mut tx, id).await? else {
            return Ok(None);
        };
        let events = events_for(&before);
        let (set_reason, reason) = match &change.disabled_reason {
            Some(reason) => (true, reason.clone()),
            None => (false, None),
        };
        sqlx::query(
            r#"UPDATE services SET
                   disabled = COALESCE($1, disabled),
                   disabled_reason = CASE WHEN $2 THEN $3 ELSE disabled_reason END,
                   forced_down = COALESCE($4, forced_down),
                   frozen = COALESCE($5, frozen),
                   modified_at = $6,
                   row_version = nextval('services_row_version')
               WHERE id = $7"#,
        )
        .bind(change.disabled)
        .bind(set_reason)
        .bind(reason)
        .bind(change.forced_down)
        .bind(change.frozen)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let Some(after) = fetch_service(&mut tx, id).await? else {
            return Ok(None);
        };
        insert_events(&mut tx, self.keys.write, &events).await?;
        tx.commit().await?;
        Ok(Some(after))
    }

    async fn stop(&self, id: i64, event: &NewEvent) -> StoreResult<Option<ServiceRecord>> {
        let mut tx = self.pool.begin().await?;
        lock_writes(&mut tx, self.keys.write).await?;
        let stopped = sqlx::query(
            "UPDATE services SET stopped_at = $1, row_version = nextval('services_row_version')
             WHERE id = $2",
        )
        .bind(event.at)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !stopped {
            return Ok(None);
        }
        let Some(after) = fetch_service(&mut tx, id).await? else {
            return Ok(None);
        };
        insert_events(&mut tx, self.keys.write, std::slice::from_ref(event)).await?;
        tx.commit().await?;
        Ok(Some(after))
    }

    async fn delete(&self, id: i64, event: &NewEvent) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        lock_writes(&mut tx, self.keys.write).await?;
        let deleted = sqlx::query("DELETE FROM services WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if deleted {
            insert_events(&mut tx, self.keys.write, std::slice::from_ref(event)).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn flush_beats(&self, beats: &[BeatFlush]) -> StoreResult<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        // No row locks are taken first: this transaction holds the write lock, so no other
        // writer (another replica's flush, an admin change) updates rows meanwhile.
        lock_writes(&mut tx, self.keys.write).await?;
        // Zones change rarely (a reporter moved); they go to the wide row and its change feed.
        let (ids, zones): (Vec<i64>, Vec<&str>) = beats
            .iter()
            .filter_map(|b| Some((b.id, b.zone.as_deref()?)))
            .unzip();
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE services s SET zone = v.zone, row_version = nextval('services_row_version')
                 FROM UNNEST($1::bigint[], $2::text[]) AS v(id, zone) WHERE s.id = v.id",
            )
            .bind(ids)
            .bind(zones)
            .execute(&mut *tx)
            .await?;
        }
        // So does health (a service degraded or recovered).
        let mut ids = Vec::new();
        let mut healths = Vec::new();
        let mut messages = Vec::new();
        for beat in beats {
            if let Some((health, message)) = &beat.health {
                ids.push(beat.id);
                healths.push(health.as_str());
                messages.push(message.as_deref());
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE services s SET health = v.health, health_message = v.message,
                     row_version = nextval('services_row_version')
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS v(id, health, message)
                 WHERE s.id = v.id",
            )
            .bind(ids)
            .bind(healths)
            .bind(messages)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in beats.chunks(CHUNK) {
            let ids: Vec<i64> = chunk.iter().map(|b| b.id).collect();
            let updated: Vec<DateTime<Utc>> = chunk.iter().map(|b| b.updated_at).collect();
            let deltas: Vec<i64> = chunk.iter().map(|b| b.report_count_delta).collect();
            // GREATEST ignores NULL, so a service never flushed before takes the new time; an
            // older time never moves it back. What was written goes to the log in the same
            // statement (the aggregates see the rows in one order).
            sqlx::query(
                r#"WITH written AS (
                       UPDATE heartbeats h SET
                           updated_at = GREATEST(h.updated_at, v.updated_at),
                           report_count = h.report_count + v.delta
                       FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[])
                            AS v(id, updated_at, delta)
                       WHERE h.id = v.id
                       RETURNING h.id, h.updated_at, h.report_count
                   )
                   INSERT INTO beat_log (version, writer, ids, updated, counts)
                   SELECT nextval('services_row_version'), $4,
                          array_agg(id), array_agg(updated_at), array_agg(report_count)
                   FROM written HAVING COUNT(*) > 0"#,
            )
            .bind(ids)
            .bind(updated)
            .bind(deltas)
            .bind(self.writer)
            .execute(&mut *tx)
            .await?;
        }
        prune_beat_log_in(&mut tx, BEAT_LOG_KEEP).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append_events(&self, events: &[NewEvent]) -> StoreResult<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        let ids = insert_events(&mut tx, self.keys.write, events).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn list_events(&self, filter: &EventFilter) -> StoreResult<Vec<Event>> {
        let mut query: QueryBuilder<Postgres> = QueryBuilder::new(
            r#"SELECT id, service_id, host, "binary", kind, at, reason, last_seen, threshold_s,
                      actor, address
               FROM events WHERE TRUE"#,
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
            query.push(" AND at >= ").push_bind(since);
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
        let result = sqlx::query(
            "DELETE FROM events WHERE at < $1 AND id NOT IN (
                 SELECT MAX(id) FROM events WHERE kind IN ('down', 'up', 'stopped') GROUP BY service_id
             )",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        let rows: Vec<TokenRow<DateTime<Utc>>> = sqlx::query_as(
            "SELECT name, role, hosts, hash, created_at, created_by, expires_at FROM tokens
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| row.into_token(|at| at))
            .collect())
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<bool> {
        let result = sqlx::query(
            "INSERT INTO tokens (name, role, hosts, hash, created_at, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(token.hosts.join("\n"))
        .bind(&token.hash)
        .bind(token.created_at)
        .bind(&token.created_by)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn revoke_token(&self, name: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn create_maintenance(
        &self,
        window: &MaintenanceWindow,
    ) -> StoreResult<MaintenanceWindow> {
        let row: MaintenanceRow<DateTime<Utc>> = sqlx::query_as(&format!(
            r#"INSERT INTO maintenance (host, "binary", reason, starts_at, ends_at, created_by,
                                        address)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {MAINTENANCE_COLUMNS}"#
        ))
        .bind(&window.host)
        .bind(&window.binary)
        .bind(&window.reason)
        .bind(window.starts_at)
        .bind(window.ends_at)
        .bind(&window.created_by)
        .bind(&window.address)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into_window(|at| at))
    }

    async fn end_maintenance(
        &self,
        id: i64,
        at: DateTime<Utc>,
        by: Option<&str>,
    ) -> StoreResult<Option<MaintenanceWindow>> {
        let row: Option<MaintenanceRow<DateTime<Utc>>> = sqlx::query_as(&format!(
            "UPDATE maintenance SET ended_at = $1, ended_by = $2
             WHERE id = $3 AND ended_at IS NULL AND ends_at > $1 RETURNING {MAINTENANCE_COLUMNS}"
        ))
        .bind(at)
        .bind(by)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.into_window(|at| at)))
    }

    async fn list_maintenance(
        &self,
        active_at: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<MaintenanceWindow>> {
        let rows: Vec<MaintenanceRow<DateTime<Utc>>> = match active_at {
            Some(at) => {
                sqlx::query_as(&format!(
                    "SELECT {MAINTENANCE_COLUMNS} FROM maintenance
                     WHERE ended_at IS NULL AND ends_at > $1 ORDER BY id"
                ))
                .bind(at)
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
            .map(|row| row.into_window(|at| at))
            .collect())
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn watched_by_others(&self) -> StoreResult<bool> {
        // A bigint advisory key is listed as (classid, objid) = (high, low) 32 bits, objsubid 1.
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = (($1::bigint >> 32) & 4294967295)::oid
                   AND objid = ($1::bigint & 4294967295)::oid)",
        )
        .bind(self.keys.leader)
        .fetch_one(&self.pool)
        .await?;
        Ok(held)
    }

    async fn change_cursor(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(row_version), 0) FROM services")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn changes_since(
        &self,
        cursor: i64,
        limit: i64,
    ) -> StoreResult<(Vec<ServiceRecord>, i64)> {
        let rows: Vec<ServiceRow> = sqlx::query_as(&format!(
            "SELECT {SERVICE_COLUMNS} FROM service_rows
             WHERE row_version > $1 ORDER BY row_version LIMIT $2"
        ))
        .bind(cursor)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let next = rows.last().map_or(cursor, |r| r.row_version);
        Ok((rows.into_iter().map(Into::into).collect(), next))
    }

    async fn beat_cursor(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(BEAT_LOG_POSITION)
            .bind(BEAT_LOG_PRUNED)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn beats_since(&self, cursor: i64) -> StoreResult<(Vec<BeatState>, i64, bool)> {
        // One round trip in the usual case: the page of the log together with how far the log
        // was pruned. The writer's own entries come back without their times (it has them),
        // but with their counts: a count is the stored total, which includes other replicas'
        // earlier flushes this writer may not have read yet.
        type LogRow = (
            i64,
            Option<i64>,
            Option<Vec<i64>>,
            Option<Vec<DateTime<Utc>>>,
            Option<Vec<i64>>,
        );
        let rows: Vec<LogRow> = sqlx::query_as(
            "SELECT p.pruned, l.version, l.ids, l.updated, l.counts
             FROM (SELECT COALESCE((SELECT value::bigint FROM meta WHERE key = $4), 0) AS pruned) p
             LEFT JOIN LATERAL (
                 SELECT version, ids, CASE WHEN writer = $2 THEN NULL ELSE updated END AS updated,
                        counts
                 FROM beat_log WHERE version > $1 ORDER BY version LIMIT $3
             ) l ON TRUE
             ORDER BY l.version",
        )
        .bind(cursor)
        .bind(self.writer)
        .bind(BEAT_LOG_PAGE)
        .bind(BEAT_LOG_PRUNED)
        .fetch_all(&self.pool)
        .await?;
        let pruned = rows.first().map_or(0, |row| row.0);
        if cursor < pruned {
            return self.all_beats(pruned).await;
        }
        let full = rows.len() as i64 == BEAT_LOG_PAGE;
        let mut next = cursor;
        let mut beats = Vec::new();
        for (_, version, ids, updated, counts) in rows {
            let Some(version) = version else {
                continue;
            };
            next = version;
            let (ids, counts) = (ids.unwrap_or_default(), counts.unwrap_or_default());
            let mut updated = updated.unwrap_or_default().into_iter();
            beats.extend(
                ids.into_iter()
                    .zip(counts)
                    .map(|(id, report_count)| BeatState {
                        id,
                        updated_at: updated.next(),
                        report_count,
                    }),
            );
        }
        Ok((beats, next, full))
    }

    async fn try_lead(&self) -> StoreResult<Option<Box<dyn super::Lease>>> {
        let mut slot = self.lease_conn.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => lease_connection(&self.options).await?,
        };
        let led: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.keys.leader)
            .fetch_one(&mut conn)
            .await?;
        if led {
            Ok(Some(Box::new(PgLease {
                conn,
                write_key: self.keys.write,
            })))
        } else {
            *slot = Some(conn);
            Ok(None)
        }
    }

    async fn last_transitions(&self) -> StoreResult<Vec<(i64, EventKind)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT DISTINCT ON (service_id) service_id, kind FROM events
             WHERE kind IN ('down', 'up', 'stopped') ORDER BY service_id, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, kind)| EventKind::parse(&kind).map(|k| (id, k)))
            .collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn probe_write(&self) -> StoreResult<()> {
        // A key of this replica's own, so that replicas' probes never wait for each other.
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, clock_timestamp()::text)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(format!("write_probe:{}", self.writer))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn clock_sample(
        &self,
        local: &(dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> StoreResult<Option<super::ClockSample>> {
        let mut conn = self.pool.acquire().await?;
        let mut best: Option<super::ClockSample> = None;
        for _ in 0..3 {
            let before = local();
            // clock_timestamp(), not now(): now() is the start of the transaction.
            let reference: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(&mut *conn)
                .await?;
            let after = local();
            let sample = super::ClockSample {
                before,
                reference,
                after,
            };
            if best.is_none_or(|b| after - before < b.after - b.before) {
                best = Some(sample);
            }
        }
        Ok(best)
    }
}
