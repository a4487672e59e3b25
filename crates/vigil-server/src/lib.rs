//! The Vigil server: a service-liveness registry in the manner of OpenStack Cinder's
//! `services` table, built so that heartbeats never cost a database write each and only the
//! server's clock decides who is up.
//!
//! Entry point: [`serve`] takes a bound listener, a [`Config`] and a shutdown future, so tests
//! run the real server on `127.0.0.1:0`; [`serve_with`] also takes the Cinder-compatible
//! API's listener already bound.
//!
//! # Layout
//! - [`config`]: settings, defaults, the commented default file.
//! - `error`: why an operation failed (`AppError`), whichever API asked.
//! - [`app`]: the operations (register, heartbeat, list, change, delete) both APIs call.
//! - `model`: the domain's types (services, events and their kinds), apart from wire and SQL;
//!   `symbol`: the shared copies of the names a fleet repeats (binaries, zones, topics, versions).
//! - [`registry`]: the in-memory table, the hot path (`id_table`: its by-id index).
//! - `limits`: how fast one caller may write, how many services the server keeps.
//! - [`liveness`]: the up/down rule and the grace after a gap.
//! - [`stats`]: per-service heartbeat timing (suspicion, clock offset).
//! - [`doctor`]: why a service is down (or about to be), one finding per known cause.
//! - [`detector`]: the timer wheel that finds up→down transitions on time, without scans.
//! - `guard`: the partition guard, holding services `unreachable` when many go silent together.
//! - [`events`]: the queue of transitions, watcher notification, the feed's memory.
//! - `tasks`: the background loops above `App` (flush, detect, replicate, feed, prune), one
//!   worker convention for all.
//! - [`store`]: the storage trait and one implementation per database; the only SQL.
//! - [`api`]: the Vigil HTTP API.
//! - [`cinder`]: the optional Cinder-compatible `os-services` API on a second listener.
//! - `auth`: tokens, roles and what each may do (no HTTP in it).
//! - `tls`: the certificate of every listener, reloaded on SIGHUP.
//! - `http`: the listener loop: connection cap, header and idle timeouts, JSON bodies for
//!   hyper's own errors.
//! - [`clock`]: the clock that decides liveness.
//! - `trouble`: failures of retrying background loops, logged once each way.
//! - `hot_path` (feature `bench`): a heartbeat's request path in one process, for the
//!   callgrind bench (`benches/hot_path.rs`).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

mod api;
mod app;
mod auth;
mod cinder;
mod clock;
pub mod config;
mod detector;
mod doctor;
mod error;
mod events;
mod flapping;
mod guard;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod hot_path;
mod http;
mod id_table;
mod limits;
mod liveness;
mod maintenance;
mod metrics;
mod model;
mod registry;
mod stats;
pub mod store;
mod symbol;
mod tasks;
mod tls;
mod trouble;
mod validate;
pub mod watch;

pub use config::{
    AuthConfig, CinderApiConfig, Config, ConfigError, HttpConfig, LimitsConfig, LogFormat,
    MetricsConfig,
};
pub use doctor::interval as check_report_interval;
pub use store::LAST_ALIVE;

use app::App;
use clock::Clock;
use store::{PostgresStore, SqliteStore, Store};

/// Why the server could not start or stopped with an error. Each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot read or write token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {url}: {reason}")]
    Database { url: String, reason: String },
    #[error("cannot listen on {addr} for the Cinder-compatible API: {source}")]
    CinderListen {
        addr: String,
        source: std::io::Error,
    },
    // `error`, not `source`: the message carries it, and a source would be printed twice
    // by the CLI's one-line chain.
    #[error("cannot listen on {addr} for metrics: {error}")]
    MetricsListen { addr: String, error: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the database named by `config` and runs its migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServerError> {
    let url = config.database_url();
    let fail = |reason: String| ServerError::Database {
        url: redact(&url),
        reason,
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        let file = Path::new(path.split('?').next().unwrap_or(path));
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent)?;
            if let Some(free) = free_bytes(parent).filter(|free| *free < MIN_FREE_BYTES) {
                return Err(fail(format!(
                    "{} has {} KiB free; the database and its write-ahead log need at least {} MiB",
                    parent.display(),
                    free >> 10,
                    MIN_FREE_BYTES >> 20
                )));
            }
        }
        // Created before SQLite opens it, readable by this user only; SQLite gives its WAL
        // and shared-memory files the same permissions.
        if !file.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(file)
                .map_err(|e| fail(e.to_string()))?;
        }
        let store = SqliteStore::connect(&url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(&url)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(&url, config.database_max_connections)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(store))
    } else {
        Err(fail(
            "unsupported database URL; use sqlite://PATH or postgres://USER@HOST/DB".into(),
        ))
    }
}

