//! Heartbeat reporter that services embed to tell a Vigil server they are alive.
//!
//! A service registers itself once (get-or-create by `(host, binary)`) and then sends a heartbeat
//! every `report_interval`, as Cinder's `Service.report_state` does. The server marks the
//! service down when its newest heartbeat is older than `service_down_time`, judged by the
//! server's own clock.
//!
//! The reporter is built to keep a live service looking live and nothing more:
//! - it runs on its own OS thread by default ([`ReporterBuilder::start`]), so a blocked or
//!   saturated application runtime cannot delay the beats;
//! - each request times out within one interval and is never retried inside a tick (a retry
//!   only stretches the tick while the server struggles); the next tick is the retry;
//! - an unreachable server is not an error: the reporter logs the outage once, keeps trying to
//!   register and beat on every tick, and logs the recovery once;
//! - a service deleted on the server is registered again on the next beat;
//! - an optional health check ([`ReporterBuilder::health_check`], [`ReporterBuilder::health`])
//!   is sent with every beat (`ok`, `warning`, `failing` and a message), so a service that is
//!   alive but not working shows so, told apart from a dead one;
//! - [`ReporterHandle::stop`] tells the server the service stops (`stopped` at once).
//!
//! # Layout
//! - [`Reporter`], [`ReporterBuilder`], [`ReporterHandle`] (module `reporter`): configuring,
//!   starting and stopping a reporter.
//! - [`ReporterGroup`], [`ReporterGroupBuilder`], [`ReporterGroupHandle`] (module `group`):
//!   several services of one process, each at its own interval, their beats sent together in
//!   one `POST /v1/heartbeats` per tick.
//! - [`ReporterError`] (module `error`): why a reporter could not start.
//! - module `session` (private): what each tick does, and every error handling of the requests.
//! - [`looping`]: [`FixedIntervalLoop`], the fixed-interval loop that drives the heartbeats.
//! - [`clock`]: [`Clock`], the wall clock that stamps each beat's `sent_at`.
//!
//! # Examples
//!
//! From sync code (the reporter has its own thread):
//!
//! ```no_run
//! use std::time::Duration;
//! use vigil_reporter::Reporter;
//!
//! # fn main() -> Result<(), vigil_reporter::ReporterError> {
//! let reporter = Reporter::builder("http://127.0.0.1:8799", "node-1", "cinder-volume")
//!     .topic("cinder-volume")
//!     .zone("nova")
//!     .report_interval(Duration::from_secs(10))
//!     .health_check(|| Ok(()))
//!     .start()?;
//! // ... the service does its work ...
//! reporter.stop();
//! reporter.wait();
//! # Ok(())
//! # }
//! ```
//!
//! From async code:
//!
//! ```no_run
//! use vigil_reporter::Reporter;
//!
//! # async fn serve() -> Result<(), vigil_reporter::ReporterError> {
//! let reporter = Reporter::builder("http://127.0.0.1:8799", "node-1", "cinder-scheduler")
//!     .token("secret")
//!     .start()?;
//! // ... the service does its work ...
//! println!("registered as {:?}", reporter.service_id());
//! reporter.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod clock;
mod error;
mod group;
pub mod looping;
mod reporter;
mod session;

pub use clock::{Clock, OffsetClock, SystemClock};
pub use error::ReporterError;
pub use group::{ReporterGroup, ReporterGroupBuilder, ReporterGroupHandle};
pub use looping::{FixedIntervalLoop, LoopHandle, Tick};
pub use reporter::{Reporter, ReporterBuilder, ReporterHandle, AGENT_TOKEN_VAR, CA_FILE_VAR};
pub use vigil_proto::HealthStatus;
