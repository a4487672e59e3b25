//! What the reporter does on each tick: (re-)register if needed, then send one heartbeat.
//!
//! Every error is handled here and turned into a log line and the next beat's `last_error`;
//! nothing escapes to the loop, so the loop never dies. There is no retry inside a tick: a retry
//! would only stretch the tick past its interval while the server is struggling (Nova bug
//! 1368989, Cinder bug 2018595); the next tick is the retry.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;
use vigil_proto::{
    BatchBeat, BatchResult, ErrorBody, HealthStatus, HeartbeatRequest, HeartbeatResponse,
    RegisterRequest,
};

use crate::clock::Clock;
use crate::looping::Tick;

/// The application's "am I working?" callback (Cinder's `manager.is_working()`): its health
/// and a message, sent with each beat.
pub(crate) type HealthCheck = Arc<dyn Fn() -> (HealthStatus, Option<String>) + Send + Sync>;

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
pub(crate) enum CallError {
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
    pub fn is_outage(&self) -> bool {
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
    /// Shared by the services of a [`crate::ReporterGroup`], which reach the server together.
    connected: Arc<AtomicBool>,
    /// Whether the interval-versus-`service_down_time` warning was already given.
    warned_down_time: bool,
    last_rtt: Option<Duration>,
    /// When the current tick's requests must be done.
    deadline: Instant,
    /// The last error since the previous successful beat, sent with the next beat.
    last_error: Option<String>,
    /// This tick's health and message, sent with its beat (`None` without a health check).
    health: Option<(HealthStatus, Option<String>)>,
}

impl Session {
    pub fn new(config: Arc<Config>, client: reqwest::Client, status: Arc<Status>) -> Self {
        Self::sharing(config, client, status, Arc::new(AtomicBool::new(true)))
    }

