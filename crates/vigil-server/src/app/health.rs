//! Whether the database takes writes, as the last write showed, kept in memory.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::AppError;
use crate::store::{Store, StoreError};

/// Whether the database takes writes, as the last write showed (a flush, a registration, an
/// admin change, or a readiness probe). Kept in memory so that `/readyz` and reads answer at
/// once during an outage instead of each waiting for the database to time out.
#[derive(Debug, Default)]
pub struct DatabaseHealth {
    down: AtomicBool,
    reason: Mutex<Option<String>>,
    /// When a write's outcome was last recorded.
    checked: Mutex<Option<std::time::Instant>>,
    /// Held while a readiness probe runs, so that concurrent probes share one write.
    probing: tokio::sync::Mutex<()>,
    /// Failed writes and probes, for `vigil_database_errors_total`.
    pub errors: std::sync::atomic::AtomicU64,
}

/// How old the last recorded write may be before `/readyz` commits a probe of its own.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait for a readiness probe's write.
const PROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

impl DatabaseHealth {
    /// Records the outcome of a write. Only an unavailable database counts against it (a
    /// write refused for its content says nothing of the database); the change from one state
    /// to the other is logged, once each way.
    pub fn record<T>(&self, result: &Result<T, StoreError>) {
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(_) => {
                *self.checked.lock() = Some(std::time::Instant::now());
                if self.down.swap(false, Ordering::Relaxed) {
                    *self.reason.lock() = None;
                    tracing::info!("database takes writes again; held heartbeats are written");
                }
            }
            Err(StoreError::Unavailable(reason)) => {
                *self.checked.lock() = Some(std::time::Instant::now());
                *self.reason.lock() = Some(reason.clone());
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %reason, "database unavailable: heartbeats are held in memory, changes are refused with 503");
                }
            }
            Err(StoreError::Other(_)) => {}
        }
    }

    /// `None` when the last write went through, else why not.
    pub fn problem(&self) -> Option<String> {
        self.down
            .load(Ordering::Relaxed)
            .then(|| self.reason.lock().clone().unwrap_or_default())
    }

    /// Whether the database is known to be refusing writes now.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn fresh(&self) -> bool {
        self.checked
            .lock()
            .is_some_and(|at| at.elapsed() < PROBE_EVERY)
    }

    /// Whether a write can commit: from memory when a write's outcome is recent, else by
    /// committing a probe (at most [`PROBE_LIMIT`]; concurrent callers share it).
    pub async fn check(&self, store: &dyn Store) -> Option<String> {
        if !self.fresh() {
            if let Ok(_probing) = self.probing.try_lock() {
                let result = match tokio::time::timeout(PROBE_LIMIT, store.probe_write()).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Unavailable(format!(
                        "a write did not commit within {PROBE_LIMIT:?}"
                    ))),
                };
                self.record(&result);
            }
        }
        self.problem()
    }

    /// The error to answer with at once, without asking the database, while it is known to be
    /// down.
    pub fn refuse_if_down(&self) -> Result<(), AppError> {
        match self.problem() {
            Some(reason) => Err(AppError::DatabaseUnavailable(reason)),
            None => Ok(()),
        }
    }
}
