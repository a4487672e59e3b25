//! The read-only connection of one watch, and one poll.
//!
//! # Read-only, provably
//! Every connection the watch's pool opens is made read-only before the pool hands it out,
//! and checked: a connection whose session does not report itself read-only is refused
//! ([`WatchError::NotReadOnly`]), so no statement, ours or a bug's, can write to or lock the
//! watched database.
//! - MySQL and MariaDB: `SET SESSION TRANSACTION READ ONLY`, checked with
//!   `@@session.tx_read_only` (MariaDB, and MySQL before 8.0) or
//!   `@@session.transaction_read_only`; a write is refused with error 1792. The session's time
//!   zone is left as the server's, or the URL's `timezone=` (no `SET time_zone` of ours): the
//!   poll reads `UTC_TIMESTAMP(6)` and the `DATETIME` columns, neither of which depends on it
//!   (`NOW()` would).
//! - PostgreSQL: `default_transaction_read_only=on` in the start-up options, checked with
//!   `SHOW transaction_read_only`; a write is refused with SQLSTATE 25006.
//! - SQLite: the file opened read-only (`SQLITE_OPEN_READONLY`, as `?mode=ro`) and
//!   `PRAGMA query_only = ON`; never created when absent.
//!
//! A pool of at most [`MAX_CONNECTIONS`] connections, opened lazily (an unreachable database
//! is an error of a poll, never of the reader's construction), a statement timeout on the server
//! (MariaDB `max_statement_time`, MySQL `max_execution_time`, PostgreSQL `statement_timeout`;
//! SQLite has none) and the same limit on the whole poll on this side.
//!
//! # The columns
//! Cinder (`cinder/db/models.py`, `Service` and `CinderBase`, cinder 29.0.0): id, uuid,
//! cluster_name, host, binary, updated_at, topic, report_count, disabled, availability_zone,
//! disabled_reason, modified_at, frozen, and from the mixins created_at, deleted (Boolean).
//! Nova (`nova/db/main/models.py`, `Service`, nova 34.0.0, the same as the table of
//! `nova/db/main/migrations/versions/8f2f1571d55b_initial_version.py`): id, uuid, host, binary,
//! topic, report_count, disabled, disabled_reason, last_seen_up, forced_down, version, and
//! created_at, updated_at, deleted (Integer: 0, or the id once soft-deleted). Nova's table has
//! no availability_zone (zones come from host aggregates), modified_at, frozen or
//! cluster_name; the poll reads only the columns the table has.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ColumnIndex, Decode, Executor, Row, Type};

use super::model::{Poll, WatchedRow};
use super::spec::{Engine, WatchConfig, WatchKind};
use super::WatchError;

/// Most connections one watch opens.
pub const MAX_CONNECTIONS: u32 = 2;

/// Longest one statement may run on the watched database, and one poll on this side.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The reader of one watched `services` table.
#[derive(Debug, Clone)]
pub struct WatchReader {
    config: WatchConfig,
    name: String,
    pool: WatchPool,
}

