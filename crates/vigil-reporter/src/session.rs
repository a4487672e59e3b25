//! What the reporter does on each tick: (re-)register if needed, then send one heartbeat.
//!
//! Every error is handled here and turned into a log line and the next beat's `last_error`;
//! nothing escapes to the loop, so the loop never dies. There is no retry inside a tick: a retry
//! would only stretch the tick past its interval while the server is struggling (Nova bug
//! 1368989, Cinder bug 2018595); the next tick is the retry.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;
use vigil_proto::{ErrorBody, HeartbeatRequest, HeartbeatResponse, RegisterRequest};

use crate::clock::Clock;
use crate::looping::Tick;

/// The application's "am I working?" callback (Cinder's `manager.is_working()`).
pub(crate) type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A reporter's fixed settings, validated by the builder.
pub(crate) struct Config {
    /// Server base URL without a trailing slash.
    pub base_url: String,
    pub register: RegisterRequest,
    pub interval: Duration,
    /// Time allowed to the requests of one tick, together.
    pub tick_budget: Duration,
    pub clock: Arc<dyn Clock>,
    pub token: Option<String>,
    pub health_check: Option<HealthCheck>,
}

/// What the reporter has learnt, readable from the [`crate::ReporterHandle`] on any thread.
#[derive(Debug, Default)]
pub(crate) struct Status {
    service_id: Mutex<Option<i64>>,
    report_count: AtomicI64,
}

impl Status {
    pub fn service_id(&self) -> Option<i64> {
        *self
            .service_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_service_id(&self, id: Option<i64>) {
        *self
            .service_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = id;
    }

    pub fn report_count(&self) -> i64 {
        self.report_count.load(Ordering::Relaxed)
    }

    fn set_report_count(&self, count: i64) {
        self.report_count.store(count, Ordering::Relaxed);
    }
}

/// The part of a registration answer (a `Service`) the reporter needs. Reading only these fields
/// keeps the reporter working against servers whose `Service` gained or changed other fields.
#[derive(Deserialize)]
struct Registered {
    id: i64,
    #[serde(default)]
    report_count: i64,
}

/// Why one request failed.
enum CallError {
    /// No usable answer: connection refused or reset, timeout, truncated body.
    Transport(reqwest::Error),
    /// The server answered with an error status.
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// A success status with a body that does not parse.
    Unreadable(reqwest::Error),
}

impl CallError {
    /// The server is unreachable or unable to work (5xx): logged once per outage, not per tick.
    fn is_outage(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Refused { status, .. } => status.is_server_error(),
            CallError::Unreadable(_) => false,
        }
    }

    fn is_service_not_found(&self) -> bool {
        matches!(self, CallError::Refused { status, code, .. }
            if *status == StatusCode::NOT_FOUND && code == "service_not_found")
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(err) if err.is_timeout() => {
                f.write_str("no answer within the time allowed to a tick")
            }
            CallError::Transport(err) => write_chain(f, err),
            CallError::Refused {
                status,
                code,
                message,
            } => write!(f, "server answered {status} {code}: {message}"),
            CallError::Unreadable(err) => {
                f.write_str("unreadable answer: ")?;
                write_chain(f, err)
            }
        }
    }
}

/// Writes an error and its sources: reqwest's own message ("error sending request") says
/// nothing of the cause ("Connection refused") without them.
fn write_chain(f: &mut fmt::Formatter<'_>, err: &dyn std::error::Error) -> fmt::Result {
    write!(f, "{err}")?;
    let mut source = err.source();
    while let Some(cause) = source {
        write!(f, ": {cause}")?;
        source = cause.source();
    }
    Ok(())
}

/// The reporter's mutable state, owned by its loop.
pub(crate) struct Session {
    config: Arc<Config>,
    client: reqwest::Client,
    status: Arc<Status>,
    /// False while the server is unreachable, so the outage is logged once and the recovery too.
    connected: bool,
    /// Whether the interval-versus-`service_down_time` warning was already given.
    warned_down_time: bool,
    last_rtt: Option<Duration>,
    /// When the current tick's requests must be done.
    deadline: Instant,
    /// The last error since the previous successful beat, sent with the next beat.
    last_error: Option<String>,
}

impl Session {
    pub fn new(config: Arc<Config>, client: reqwest::Client, status: Arc<Status>) -> Self {
        Session {
            config,
            client,
            status,
            connected: true,
            warned_down_time: false,
            last_rtt: None,
            deadline: Instant::now(),
            last_error: None,
        }
    }

    /// Registers once, as a service does when it starts; a failure is logged and retried by the
    /// ticks.
    pub async fn register_at_start(&mut self) {
        self.deadline = Instant::now() + self.config.tick_budget;
        self.register().await;
    }

