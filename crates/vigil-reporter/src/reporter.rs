//! The reporter's public face: [`Reporter::builder`], [`ReporterBuilder`] and [`ReporterHandle`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::instrument::WithSubscriber;
use tracing::Instrument;
use vigil_proto::{HealthStatus, RegisterRequest, MAX_FIELD_LEN, REPORT_INTERVAL_RANGE};

use crate::clock::{Clock, SystemClock};
use crate::error::ReporterError;
use crate::looping::{stop_requested, FixedIntervalLoop};
use crate::session::{Config, HealthCheck, Session, Status};

/// Entry point: `Reporter::builder(server_url, host, binary)`.
#[derive(Debug)]
pub struct Reporter {
    _private: (),
}

impl Reporter {
    /// Starts configuring a reporter for the service `(host, binary)` of the server at
    /// `server_url` (for example `http://127.0.0.1:8799`).
    pub fn builder(
        server_url: impl Into<String>,
        host: impl Into<String>,
        binary: impl Into<String>,
    ) -> ReporterBuilder {
        ReporterBuilder {
            server_url: server_url.into(),
            register: RegisterRequest {
                host: host.into(),
                binary: binary.into(),
                ..RegisterRequest::default()
            },
            report_interval: Duration::from_secs_f64(vigil_proto::DEFAULT_REPORT_INTERVAL),
            request_timeout: None,
            // The agent token of the environment, if any; `token()` overrides it.
            token: std::env::var(AGENT_TOKEN_VAR)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            ca_file: std::env::var_os(CA_FILE_VAR)
                .filter(|v| !v.is_empty())
                .map(Into::into),
            clock: Arc::new(SystemClock),
            fuzzy_delay: None,
            health_check: None,
        }
    }
}

/// The environment variable a builder takes its token from when `token()` is not called.
pub const AGENT_TOKEN_VAR: &str = "VIGIL_AGENT_TOKEN";

/// The environment variable a builder takes its CA file from when `ca_file()` is not called.
pub const CA_FILE_VAR: &str = "VIGIL_CA_FILE";

/// Configures a reporter; finish with [`ReporterBuilder::start`] or
/// [`ReporterBuilder::start_on`].
#[must_use = "a reporter does nothing until started"]
pub struct ReporterBuilder {
    server_url: String,
    register: RegisterRequest,
    report_interval: Duration,
    request_timeout: Option<Duration>,
    token: Option<String>,
    ca_file: Option<std::path::PathBuf>,
    clock: Arc<dyn Clock>,
    fuzzy_delay: Option<Duration>,
    health_check: Option<HealthCheck>,
}

impl fmt::Debug for ReporterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReporterBuilder")
            .field("server_url", &self.server_url)
            .field("register", &self.register)
            .field("report_interval", &self.report_interval)
            .field("request_timeout", &self.request_timeout)
            // Never print the secret itself.
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("fuzzy_delay", &self.fuzzy_delay)
            .field("health_check", &self.health_check.is_some())
            .finish_non_exhaustive()
    }
}