#[derive(Debug, Clone)]
enum WatchPool {
    MySql(MySqlPool),
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Carried through sqlx's `Configuration` error out of `after_connect`: the session did not
/// report itself read-only.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotReadOnly(String);

impl WatchReader {
    /// A reader for `config` (validated here). Connects lazily: an unreachable database is an
    /// error of [`WatchReader::poll`], retried by polling again.
    pub fn new(config: WatchConfig) -> Result<WatchReader, WatchError> {
        config.validate()?;
        let name = config.name();
        let malformed = |err: sqlx::Error| WatchError::Malformed {
            value: format!("{}:{}", config.kind, config.redacted_url()),
            reason: err.to_string(),
        };
        let timeout = STATEMENT_TIMEOUT;
        let pool = match config.engine().expect("validated") {
            Engine::MySql => {
                // `mariadb://` is MariaDB's name for the same protocol.
                let url = config.url.replacen("mariadb://", "mysql://", 1);
                let mut options = MySqlConnectOptions::from_str(&url).map_err(malformed)?;
                // sqlx sets the session to UTC unless told otherwise; the watch leaves the
                // server's zone (or the URL's `timezone=`), which nothing it reads depends on.
                if !url.contains("timezone=") && !url.contains("time-zone=") {
                    options = options.timezone(None);
                }
                let pool = MySqlPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(timeout)
                    .idle_timeout(Some(Duration::from_secs(60)))
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
                            let version: String = sqlx::query_scalar("SELECT VERSION()")
                                .fetch_one(&mut *conn)
                                .await?;
                            let mariadb = version.contains("MariaDB");
                            let limit = if mariadb {
                                format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64())
                            } else {
                                format!("SET SESSION max_execution_time = {}", timeout.as_millis())
                            };
                            conn.execute(limit.as_str()).await?;
                            let read_only: i64 = match sqlx::query_scalar("SELECT @@session.tx_read_only")
                                .fetch_one(&mut *conn)
                                .await
                            {
                                Ok(v) => v,
                                Err(_) => {
                                    sqlx::query_scalar("SELECT @@session.transaction_read_only")
                                        .fetch_one(&mut *conn)
                                        .await?
                                }
                            };
                            if read_only != 1 {
                                return Err(sqlx::Error::Configuration(Box::new(NotReadOnly(
                                    format!("{version} reports tx_read_only = {read_only} after SET SESSION TRANSACTION READ ONLY"),
                                ))));
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy_with(options);
                WatchPool::MySql(pool)
            }
            Engine::Postgres => {
                let options = PgConnectOptions::from_str(&config.url)
                    .map_err(malformed)?
                    .application_name("vigil-watch")
                    .options([
                        ("default_transaction_read_only", "on".to_owned()),
                        ("statement_timeout", timeout.as_millis().to_string()),
                    ]);
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(timeout)
                    .idle_timeout(Some(Duration::from_secs(60)))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
                                .fetch_one(&mut *conn)
                                .await?;
                            if read_only != "on" {
                                return Err(sqlx::Error::Configuration(Box::new(NotReadOnly(
                                    format!("transaction_read_only is {read_only} with default_transaction_read_only=on"),
                                ))));
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy_with(options);
                WatchPool::Postgres(pool)
            }
            Engine::Sqlite => {
                let options = SqliteConnectOptions::from_str(&config.url)
                    .map_err(malformed)?
                    .read_only(true)
                    .create_if_missing(false)
                    .pragma("query_only", "ON")
                    .busy_timeout(Duration::from_secs(1));
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .min_connections(0)
                    .acquire_timeout(timeout)
                    .idle_timeout(Some(Duration::from_secs(60)))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            let query_only: i64 = sqlx::query_scalar("PRAGMA query_only")
                                .fetch_one(&mut *conn)
                                .await?;
                            if query_only != 1 {
                                return Err(sqlx::Error::Configuration(Box::new(NotReadOnly(
                                    "PRAGMA query_only is off".into(),
                                ))));
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy_with(options);
                WatchPool::Sqlite(pool)
            }
        };
        Ok(WatchReader { config, name, pool })
    }

    /// The watch's settings.
    pub fn config(&self) -> &WatchConfig {
        &self.config
    }

    /// The watch's name, shown as the watched services' `source`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One poll: the database clock, then the non-deleted rows in id order, on one connection.
    pub async fn poll(&self) -> Result<Poll, WatchError> {
        let started = Instant::now();
        let work = async {
            match &self.pool {
                WatchPool::MySql(pool) => {
                    let mut conn = pool.acquire().await?;
                    let now: NaiveDateTime = sqlx::query_scalar("SELECT UTC_TIMESTAMP(6)")
                        .fetch_one(&mut *conn)
                        .await?;
                    let rows = sqlx::query(select(self.config.kind, Engine::MySql))
                        .fetch_all(&mut *conn)
                        .await?;
                    let rows = rows
                        .iter()
                        .map(|r| decode(r, self.config.kind))
                        .collect::<Result<_, _>>()?;
                    Ok::<_, sqlx::Error>((now.and_utc(), rows, 1.0))
                }
                WatchPool::Postgres(pool) => {
                    let mut conn = pool.acquire().await?;
                    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
                        .fetch_one(&mut *conn)
                        .await?;
                    let rows = sqlx::query(select(self.config.kind, Engine::Postgres))
                        .fetch_all(&mut *conn)
                        .await?;
                    let rows = rows
                        .iter()
                        .map(|r| decode(r, self.config.kind))
                        .collect::<Result<_, _>>()?;
                    Ok((now, rows, 1e-6))
                }
                WatchPool::Sqlite(pool) => {
                    let mut conn = pool.acquire().await?;
                    let now: String =
                        sqlx::query_scalar("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
                            .fetch_one(&mut *conn)
                            .await?;
                    let now = NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M:%S%.f")
                        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                    let rows = sqlx::query(select(self.config.kind, Engine::Sqlite))
                        .fetch_all(&mut *conn)
                        .await?;
                    let rows = rows
                        .iter()
                        .map(|r| decode(r, self.config.kind))
                        .collect::<Result<_, _>>()?;
                    Ok((now.and_utc(), rows, 1e-6))
                }
            }
        };
        let limit = STATEMENT_TIMEOUT + Duration::from_secs(1);
        let (db_now, rows, time_resolution) = match tokio::time::timeout(limit, work).await {
            Ok(result) => result.map_err(|err| self.error(err))?,
            Err(_) => {
                return Err(WatchError::Timeout {
                    name: self.name.clone(),
                    seconds: limit.as_secs_f64(),
                })
            }
        };
        Ok(Poll {
            db_now,
            rows,
            took: started.elapsed(),
            time_resolution,
        })
    }

    /// Runs `sql` on a connection of the watch's own pool and returns the rows it affected.
    /// For tests that prove the pool refuses writes; the watch itself only runs
    /// [`WatchReader::poll`].
    #[doc(hidden)]
    pub async fn probe_statement(&self, sql: &str) -> Result<u64, WatchError> {
        let affected = match &self.pool {
            WatchPool::MySql(pool) => pool.execute(sql).await.map(|r| r.rows_affected()),
            WatchPool::Postgres(pool) => pool.execute(sql).await.map(|r| r.rows_affected()),
            WatchPool::Sqlite(pool) => pool.execute(sql).await.map(|r| r.rows_affected()),
        };
        affected.map_err(|err| self.error(err))
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        match &self.pool {
            WatchPool::MySql(pool) => pool.close().await,
            WatchPool::Postgres(pool) => pool.close().await,
            WatchPool::Sqlite(pool) => pool.close().await,
        }
    }

    fn error(&self, err: sqlx::Error) -> WatchError {
        classify(&self.name, &self.config, err)
    }
}

/// The poll's SELECT for a kind of table on an engine: the narrow columns of non-deleted rows.
fn select(kind: WatchKind, engine: Engine) -> &'static str {
    use Engine::*;
    use WatchKind::*;
    // `binary` is reserved in MySQL (backquotes) and quoted everywhere else too. PostgreSQL's
    // integer columns are read as int8, so that every engine decodes one Rust type.
    match (kind, engine) {
        (Cinder, MySql) => {
            "SELECT id, host, `binary`, topic, availability_zone, disabled, disabled_reason, \
             report_count, created_at, updated_at, modified_at, frozen, cluster_name, uuid \
             FROM services WHERE deleted = 0 ORDER BY id"
        }
        (Cinder, Postgres) => {
            "SELECT id::int8 AS id, host, \"binary\", topic, availability_zone, disabled, \
             disabled_reason, report_count::int8 AS report_count, created_at, updated_at, \
             modified_at, frozen, cluster_name, uuid \
             FROM services WHERE deleted = false ORDER BY id"
        }
        (Cinder, Sqlite) => {
            "SELECT id, host, \"binary\", topic, availability_zone, disabled, disabled_reason, \
             report_count, created_at, updated_at, modified_at, frozen, cluster_name, uuid \
             FROM services WHERE deleted = 0 ORDER BY id"
        }
        (Nova, MySql) => {
            "SELECT id, host, `binary`, topic, disabled, disabled_reason, report_count, \
             created_at, updated_at, last_seen_up, forced_down, version, uuid \
             FROM services WHERE deleted = 0 ORDER BY id"
        }
        (Nova, Postgres) => {
            "SELECT id::int8 AS id, host, \"binary\", topic, disabled, disabled_reason, \
             report_count::int8 AS report_count, created_at, updated_at, last_seen_up, \
             forced_down, version::int8 AS version, uuid \
             FROM services WHERE deleted = 0 ORDER BY id"
        }
        (Nova, Sqlite) => {
            "SELECT id, host, \"binary\", topic, disabled, disabled_reason, report_count, \
             created_at, updated_at, last_seen_up, forced_down, version, uuid \
             FROM services WHERE deleted = 0 ORDER BY id"
        }
    }
}

/// One row of [`select`]'s result, for any engine.
fn decode<'r, R>(row: &'r R, kind: WatchKind) -> Result<WatchedRow, sqlx::Error>
where
    R: Row,
    &'r str: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    NaiveDateTime: Decode<'r, R::Database> + Type<R::Database>,
{
    let time = |column: &'r str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row
            .try_get::<Option<NaiveDateTime>, _>(column)?
            .map(|t| t.and_utc()))
    };
    let flag = |column: &'r str| -> Result<bool, sqlx::Error> {
        Ok(row.try_get::<Option<bool>, _>(column)?.unwrap_or(false))
    };
    let text = |column: &'r str| row.try_get::<Option<String>, _>(column);
    let cinder = kind == WatchKind::Cinder;
    let nova = kind == WatchKind::Nova;
    Ok(WatchedRow {
        id: row.try_get("id")?,
        host: text("host")?.unwrap_or_default(),
        binary: text("binary")?.unwrap_or_default(),
        topic: text("topic")?,
        availability_zone: if cinder {
            text("availability_zone")?
        } else {
            None
        },
        disabled: flag("disabled")?,
        disabled_reason: text("disabled_reason")?,
        report_count: row.try_get("report_count")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        modified_at: if cinder { time("modified_at")? } else { None },
        frozen: cinder && flag("frozen")?,
        cluster_name: if cinder { text("cluster_name")? } else { None },
        uuid: text("uuid")?,
        forced_down: nova && flag("forced_down")?,
        last_seen_up: if nova { time("last_seen_up")? } else { None },
        version: if nova {
            row.try_get::<Option<i64>, _>("version")?
        } else {
            None
        },
    })
}