    /// One tick of the loop.
    pub async fn tick(&mut self, tick: Tick) {
        self.deadline = Instant::now() + self.config.tick_budget;
        if let Err(reason) = self.check_health() {
            tracing::warn!(%reason, "health check failed, skipping this heartbeat");
            self.last_error = Some(format!("health check failed: {reason}"));
            return;
        }
        let mut id = match self.status.service_id() {
            Some(id) => id,
            None => match self.register().await {
                Some(id) => id,
                None => return,
            },
        };
        let mut registered_again = false;
        loop {
            match self.heartbeat(id, tick).await {
                Ok(answer) => {
                    self.heartbeat_acknowledged(answer);
                    return;
                }
                Err(err) if err.is_service_not_found() && !registered_again => {
                    self.status.set_service_id(None);
                    let Some(new_id) = self.register().await else {
                        return;
                    };
                    tracing::info!(
                        old_id = id,
                        new_id,
                        "service was deleted on the server, registered again"
                    );
                    id = new_id;
                    registered_again = true;
                }
                Err(err) => {
                    self.failed("heartbeat", err);
                    return;
                }
            }
        }
    }

    /// Runs the application's health check; a panic in it counts as a failure rather than
    /// killing the reporter.
    fn check_health(&self) -> Result<(), String> {
        let Some(check) = &self.config.health_check else {
            return Ok(());
        };
        catch_unwind(AssertUnwindSafe(|| check()))
            .unwrap_or_else(|_| Err("health check panicked".to_owned()))
    }

    /// Get-or-create; returns the service id, or `None` after logging the failure.
    async fn register(&mut self) -> Option<i64> {
        let url = format!("{}/v1/services", self.config.base_url);
        let sent = self.post(&url, &self.config.register).send().await;
        match read::<Registered>(sent).await {
            Ok(service) => {
                self.reachable();
                self.status.set_service_id(Some(service.id));
                self.status.set_report_count(service.report_count);
                tracing::debug!(service_id = service.id, "registered");
                Some(service.id)
            }
            Err(err) => {
                self.failed("registration", err);
                None
            }
        }
    }

    async fn heartbeat(&mut self, id: i64, tick: Tick) -> Result<HeartbeatResponse, CallError> {
        let url = format!("{}/v1/services/{id}/heartbeat", self.config.base_url);
        let beat = HeartbeatRequest {
            zone: self.config.register.zone.clone(),
            sent_at: Some(self.config.clock.now()),
            last_rtt_s: self.last_rtt.map(|rtt| rtt.as_secs_f64()),
            overrun_s: Some(tick.overrun_s()),
            last_error: self.last_error.clone(),
        };
        let started = Instant::now();
        let answer = read(self.post(&url, &beat).send().await).await;
        if answer.is_ok() {
            self.last_rtt = Some(started.elapsed());
        }
        answer
    }

    /// A request limited to what is left of the tick's budget.
    fn post<T: serde::Serialize>(&self, url: &str, body: &T) -> reqwest::RequestBuilder {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let request = self.client.post(url).json(body).timeout(left);
        match &self.config.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn heartbeat_acknowledged(&mut self, answer: HeartbeatResponse) {
        self.reachable();
        self.last_error = None;
        self.status.set_report_count(answer.report_count);
        let interval_s = self.config.interval.as_secs_f64();
        if interval_s >= answer.service_down_time && !self.warned_down_time {
            self.warned_down_time = true;
            tracing::warn!(
                report_interval_s = interval_s,
                service_down_time_s = answer.service_down_time,
                "report interval is not shorter than the server's service_down_time: \
                 the service will look down between heartbeats"
            );
        }
    }

    fn reachable(&mut self) {
        if !self.connected {
            self.connected = true;
            tracing::info!(url = %self.config.base_url, "recovered connection to vigil server");
        }
    }

    fn failed(&mut self, what: &str, err: CallError) {
        let url = &self.config.base_url;
        if err.is_outage() {
            if self.connected {
                self.connected = false;
                tracing::error!("lost connection to vigil server {url}: {what} failed: {err}");
            } else {
                tracing::debug!("vigil server {url} still unreachable: {what} failed: {err}");
            }
        } else {
            tracing::warn!("vigil server {url} refused the {what}: {err}");
        }
        self.last_error = Some(format!("{what} failed: {err}"));
    }
}

/// Turns a response into its body or a [`CallError`].
async fn read<T: serde::de::DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T, CallError> {
    let response = sent.map_err(CallError::Transport)?;
    let status = response.status();
    if status.is_success() {
        return response.json::<T>().await.map_err(|err| {
            if err.is_decode() {
                CallError::Unreadable(err)
            } else {
                CallError::Transport(err)
            }
        });
    }
    let text = response.text().await.map_err(CallError::Transport)?;
    let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message),
        // Not from a Vigil server (a proxy, a wrong URL): show what came back.
        Err(_) => ("unknown".to_owned(), text.chars().take(200).collect()),
    };
    Err(CallError::Refused {
        status,
        code,
        message,
    })
}