    /// A session whose connection state (and so its outage and recovery log lines) is shared
    /// with the other services of a group.
    pub fn sharing(
        config: Arc<Config>,
        client: reqwest::Client,
        status: Arc<Status>,
        connected: Arc<AtomicBool>,
    ) -> Self {
        Session {
            config,
            client,
            status,
            connected,
            warned_down_time: false,
            last_rtt: None,
            deadline: Instant::now(),
            last_error: None,
            health: None,
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
        self.check_health();
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

    /// Runs the application's health check for this tick's beat, and logs a change of it; a
    /// panic in it counts as `failing` rather than killing the reporter.
    fn check_health(&mut self) {
        let Some(check) = &self.config.health_check else {
            return;
        };
        let health = catch_unwind(AssertUnwindSafe(|| check())).unwrap_or_else(|_| {
            (
                HealthStatus::Failing,
                Some("health check panicked".to_owned()),
            )
        });
        if self.health.as_ref().map(|(status, _)| *status) != Some(health.0) {
            let message = health.1.as_deref().unwrap_or("");
            match health.0 {
                HealthStatus::Ok if self.health.is_some() => {
                    tracing::info!("health check passes again")
                }
                HealthStatus::Ok => {}
                HealthStatus::Warning => tracing::warn!(%message, "health check warns"),
                HealthStatus::Failing => tracing::warn!(%message, "health check fails"),
            }
        }
        self.health = Some(health);
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

    /// This tick's beat, stamped now.
    fn beat(&self, tick: Tick) -> HeartbeatRequest {
        HeartbeatRequest {
            zone: self.config.register.zone.clone(),
            sent_at: Some(self.config.clock.now()),
            last_rtt_s: self.last_rtt.map(|rtt| rtt.as_secs_f64()),
            overrun_s: Some(tick.overrun_s()),
            last_error: self.last_error.clone(),
            health: self.health.as_ref().map(|(status, _)| *status),
            message: self
                .health
                .as_ref()
                .and_then(|(_, message)| message.clone()),
        }
    }

    async fn heartbeat(&mut self, id: i64, tick: Tick) -> Result<HeartbeatResponse, CallError> {
        let url = format!("{}/v1/services/{id}/heartbeat", self.config.base_url);
        let beat = self.beat(tick);
        let started = Instant::now();
        let answer = read(self.post(&url, &beat).send().await).await;
        if answer.is_ok() {
            self.last_rtt = Some(started.elapsed());
        }
        answer
    }

    /// Tells the server the service stops cleanly (it shows `stopped` at once), within one
    /// tick's budget; a failure is logged, and the service then goes `down` in time as
    /// without it.
    pub async fn announce_stop(&mut self) {
        let Some(id) = self.status.service_id() else {
            return;
        };
        self.deadline = Instant::now() + self.config.tick_budget;
        let url = format!("{}/v1/services/{id}/stop", self.config.base_url);
        let left = self.deadline.saturating_duration_since(Instant::now());
        let request = self.client.post(&url).timeout(left);
        let request = match &self.config.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        match read::<Registered>(request.send().await).await {
            Ok(_) => tracing::debug!(service_id = id, "told the server the service stops"),
            Err(err) => tracing::warn!(
                service_id = id,
                error = %err,
                "could not tell the server the service stops; it will show down after service_down_time"
            ),
        }
    }

    /// A request limited to what is left of the tick's budget.
    pub fn post<T: serde::Serialize>(&self, url: &str, body: &T) -> reqwest::RequestBuilder {
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
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.config.base_url, "recovered connection to vigil server");
        }
    }

    fn failed(&mut self, what: &str, err: CallError) {
        self.failed_with(what, err.is_outage(), &err.to_string());
    }

    /// A failure, as [`Session::failed`], told by whether it is an outage and its message.
    pub fn failed_with(&mut self, what: &str, outage: bool, err: &str) {
        let url = &self.config.base_url;
        if outage {
            if self.connected.swap(false, Ordering::Relaxed) {
                tracing::error!("lost connection to vigil server {url}: {what} failed: {err}");
            } else {
                tracing::debug!("vigil server {url} still unreachable: {what} failed: {err}");
            }
        } else {
            tracing::warn!("vigil server {url} refused the {what}: {err}");
        }
        self.last_error = Some(format!("{what} failed: {err}"));
    }

    // What a group does with each of its services on a tick: the same steps as
    // [`Session::tick`], with the heartbeats of all the services due sent in one batch.

    /// Starts a group's tick: the health check, a registration if needed, then this service's
    /// beat; `None` when it has nothing to send this time (logged, and sent as `last_error`
    /// with the next beat).
    pub async fn batch_beat(&mut self, tick: Tick, deadline: Instant) -> Option<BatchBeat> {
        self.deadline = deadline;
        self.check_health();
        let id = match self.status.service_id() {
            Some(id) => id,
            None => self.register().await?,
        };
        Some(BatchBeat {
            id,
            beat: self.beat(tick),
        })
    }

    /// This service's result in a batch's answer. Returns true when the service was deleted on
    /// the server and is now registered again: its beat is to be sent again (once).
    pub async fn batch_result(
        &mut self,
        result: BatchResult,
        service_down_time: f64,
        rtt: Duration,
        first_try: bool,
    ) -> bool {
        match (result.report_count, result.error) {
            (Some(report_count), None) => {
                self.last_rtt = Some(rtt);
                self.heartbeat_acknowledged(HeartbeatResponse {
                    report_count,
                    service_down_time,
                });
                false
            }
            (_, Some(error)) if error.code == "service_not_found" && first_try => {
                self.status.set_service_id(None);
                let Some(new_id) = self.register().await else {
                    return false;
                };
                tracing::info!(
                    old_id = result.id,
                    new_id,
                    "service was deleted on the server, registered again"
                );
                true
            }
            (_, error) => {
                let (code, message) = error.map_or_else(
                    || {
                        (
                            "unknown".to_owned(),
                            "neither report_count nor error".to_owned(),
                        )
                    },
                    |e| (e.code, e.message),
                );
                let outage = code == "database_unavailable";
                self.failed_with(
                    "heartbeat",
                    outage,
                    &format!("server answered {code}: {message}"),
                );
                false
            }
        }
    }
}

/// Turns a response into its body or a [`CallError`].
pub(crate) async fn read<T: serde::de::DeserializeOwned>(
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