/// Sorts a database error into the watch's errors: unreachable, not OpenStack's table, not
/// read-only, a timeout, or another failed query.
fn classify(name: &str, config: &WatchConfig, err: sqlx::Error) -> WatchError {
    let name = name.to_owned();
    let url = config.redacted_url();
    let kind = config.kind;
    let not_openstack = |reason: String| WatchError::NotOpenStack {
        name: name.clone(),
        url: url.clone(),
        kind,
        reason,
    };
    let unreachable = |reason: String| WatchError::Unreachable {
        name: name.clone(),
        url: url.clone(),
        reason,
    };
    match err {
        sqlx::Error::Configuration(inner) if inner.is::<NotReadOnly>() => WatchError::NotReadOnly {
            name,
            reason: inner.to_string(),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Configuration(_) => unreachable(lower(&err.to_string())),
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Decode(_) => not_openstack(lower(&err.to_string())),
        sqlx::Error::Database(ref db) => {
            let message = lower(db.message());
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mysql = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|e| e.number());
            let schema = match mysql {
                // no such table, unknown column, no such database's table
                Some(n) => matches!(n, 1146 | 1054),
                None => match config.engine() {
                    // undefined table, undefined column, no such operator (a Boolean
                    // `deleted` compared with 0), datatype mismatch
                    Some(Engine::Postgres) => {
                        matches!(code.as_str(), "42P01" | "42703" | "42883" | "42804")
                    }
                    // "no such table", "no such column"; 26: not a database
                    _ => {
                        message.starts_with("no such table")
                            || message.starts_with("no such column")
                            || code == "26"
                    }
                },
            };
            let reach = match mysql {
                // access denied, unknown database, too many connections, server gone
                Some(n) => matches!(n, 1044 | 1045 | 1049 | 1040 | 2006 | 2013),
                None => match config.engine() {
                    Some(Engine::Postgres) => {
                        code.starts_with("08")
                            || code.starts_with("28")
                            || code.starts_with("57P")
                            || code == "3D000"
                            || code == "53300"
                    }
                    // 14: cannot open
                    _ => code == "14",
                },
            };
            let timeout = match mysql {
                Some(n) => matches!(n, 1969 | 3024),
                None => code == "57014",
            };
            if schema {
                not_openstack(message)
            } else if reach {
                unreachable(message)
            } else if timeout {
                WatchError::Timeout {
                    name,
                    seconds: STATEMENT_TIMEOUT.as_secs_f64(),
                }
            } else {
                WatchError::Query {
                    name,
                    reason: message,
                }
            }
        }
        other => WatchError::Query {
            name,
            reason: lower(&other.to_string()),
        },
    }
}

/// Our messages are lowercase; so are the database's we pass on, first letter at least.
fn lower(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
