//! Why a reporter could not start.
//!
//! Only configuration and local resources can fail at start: an unreachable server is not an
//! error, because the reporter keeps trying to register on every tick.

use std::time::Duration;

/// A reporter could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterError {
    /// The server URL does not parse, or is not `http`/`https`.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A registration field the server would refuse; failing here beats a reporter that retries
    /// a doomed registration forever.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The report interval is outside [`vigil_proto::REPORT_INTERVAL_RANGE`].
    #[error(
        "report interval must be between {min} and {max} seconds, not {:.3}",
        .interval.as_secs_f64(),
        min = vigil_proto::REPORT_INTERVAL_RANGE.start(),
        max = vigil_proto::REPORT_INTERVAL_RANGE.end()
    )]
    InvalidInterval { interval: Duration },
    /// A zero request timeout would fail every request.
    #[error("request timeout must be greater than zero")]
    ZeroTimeout,
    /// The CA file cannot be read, or holds no certificate.
    #[error("cannot use the CA file {path}: {reason}")]
    CaFile {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("could not build the http client")]
    Client(#[source] reqwest::Error),
    /// A [`crate::ReporterGroup`] was started without a service.
    #[error("a reporter group needs at least one service")]
    EmptyGroup,
    /// A [`crate::ReporterGroup`] has more services than one batch may carry.
    #[error(
        "a reporter group has at most {max} services, not {services}",
        max = vigil_proto::MAX_BATCH_BEATS
    )]
    GroupTooLarge { services: usize },
    /// The services of a [`crate::ReporterGroup`] were given different tokens.
    #[error("every service of a reporter group must use the same token")]
    GroupTokens,
    /// The reporter's thread or runtime could not be created.
    #[error("could not start the reporter thread")]
    Thread(#[source] std::io::Error),
}
