//! Why an operation failed, independent of the API that reports it (each front end maps it to
//! its own error body).

use crate::store::StoreError;

/// Why an operation failed, independent of the API that reports it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    Invalid { code: String, message: String },
    #[error("service {0} not found")]
    NotFound(i64),
    #[error("service {host}/{binary} is up; stop it first or delete with force")]
    ServiceUp { host: String, binary: String },
    /// An admin change through Vigil of a service that a watched OpenStack database owns.
    #[error("service {host}/{binary} is a row of the watched OpenStack database {watch}: Vigil only reads it; change it in OpenStack: {command}")]
    ReadOnlySource {
        host: String,
        binary: String,
        watch: String,
        command: String,
    },
    /// The caller may not do this (no token, a bad one, the wrong role or host).
    #[error(transparent)]
    Denied(#[from] crate::auth::Denied),
    /// The caller wrote faster than `limits.writes_per_second` allows.
    #[error("too many writes from {who}: at most {per_second} per second (a burst of {burst}); try again in {retry_after_s} s")]
    RateLimited {
        who: String,
        per_second: f64,
        burst: u32,
        retry_after_s: u64,
    },
    /// `limits.max_services` services exist: a new one is refused.
    #[error("the server keeps at most {0} services (limits.max_services); delete some or raise the limit")]
    TooManyServices(usize),
    #[error("no token is named {0:?}")]
    TokenNotFound(String),
    #[error("a token named {0:?} exists; revoke it first or choose another name")]
    TokenExists(String),
    #[error("no maintenance window {0} is active: it does not exist or has ended")]
    MaintenanceNotFound(i64),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(reason) => AppError::DatabaseUnavailable(reason),
            StoreError::Other(reason) => AppError::Internal(reason),
        }
    }
}
