//! The Vigil server: a service-liveness registry in the manner of OpenStack Cinder's
//! `services` table, built so that heartbeats never cost a database write each and only the
//! server's clock decides who is up.
//!
//! Entry point: [`serve`] takes a bound listener, a [`Config`] and a shutdown future, so tests
//! run the real server on `127.0.0.1:0`.
//!
//! # Layout
//! - [`config`]: settings, defaults, the commented default file.
//! - [`app`]: the operations (register, heartbeat, list, change, delete) both APIs call.
//! - [`registry`]: the in-memory table, the hot path.
//! - [`liveness`]: the up/down rule and the grace after a gap.
//! - [`stats`]: per-service heartbeat timing (suspicion, clock offset).
//! - [`doctor`]: why a service is down (or about to be), one finding per known cause.
//! - [`flusher`]: batches heartbeats to the database.
//! - [`events`]: the history writer and watcher notification.
//! - [`store`]: the storage trait and one implementation per database; the only SQL.
//! - [`api`]: the Vigil HTTP API.
//! - [`clock`]: the clock that decides liveness.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod api;
pub mod app;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod events;
pub mod flusher;
pub mod liveness;
pub mod registry;
pub mod stats;
pub mod store;
mod validate;

pub use config::Config;

use app::{App, DatabaseHealth};
use clock::Clock;
use events::EventLog;
use liveness::Liveness;
use registry::Registry;
use store::{SqliteStore, Store};

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
    #[error("cannot read or write admin token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {url}: {reason}")]
    Database { url: String, reason: String },
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
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| ServerError::DataDir {
                path: parent.to_path_buf(),
                source,
            })?;
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
    } else {
        Err(fail("unsupported database URL; use sqlite://PATH".into()))
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

/// The admin token in force: configured, or read from (or generated into)
/// `<data_dir>/admin.token` with mode 0600.
pub fn admin_token(config: &Config) -> Result<String, ServerError> {
    if let Some(token) = config.admin_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.clone());
    }
    let path = config.data_dir.join("admin.token");
    let token_error = |source| ServerError::Token {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(token_error(err)),
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
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
    tracing::info!(path = %path.display(), "generated an admin token");
    Ok(token)
}

/// Builds the shared state: opens the store, loads every service, sets the clock and the
/// grace after the gap since this database was last watched.
pub async fn build_app(
    config: Config,
) -> Result<
    (
        Arc<App>,
        tokio::sync::mpsc::UnboundedReceiver<store::NewEvent>,
    ),
    ServerError,
> {
    config.validate()?;
    doctor::log_config(&config);
    let admin_token = admin_token(&config)?;
    let store = open_store(&config).await?;
    let clock = Clock::new(config.clock_offset);
    calibrate(&clock, store.as_ref()).await;
    let fail = |e: store::StoreError| ServerError::Database {
        url: redact(&config.database_url()),
        reason: e.to_string(),
    };
    let records = store.load_services().await.map_err(fail)?;
    let liveness = Liveness::new(config.service_down_time, config.phi_threshold);
    let now = clock.now();
    if let Some(last_alive) = store.get_meta(flusher::LAST_ALIVE).await.map_err(fail)? {
        if let Ok(last_alive) = chrono::DateTime::parse_from_rfc3339(&last_alive) {
            liveness.set_gap(last_alive.with_timezone(&chrono::Utc), now);
        }
    }
    tracing::info!(services = records.len(), "loaded services");
    let registry = Registry::new(records, liveness);
    let (events, receiver) = EventLog::new(store.clone());
    let app = Arc::new(App {
        config,
        clock,
        store,
        registry,
        events: Arc::new(events),
        admin_token,
        database: DatabaseHealth::default(),
    });
    Ok((app, receiver))
}

/// Corrects the clock towards the database's, when the database has a shared clock.
async fn calibrate(clock: &Clock, store: &dyn Store) {
    let before = clock.local_now();
    if let Ok(Some(reference)) = store.database_now().await {
        let after = clock.local_now();
        clock.calibrate(before, reference, after);
    }
}

/// Runs the server on `listener` until `shutdown` completes, then drains requests, flushes
/// heartbeats and writes queued events before returning.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (app, receiver) = build_app(config).await?;
    run(app, receiver, listener, shutdown).await
}

/// Runs a built [`App`] (see [`build_app`]).
pub async fn run(
    app: Arc<App>,
    receiver: tokio::sync::mpsc::UnboundedReceiver<store::NewEvent>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let flush_interval = Duration::from_secs_f64(app.config.flush_interval);
    let flusher = tokio::spawn(flusher::run(app.clone(), flush_interval, stop_rx.clone()));
    let writer = tokio::spawn(app.events.clone().run_writer(receiver, stop_rx.clone()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, services = app.registry.len(), "vigil server listening");
    }
    let router = api::router(app.clone());
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = flusher.await;
    let _ = writer.await;
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
