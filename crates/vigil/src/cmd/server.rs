//! `vigil server`: run the registry.

use std::path::PathBuf;

use anyhow::Context;
use vigil_server::{Config, LogFormat};

/// Each flag overrides the same key of the configuration file; each has a `VIGIL_*` variable.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// TOML configuration file (`vigil config default` prints one).
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8799].
    #[arg(long, env = "VIGIL_LISTEN")]
    pub listen: Option<String>,
    /// Database URL: sqlite://PATH or postgres://... [default: sqlite://<data dir>/vigil.db].
    #[arg(long, env = "VIGIL_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Data directory for the embedded database and the generated admin token [default: vigil-data].
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds without a heartbeat after which a service is down [default: 60].
    #[arg(long, env = "VIGIL_SERVICE_DOWN_TIME")]
    pub service_down_time: Option<f64>,
    /// Seconds between batched writes of heartbeats [default: 1].
    #[arg(long, env = "VIGIL_FLUSH_INTERVAL")]
    pub flush_interval: Option<f64>,
    /// Zone of services that declare none [default: nova].
    #[arg(long, env = "VIGIL_DEFAULT_ZONE")]
    pub default_zone: Option<String>,
    /// Admin bearer token [default: generated into <data dir>/admin.token].
    #[arg(long, env = "VIGIL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Agent bearer token, for any host [default: generated into <data dir>/agent.token].
    #[arg(long, hide_env_values = true)]
    pub agent_token: Option<String>,
    /// PEM certificate chain for TLS on every listener (with --tls-key); reloaded on SIGHUP.
    #[arg(long, env = "VIGIL_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "VIGIL_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Let registrations and heartbeats through without a token: trusted networks only.
    #[arg(long, env = "VIGIL_OPEN_REGISTRATION")]
    pub open_registration: bool,
    /// Most database connections the server opens [default: 8].
    #[arg(long, env = "VIGIL_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Days of event history to keep [default: 30].
    #[arg(long, env = "VIGIL_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<f64>,
    /// Most open HTTP connections per listener; at the cap the longest-idle one is closed
    /// [default: an eighth below the open-file limit].
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a whole request head [default: 10].
    #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<f64>,
    /// Seconds after which a connection with no request in progress is closed [default: 120].
    #[arg(long, env = "VIGIL_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,
    /// Whether reads need no token (true) or a reader or admin token (false) [default: true].
    #[arg(long, env = "VIGIL_ANONYMOUS_READ", value_name = "BOOL")]
    pub anonymous_read: Option<bool>,
    /// Address of the Cinder-compatible os-services API [default: off].
    #[arg(long, env = "VIGIL_CINDER_LISTEN")]
    pub cinder_listen: Option<String>,
    /// Let every call to the Cinder-compatible API through without a token: trusted networks only.
    #[arg(long, env = "VIGIL_CINDER_NOAUTH")]
    pub cinder_noauth: bool,
    /// Watch an OpenStack database's services table, read-only: KIND:URL, KIND cinder or nova,
    /// URL mysql://, postgres:// or sqlite:// (repeatable; added to the file's [[watch]] tables).
    #[arg(
        long,
        env = "VIGIL_WATCH",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub watch: Vec<String>,
    /// Also serve /metrics (Prometheus) on a listener of its own at this address [default: off].
    #[arg(long, env = "VIGIL_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Export one series per service (vigil_service_*); `--metrics-per-service=false` for very
    /// large fleets [default: true].
    #[arg(long, env = "VIGIL_METRICS_PER_SERVICE", num_args = 0..=1, default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub metrics_per_service: Option<bool>,
    /// Ask for the admin token on /metrics.
    #[arg(long, env = "VIGIL_METRICS_REQUIRE_TOKEN")]
    pub metrics_require_token: bool,
    /// How log lines are written: text, or json (one object per line) [default: text].
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Simulated error of this machine's clock, seconds (tests of clock independence only).
    #[arg(
        long,
        env = "VIGIL_CLOCK_OFFSET",
        hide = true,
        allow_hyphen_values = true
    )]
    pub clock_offset: Option<f64>,
    /// Mount the reference heartbeat endpoint that `vigil bench` compares with.
    #[arg(long, hide = true)]
    pub bench_reference: bool,
}

/// `--log-format`: clap refuses any other value (exit 2).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> LogFormat {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl ServerArgs {
    /// The file (if any), then the flags and variables on top.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                Config::from_toml(&text)
                    .with_context(|| format!("in config file {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = self.database {
            config.database = Some(v);
        }
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.service_down_time {
            config.service_down_time = v;
        }
        if let Some(v) = self.flush_interval {
            config.flush_interval = v;
        }
        if let Some(v) = self.default_zone {
            config.default_zone = v;
        }
        if let Some(v) = self.admin_token {
            config.admin_token = Some(v);
        }
        if let Some(v) = self.agent_token {
            config.agent_token = Some(v);
        }
        if let Some(v) = self.tls_cert {
            config.tls_cert = Some(v);
        }
        if let Some(v) = self.tls_key {
            config.tls_key = Some(v);
        }
        if self.open_registration {
            config.auth.open_registration = true;
        }
        if let Some(v) = self.max_connections {
            config.http.max_connections = Some(v);
        }
        if let Some(v) = self.header_read_timeout {
            config.http.header_read_timeout = v;
        }
        if let Some(v) = self.idle_timeout {
            config.http.idle_timeout = v;
        }
        if let Some(v) = self.database_max_connections {
            config.database_max_connections = v;
        }
        if let Some(v) = self.event_retention_days {
            config.event_retention_days = v;
        }
        if let Some(v) = self.anonymous_read {
            config.auth.anonymous_read = v;
        }
        if let Some(v) = self.cinder_listen {
            config.cinder_api.listen = Some(v);
        }
        if self.cinder_noauth {
            config.cinder_api.noauth = true;
        }
        for value in &self.watch {
            config
                .watch
                .push(vigil_server::watch::WatchConfig::parse(value)?);
        }
        if let Some(v) = self.metrics_listen {
            config.metrics.listen = Some(v);
        }
        if let Some(v) = self.metrics_per_service {
            config.metrics.per_service = v;
        }
        if self.metrics_require_token {
            config.metrics.require_token = true;
        }
        if let Some(v) = self.log_format {
            config.log_format = v.into();
        }
        if let Some(v) = self.clock_offset {
            config.clock_offset = v;
        }
        config.bench_reference = self.bench_reference;
        config.validate()?;
        Ok(config)
    }
}

/// Runs the server with `config` (from [`ServerArgs::into_config`], read before logging is
/// set up, since it says how to log).
pub async fn run(config: Config) -> anyhow::Result<i32> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Readiness and the watchdog under systemd; a no-op elsewhere.
    let notifier = tokio::spawn(crate::systemd::supervise(local));
    let served = vigil_server::serve(listener, config, async {
        shutdown_signal().await;
        crate::systemd::stopping();
    })
    .await;
    notifier.abort();
    served?;
    Ok(0)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: draining requests and flushing heartbeats");
}