/// Hides a password in a database URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Creates `dir` (and its parents) readable by this user only; an existing one is left as
/// it is.
fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServerError::DataDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Takes group and other permissions off `path` when it has any, saying so: a secret or the
/// database readable by every user of the machine.
fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(path = %path.display(), was = format!("{current:o}"), now = format!("{mode:o}"), "file was readable by others; permissions tightened");
    }
    Ok(())
}

/// Free space the embedded database needs to start: its write-ahead log grows to about 4 MiB
/// before its first checkpoint, and the file itself grows with the fleet.
const MIN_FREE_BYTES: u64 = 8 << 20;

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs with a NUL-terminated path and a pointer to a local struct.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut stat) == 0)
            .then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
    }
}

/// The admin token: `admin_token` in the configuration, or `<data_dir>/admin.token`,
/// generated on first start (mode 0600).
pub fn admin_token(config: &Config) -> Result<String, ServerError> {
    token_file(config, config.admin_token.as_deref(), "admin.token")
}

/// The local agent token (role agent, any host): `agent_token` in the configuration, or
/// `<data_dir>/agent.token`, generated on first start beside the admin token, so that a
/// reporter on the same machine needs no step of its own.
pub fn agent_token(config: &Config) -> Result<String, ServerError> {
    token_file(config, config.agent_token.as_deref(), "agent.token")
}

fn token_file(
    config: &Config,
    configured: Option<&str>,
    file: &str,
) -> Result<String, ServerError> {
    if let Some(token) = configured.filter(|t| !t.is_empty()) {
        return Ok(token.to_string());
    }
    let path = config.data_dir.join(file);
    let token_error = |source| ServerError::Token {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            tighten(&path, 0o600).map_err(token_error)?;
            return Ok(text.trim().to_string());
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(token_error(err)),
    }
    create_private_dir(&config.data_dir)?;
    let token = auth::new_secret();
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(token_error)?
    };
    writeln!(file, "{token}").map_err(token_error)?;
    tracing::info!(path = %path.display(), "generated a token");
    Ok(token)
}

/// How long a graceful shutdown waits for open requests before it flushes and stops anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs the server on `listener` until `shutdown` completes, then drains requests, flushes
/// heartbeats and writes queued events before returning. Binds `config.cinder_api.listen`
/// too, when set.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let cinder = match &config.cinder_api.listen {
        Some(addr) => {
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::CinderListen {
                        addr: addr.clone(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    serve_with(listener, cinder, config, shutdown).await
}

/// [`serve`] with the Cinder-compatible API's listener bound by the caller (`None`: off),
/// so that tests can bind `127.0.0.1:0` and learn the port. `config.cinder_api.listen` is
/// not read.
pub async fn serve_with(
    listener: TcpListener,
    cinder: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = match &config.metrics.listen {
        Some(addr) => {
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|error| ServerError::MetricsListen {
                        addr: addr.clone(),
                        error,
                    })?,
            )
        }
        None => None,
    };
    serve_listeners(listener, cinder, metrics, config, shutdown).await
}

/// [`serve_with`] with the metrics' own listener bound by the caller too (`None`: off);
/// `config.metrics.listen` is not read.
pub async fn serve_listeners(
    listener: TcpListener,
    cinder: Option<TcpListener>,
    metrics: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (app, receiver) = app::build(config).await?;
    run_with(app, receiver, listener, cinder, metrics, shutdown).await
}

/// Gives the memory freed since the process started back to the system (glibc only). Loading
/// the services allocates far more than it keeps (the rows as read, pages of JSON, the
/// vectors grown to hold them); glibc's allocator keeps the freed pages in its heaps, where
/// they count in the server's RSS until reused, which they may never be. `malloc_trim(0)`
/// hands every whole free page back (`madvise`), once, before serving. It takes a few
/// milliseconds at a million services.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released == 1,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "returned freed memory to the system"
        );
    }
}