impl ReporterBuilder {
    /// The service's topic (Cinder's RPC topic), shown by the server.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.register.topic = Some(topic.into());
        self
    }

    /// The availability zone; sent with every beat too, so the server follows a change of zone
    /// after a restart (as Cinder's `report_state` does).
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.register.zone = Some(zone.into());
        self
    }

    /// Time between heartbeats; default [`vigil_proto::DEFAULT_REPORT_INTERVAL`] (10 s). Must
    /// lie in [`vigil_proto::REPORT_INTERVAL_RANGE`], and should be well under the server's
    /// `service_down_time` (the reporter warns once if it is not).
    pub fn report_interval(mut self, interval: Duration) -> Self {
        self.report_interval = interval;
        self
    }

    /// The service's software version, shown by the server.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.register.version = Some(version.into());
        self
    }

    /// A PEM file of the certificate authorities an `https` server's certificate is checked
    /// against, besides the system's; the server's name is always verified. Default: the
    /// `VIGIL_CA_FILE` environment variable, if set.
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// This service's own `service_down_time` (the server refuses the registration, and the
    /// reporter logs why, when it is outside the server's bounds or under twice the
    /// report interval). Unset: the server's.
    pub fn service_down_time(mut self, down_time: Duration) -> Self {
        self.register.service_down_time = Some(down_time.as_secs_f64());
        self
    }

    /// A bearer token sent as `Authorization: Bearer <token>` on every request: an agent
    /// token whose host patterns cover this host. Default: the `VIGIL_AGENT_TOKEN`
    /// environment variable, if set.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The clock that stamps each beat's `sent_at`; default [`SystemClock`]. Only the server's
    /// clock decides liveness, so a skewed clock here is harmless (and testable with
    /// [`crate::OffsetClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Delays the first heartbeat by a random extra amount up to `bound`, so a fleet restarted
    /// at once does not beat in lockstep (the seed's `periodic_fuzzy_delay`).
    pub fn fuzzy_delay(mut self, bound: Duration) -> Self {
        self.fuzzy_delay = Some(bound);
        self
    }

    /// Called before each heartbeat (Cinder's `manager.is_working()`). Each beat carries its
    /// answer: `Ok` is `health: ok`, `Err(reason)` is `health: failing` with the reason as its
    /// `message`, so the server shows the service alive but failing (and the doctor says so)
    /// rather than letting it look dead. A change is logged once. It runs on the reporter's
    /// thread, so it must be quick; a panic in it counts as failing. See
    /// [`ReporterBuilder::health`] for `warning`.
    pub fn health_check<F>(self, check: F) -> Self
    where
        F: Fn() -> Result<(), String> + Send + Sync + 'static,
    {
        self.health(move || match check() {
            Ok(()) => (HealthStatus::Ok, None),
            Err(reason) => (HealthStatus::Failing, Some(reason)),
        })
    }

    /// Like [`ReporterBuilder::health_check`], with the three levels: each beat carries the
    /// health it returns (`ok`, `warning`: working but degraded, `failing`) and its message.
    pub fn health<F>(mut self, check: F) -> Self
    where
        F: Fn() -> (HealthStatus, Option<String>) + Send + Sync + 'static,
    {
        self.health_check = Some(Arc::new(check));
        self
    }

    /// Time limit of each tick's requests (together: a re-registration and its heartbeat share
    /// it); default, and at most, the report interval (larger values are clamped down), so one
    /// slow server can never make the reporter miss more than one beat.
    ///
    /// The limit actually applied is at most 95% of the interval, so that a tick whose request
    /// times out still ends before the next tick is due, instead of a few milliseconds after it,
    /// which the loop would report as an overrun on every tick of an outage.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Starts the reporter on its own OS thread, running a single-threaded tokio runtime.
    ///
    /// Its own thread means an application runtime that is blocked or saturated cannot delay
    /// the heartbeats and make a live service look down. It is usable from sync and async code.
    /// Registration is tried at once, but an unreachable server is not an error: the reporter
    /// keeps trying on every tick.
    pub fn start(self) -> Result<ReporterHandle, ReporterError> {
        let (handle, drive, done) = self.prepare()?.into_parts();
        let thread = on_own_thread(drive, done)?;
        Ok(handle.with_thread(thread))
    }

    /// Starts the reporter as a task on the given runtime, for callers who want no extra
    /// thread. It then shares that runtime's fate: prefer [`ReporterBuilder::start`] unless the
    /// runtime is known to stay responsive.
    pub fn start_on(
        self,
        runtime: &tokio::runtime::Handle,
    ) -> Result<ReporterHandle, ReporterError> {
        let (handle, drive, done) = self.prepare()?.into_parts();
        on_runtime(runtime, drive, done);
        Ok(handle)
    }

    /// Validates the settings and builds the HTTP client.
    pub(crate) fn prepare(self) -> Result<Prepared, ReporterError> {
        let client = http_client(self.ca_file.as_deref())?;
        self.prepare_with(client)
    }

    /// Validates the settings; the reporter will use `client` (a group shares one).
    pub(crate) fn prepare_with(self, client: reqwest::Client) -> Result<Prepared, ReporterError> {
        let base_url = check_url(&self.server_url)?;
        check_field("host", Some(&self.register.host), true)?;
        check_field("binary", Some(&self.register.binary), true)?;
        check_field("topic", self.register.topic.as_deref(), false)?;
        check_field("zone", self.register.zone.as_deref(), false)?;
        check_field("version", self.register.version.as_deref(), false)?;
        let interval_s = self.report_interval.as_secs_f64();
        if !REPORT_INTERVAL_RANGE.contains(&interval_s) {
            return Err(ReporterError::InvalidInterval {
                interval: self.report_interval,
            });
        }
        let request_timeout = self
            .request_timeout
            .map_or(self.report_interval, |timeout| {
                timeout.min(self.report_interval)
            });
        if request_timeout.is_zero() {
            return Err(ReporterError::ZeroTimeout);
        }
        let mut register = self.register;
        register.report_interval = Some(interval_s);
        let config = Config {
            base_url,
            register,
            interval: self.report_interval,
            tick_budget: request_timeout.min(self.report_interval.mul_f64(TICK_SHARE)),
            clock: self.clock,
            token: self.token,
            health_check: self.health_check,
        };
        Ok(Prepared {
            config: Arc::new(config),
            client,
            fuzzy_delay: self.fuzzy_delay,
        })
    }
}