/// Runs a built [`App`] (see [`app::build`]) on `listener`, and the Cinder-compatible API on
/// `cinder` when given. Both listeners stop on the same `shutdown` and both drain before the final flush, so no admin change made through
/// either is lost.
pub(crate) async fn run_with(
    app: Arc<App>,
    receiver: tokio::sync::mpsc::UnboundedReceiver<store::NewEvent>,
    listener: TcpListener,
    cinder: Option<TcpListener>,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let workers = tasks::start(&app, receiver);
    return_freed_memory();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, services = app.registry.len(), "vigil server listening");
    }
    let (stop_serving, serving) = tokio::sync::watch::channel(false);
    let events = app.events.clone();
    let signal = tokio::spawn(async move {
        shutdown.await;
        // Live event streams end, so that the drain can finish.
        events.close();
        let _ = stop_serving.send(true);
    });
    let stopped = || {
        let mut serving = serving.clone();
        async move {
            let _ = serving.wait_for(|stop| *stop).await;
        }
    };
    let open_files = http::raise_open_file_limit();
    let max_connections = app
        .config
        .http
        .max_connections
        .unwrap_or_else(|| http::default_max_connections(open_files));
    let limits = http::Limits {
        max_connections,
        header_read_timeout: Duration::from_secs_f64(app.config.http.header_read_timeout),
        idle_timeout: Duration::from_secs_f64(app.config.http.idle_timeout),
    };
    tracing::debug!(open_files, max_connections, "connection limits");
    let tls = match (&app.config.tls_cert, &app.config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::Tls::new(cert, key)?),
        _ => None,
    };
    // Always: SIGHUP's default action would end the server (`systemctl reload` sends it).
    tokio::spawn(tls::reload_on_hangup(tls.clone(), stopped()));
    let acceptor = || tls.as_ref().map(tls::Tls::acceptor);
    for (what, bound) in [
        ("api", Some(&listener)),
        ("cinder api", cinder.as_ref()),
        ("metrics", metrics.as_ref()),
    ] {
        if let Some(addr) = bound.and_then(|l| l.local_addr().ok()) {
            if tls.is_none() && !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    listener = what,
                    "serving plain HTTP on an address that is not loopback: tokens and the \
                     fleet's data cross the network in clear; set tls_cert and tls_key"
                );
            }
        }
    }
    let vigil = http::serve(
        listener,
        api::router(app.clone()),
        limits,
        acceptor(),
        stopped(),
    );
    let serving_both = async {
        match cinder {
            Some(cinder) => {
                if let Ok(addr) = cinder.local_addr() {
                    let noauth = app.config.cinder_api.noauth;
                    tracing::info!(%addr, noauth, "cinder-compatible api listening");
                }
                let cinder = http::serve(
                    cinder,
                    cinder::router(app.clone()),
                    limits,
                    acceptor(),
                    stopped(),
                );
                let (vigil, cinder) = tokio::join!(vigil, cinder);
                vigil.and(cinder)
            }
            None => vigil.await,
        }
    };
    let serving_metrics = async {
        let Some(metrics) = metrics else {
            return Ok(());
        };
        if let Ok(addr) = metrics.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        http::serve(
            metrics,
            api::metrics::router(app.clone()),
            limits,
            acceptor(),
            stopped(),
        )
        .await
    };
    let serving_both = async {
        let (served, metrics) = tokio::join!(serving_both, serving_metrics);
        served.and(metrics)
    };
    // A client that never lets go (a stalled stream reader) must not keep the final flush
    // from happening: the drain gets DRAIN_LIMIT after the shutdown signal.
    let drain_limit = async {
        stopped().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    let served = tokio::select! {
        served = serving_both => served,
        _ = drain_limit => {
            tracing::warn!("requests still open after {DRAIN_LIMIT:?}; stopping without them");
            Ok(())
        }
    };
    // Only still running when a server failed before `shutdown` came.
    signal.abort();
    // The requests that queue transitions are done: the detector writes what is queued, the
    // flusher the last heartbeats.
    workers.stop().await;
    tracing::info!("vigil server stopped");
    served.map_err(ServerError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://vigil:secret@db/vigil"),
            "postgres://vigil:***@db/vigil"
        );
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