/// The reporter's HTTP client: the system's roots, and those of `ca_file`.
pub(crate) fn http_client(
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, ReporterError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("vigil-reporter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let failed = |reason: String| ReporterError::CaFile {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
        if roots.is_empty() {
            return Err(failed("no CERTIFICATE in it".into()));
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(ReporterError::Client)
}

impl ReporterBuilder {
    pub(crate) fn ca_file_path(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }
}

/// The largest share of the interval a tick's requests may take.
const TICK_SHARE: f64 = 0.95;

/// Checks the server URL and returns it without trailing slashes.
fn check_url(url: &str) -> Result<String, ReporterError> {
    let invalid = |reason: String| ReporterError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|err| invalid(err.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme must be http or https, not {}",
            parsed.scheme()
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("must have no query or fragment".to_owned()));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Rejects what the server would refuse: an empty required field or one over
/// [`MAX_FIELD_LEN`] characters.
fn check_field(
    field: &'static str,
    value: Option<&str>,
    required: bool,
) -> Result<(), ReporterError> {
    let reason = match value {
        Some(value) if required && value.trim().is_empty() => "must not be empty".to_owned(),
        Some(value) if value.chars().count() > MAX_FIELD_LEN => {
            format!("is longer than {MAX_FIELD_LEN} characters")
        }
        _ => return Ok(()),
    };
    Err(ReporterError::InvalidField { field, reason })
}

/// A validated reporter, ready to run on some runtime.
pub(crate) struct Prepared {
    pub config: Arc<Config>,
    pub client: reqwest::Client,
    pub fuzzy_delay: Option<Duration>,
}

/// Dropped when the reporter has ended, which wakes [`ReporterHandle::wait`] and
/// [`ReporterHandle::shutdown`] (a dropped sender is the signal, so a panic signals too).
pub(crate) struct Done {
    _sync: mpsc::Sender<()>,
    _async: oneshot::Sender<()>,
}

impl Prepared {
    /// Splits into the handle, the future that runs the reporter, and its end-of-run signal.
    fn into_parts(
        self,
    ) -> (
        ReporterHandle,
        impl std::future::Future<Output = ()> + Send + 'static,
        Done,
    ) {
        let status = Arc::new(Status::default());
        let (handle, stopped, silent, done) = ReporterHandle::create(status.clone());
        let span = tracing::info_span!(
            "vigil_reporter",
            host = %self.config.register.host,
            binary = %self.config.register.binary,
        );
        let session = Session::new(self.config.clone(), self.client, status.clone());
        let drive = drive(
            session,
            self.config.interval,
            self.fuzzy_delay,
            stopped,
            silent,
        )
        .instrument(span)
        // Log where the caller logs, even from the reporter's own thread (this is what lets a
        // test capture the reporter's logs with a thread-local subscriber).
        .with_current_subscriber();
        (handle, drive, done)
    }
}

/// Registers, then beats every interval until stopped; then tells the server the service
/// stops, unless stopped silently.
async fn drive(
    session: Session,
    interval: Duration,
    fuzzy_delay: Option<Duration>,
    mut stopped: watch::Receiver<bool>,
    silent: Arc<AtomicBool>,
) {
    let session = Arc::new(tokio::sync::Mutex::new(session));
    tokio::select! {
        biased;
        () = stop_requested(&mut stopped) => return,
        () = async { session.lock().await.register_at_start().await } => {}
    }
    let ticking = session.clone();
    // As Cinder: the first beat comes one interval after the start.
    let beats = FixedIntervalLoop::start(interval, interval, fuzzy_delay, move |tick| {
        let session = ticking.clone();
        // Runs never overlap, so this lock is never contended; it only lets each run's future
        // own its access to the session.
        async move { session.lock().await.tick(tick).await }
    });
    stop_requested(&mut stopped).await;
    beats.stop();
    beats.wait().await;
    if !silent.load(Ordering::Relaxed) {
        session.lock().await.announce_stop().await;
    }
}

/// What [`ReporterHandle::wait`] and [`ReporterHandle::shutdown`] wait on.
#[derive(Debug)]
struct Waiters {
    thread: Option<std::thread::JoinHandle<()>>,
    /// In a mutex only to make the handle `Sync` (a receiver is not); never contended.
    sync: Mutex<mpsc::Receiver<()>>,
    r#async: oneshot::Receiver<()>,
}

/// A running reporter.
///
/// Dropping the handle stops the reporter (without waiting for it). Stop it explicitly with
/// [`ReporterHandle::stop`], then [`ReporterHandle::wait`] in sync code or
/// [`ReporterHandle::shutdown`] in async code.
#[derive(Debug)]
pub struct ReporterHandle {
    status: Arc<Status>,
    stop: watch::Sender<bool>,
    /// Stop without telling the server ([`ReporterHandle::stop_silently`]).
    silent: Arc<AtomicBool>,
    /// `None` once waited for.
    done: Option<Waiters>,
}

impl ReporterHandle {
    /// A handle showing `status`, the receiver its stop is sent on, whether that stop is
    /// silent, and the end-of-run signal the running reporter drops when it ends.
    pub(crate) fn create(
        status: Arc<Status>,
    ) -> (ReporterHandle, watch::Receiver<bool>, Arc<AtomicBool>, Done) {
        let (stop, stopped) = watch::channel(false);
        let silent = Arc::new(AtomicBool::new(false));
        let (sync_tx, sync_rx) = mpsc::channel();
        let (async_tx, async_rx) = oneshot::channel();
        let handle = ReporterHandle {
            status,
            stop,
            silent: silent.clone(),
            done: Some(Waiters {
                thread: None,
                sync: Mutex::new(sync_rx),
                r#async: async_rx,
            }),
        };
        let done = Done {
            _sync: sync_tx,
            _async: async_tx,
        };
        (handle, stopped, silent, done)
    }

    pub(crate) fn with_thread(mut self, thread: std::thread::JoinHandle<()>) -> Self {
        if let Some(done) = &mut self.done {
            done.thread = Some(thread);
        }
        self
    }

    /// The service's id on the server, once registered.
    pub fn service_id(&self) -> Option<i64> {
        self.status.service_id()
    }

    /// The `report_count` of the last acknowledged heartbeat (or of the registration answer
    /// before the first beat).
    pub fn report_count(&self) -> i64 {
        self.status.report_count()
    }

    /// Asks the reporter to stop: no further heartbeat is sent, a request in flight is
    /// abandoned, and the server is told the service stops cleanly (`POST
    /// /v1/services/{id}/stop`, within the request timeout): it shows `stopped` at once rather
    /// than `up` for `service_down_time` and then `down`. Calling it again does nothing. It
    /// does not wait; see [`ReporterHandle::wait`] and [`ReporterHandle::shutdown`], which
    /// also wait for that last request.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops like [`ReporterHandle::stop`] but without telling the server, as a crash would:
    /// the service goes `down` once `service_down_time` has passed.
    pub fn stop_silently(&self) {
        self.silent.store(true, Ordering::Relaxed);
        self.stop();
    }

    /// Blocks the calling thread until the reporter has ended. The reporter only ends once
    /// stopped, so call [`ReporterHandle::stop`] first.
    ///
    /// Meant for sync code. In async code use [`ReporterHandle::shutdown`]: blocking a runtime
    /// thread here can deadlock a reporter started with [`ReporterBuilder::start_on`] on that
    /// runtime.
    pub fn wait(mut self) {
        if let Some(done) = self.done.take() {
            // An error only means the sender is gone, which is the signal itself.
            let _ = done
                .sync
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            if let Some(thread) = done.thread {
                // The reporter never panics; if it somehow did, it is over all the same.
                let _ = thread.join();
            }
        }
    }

    /// Stops the reporter and waits until it has ended, without blocking the runtime.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(done) = self.done.take() {
            let _ = done.r#async.await;
            // The thread (if any) has nothing left to do but exit; it is left to finish alone.
        }
    }
}

impl Drop for ReporterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `drive` to its end on an OS thread of its own, in a single-threaded runtime, and
/// drops `done` once the runtime (and its connections) closed, to tell waiters it is over.
pub(crate) fn on_own_thread<D: Send + 'static>(
    drive: impl std::future::Future<Output = ()> + Send + 'static,
    done: D,
) -> Result<std::thread::JoinHandle<()>, ReporterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReporterError::Thread)?;
    std::thread::Builder::new()
        .name("vigil-reporter".to_owned())
        .spawn(move || {
            runtime.block_on(drive);
            drop(runtime);
            drop(done);
        })
        .map_err(ReporterError::Thread)
}

/// Runs `drive` as a task on `runtime` and drops `done` when it ends.
pub(crate) fn on_runtime<D: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    drive: impl std::future::Future<Output = ()> + Send + 'static,
    done: D,
) {
    runtime.spawn(async move {
        drive.await;
        drop(done);
    });
}
