//! Server configuration: defaults, the TOML file, and checks.
//!
//! Precedence (applied by the `vigil` binary): flag > `VIGIL_*` environment variable > file >
//! default. Durations are seconds, fractions allowed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything `vigil server` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the Vigil API.
    pub listen: String,
    /// `sqlite://PATH` or `postgres://...`; default: `sqlite://<data_dir>/vigil.db`.
    pub database: Option<String>,
    /// Where the embedded database and the generated admin token live.
    pub data_dir: PathBuf,
    /// A service is down when its newest heartbeat is older than this (Cinder: 60 s), unless
    /// it declares its own or a `[[service_down_time_by_binary]]` pattern matches it.
    pub service_down_time: f64,
    /// The shortest `service_down_time` a service may declare when it registers (and never
    /// less than twice its `report_interval`).
    pub service_down_time_min: f64,
    /// The longest `service_down_time` a service may declare.
    pub service_down_time_max: f64,
    /// `service_down_time` of the services whose binary matches a pattern (`*` for any text),
    /// when they declare none; the first match wins.
    pub service_down_time_by_binary: Vec<DownTimePattern>,
    /// Heartbeats are written to the database in one batch at most this often.
    pub flush_interval: f64,
    /// Zone of services that do not declare one (Cinder's `storage_availability_zone`).
    pub default_zone: String,
    /// Bearer token for admin calls; generated into `<data_dir>/admin.token` when unset.
    pub admin_token: Option<String>,
    /// Bearer token of role agent for any host; generated into `<data_dir>/agent.token` when
    /// unset, for reporters on this machine.
    pub agent_token: Option<String>,
    /// Events older than this many days are pruned in the background.
    pub event_retention_days: f64,
    /// Phi-accrual suspicion threshold (Akka and Cassandra use 8).
    pub phi_threshold: f64,
    /// Largest number of database connections the server opens.
    pub database_max_connections: u32,
    /// Simulated error of this machine's clock, seconds. For tests of clock independence only:
    /// not a key of the file (set by a hidden flag).
    #[serde(skip)]
    pub clock_offset: f64,
    /// Limits of the HTTP listeners.
    pub http: HttpConfig,
    /// PEM certificate chain of every listener (with `tls_key`); plain HTTP when unset.
    /// Reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Who may read without a token.
    pub auth: AuthConfig,
    /// Limits on writers.
    pub limits: LimitsConfig,
    /// The optional Cinder-compatible `os-services` listener.
    pub cinder_api: CinderApiConfig,
    /// OpenStack databases whose `services` table is watched, read-only (`[[watch]]` tables;
    /// `--watch KIND:URL`).
    pub watch: Vec<crate::watch::WatchConfig>,
    /// `GET /metrics` for Prometheus.
    pub metrics: MetricsConfig,
    /// When a service counts as flapping.
    pub flapping: FlappingConfig,
    /// When many services going silent together are held `unreachable`, not `down`.
    pub partition_guard: PartitionGuardConfig,
    /// How log lines are written: `text` or `json` (one object per line).
    pub log_format: LogFormat,
    /// Mounts `POST /v1/bench/reference/{id}/heartbeat` and `POST /v1/bench/bare/{id}/heartbeat`,
    /// the baselines `vigil bench` compares heartbeats with. Set only by the hidden `--bench-reference` flag, never from a file.
    #[serde(skip)]
    pub bench_reference: bool,
}

/// `[[service_down_time_by_binary]]`: a `service_down_time` for the services of some binaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownTimePattern {
    /// A binary name, `*` standing for any text (`cinder-*`).
    pub binary: String,
    pub service_down_time: f64,
}

/// `[flapping]`: a service with at least `transitions` up/down transitions within `window`
/// seconds is flagged `flapping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlappingConfig {
    /// 0 turns flapping detection off.
    pub transitions: usize,
    pub window: f64,
    /// Hysteresis: after a `down`, this many on-time heartbeats in a row bring a service back
    /// `up` (1: the first one, as Cinder; at most 100).
    pub up_after_beats: u32,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        FlappingConfig {
            transitions: 4,
            window: 600.0,
            up_after_beats: 1,
        }
    }
}

/// `[partition_guard]`: when, as a deadline passes, more than `share` of the services (and at
/// least `min_services`) are silent together, the ones that miss their deadline are held
/// `unreachable` (one `mass_failure` event) rather than declared `down`, until they beat again,
/// an admin confirms them down, or `hold` seconds pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartitionGuardConfig {
    pub enabled: bool,
    /// A share of the services, above 0 and below 1.
    pub share: f64,
    pub min_services: usize,
    /// Seconds a service stays `unreachable` before it counts as `down` after all.
    pub hold: f64,
}

impl Default for PartitionGuardConfig {
    fn default() -> Self {
        PartitionGuardConfig {
            enabled: true,
            share: 0.5,
            min_services: 10,
            hold: 600.0,
        }
    }
}

/// `[http]`: limits that keep the API reachable when clients hold connections open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Most open connections per listener; unset: below the open-file limit (which the server
    /// raises to its hard limit at start-up), an eighth of it kept for everything else.
    pub max_connections: Option<usize>,
    /// A client must send a whole request head within this many seconds.
    pub header_read_timeout: f64,
    /// A connection with no request in progress for this many seconds is closed.
    pub idle_timeout: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: None,
            header_read_timeout: 10.0,
            idle_timeout: 120.0,
        }
    }
}

/// `[auth]`: what needs a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Reads (GETs of both APIs, apart from `/healthz` and `/readyz`) need no token. When
    /// false, every read needs a reader or admin token. Admin calls always need an admin
    /// token.
    pub anonymous_read: bool,
    /// Registration and heartbeats need no token. For trusted networks and `vigil demo`
    /// only: anyone who reaches the port can then keep a dead service looking alive.
    pub open_registration: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous_read: true,
            open_registration: false,
        }
    }
}

/// `[limits]`: how fast one caller (a token, or an address without one) may register services
/// and make admin changes, and how many services the server keeps. Heartbeats are never
/// rate limited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Registrations and admin writes per second per caller, after the burst; 0: no limit.
    pub writes_per_second: f64,
    /// Writes a caller may make at once before the rate applies (a fleet restarting).
    pub write_burst: u32,
    /// Most services the server keeps (watched ones included); a new registration past it is
    /// refused with 409 `too_many_services`.
    pub max_services: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            writes_per_second: 100.0,
            write_burst: 2000,
            max_services: 2_000_000,
        }
    }
}

/// `[cinder_api]`: a second listener speaking the Block Storage API's `os-services`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CinderApiConfig {
    /// For example `127.0.0.1:8776`; off when unset.
    pub listen: Option<String>,
    /// Let every call through without a token. For trusted networks only.
    pub noauth: bool,
}

/// `[metrics]`: the Prometheus endpoint, `GET /metrics` on the main listener and optionally on
/// one of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A listener serving `/metrics` only, for example `127.0.0.1:9799`; off when unset.
    pub listen: Option<String>,
    /// Ask for the admin token on `/metrics` (both listeners).
    pub require_token: bool,
    /// One series per service (`vigil_service_*`); off for very large fleets.
    pub per_service: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            require_token: false,
            per_service: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, fields as `key=value`.
    #[default]
    Text,
    /// For log collectors: one JSON object per line (timestamp, level, target, message, fields
    /// and the spans it happened in).
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8799".into(),
            database: None,
            data_dir: PathBuf::from("vigil-data"),
            service_down_time: 60.0,
            service_down_time_min: 1.0,
            service_down_time_max: 3600.0,
            service_down_time_by_binary: Vec::new(),
            flush_interval: 1.0,
            default_zone: "nova".into(),
            admin_token: None,
            agent_token: None,
            tls_cert: None,
            tls_key: None,
            event_retention_days: 30.0,
            phi_threshold: 8.0,
            database_max_connections: 8,
            clock_offset: 0.0,
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            cinder_api: CinderApiConfig::default(),
            watch: Vec::new(),
            metrics: MetricsConfig::default(),
            flapping: FlappingConfig::default(),
            partition_guard: PartitionGuardConfig::default(),
            log_format: LogFormat::Text,
            bench_reference: false,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads a TOML file; absent keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("vigil.db").display()),
        }
    }

    /// Rejects values that cannot work. Settings that work but hurt (a `service_down_time` too
    /// close to reporters' intervals) are for the doctor, not errors.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(ConfigError(format!(
                    "{name} must be a positive number of seconds, not {value}"
                )))
            }
        };
        if !(self.limits.writes_per_second.is_finite()
            && (0.0..=1_000_000.0).contains(&self.limits.writes_per_second))
        {
            return Err(ConfigError(format!(
                "limits.writes_per_second must be 0 (no limit) or a number up to 1000000, not {}",
                self.limits.writes_per_second
            )));
        }
        if let (Some(admin), Some(agent)) = (&self.admin_token, &self.agent_token) {
            if !admin.is_empty() && admin == agent {
                return Err(ConfigError(
                    "admin_token and agent_token must differ: an agent would be an admin".into(),
                ));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "tls_cert and tls_key go together: give both, or neither for plain HTTP".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for watch in &self.watch {
            watch.validate().map_err(|e| ConfigError(e.to_string()))?;
            if !names.insert(watch.name()) {
                return Err(ConfigError(format!(
                    "two watches are named {:?}; give each its own name",
                    watch.name()
                )));
            }
        }
        positive("service_down_time", self.service_down_time)?;
        positive("flush_interval", self.flush_interval)?;
        positive("event_retention_days", self.event_retention_days)?;
        positive("phi_threshold", self.phi_threshold)?;
        // Upper bounds keep every time computed from these far inside chrono's range.
        let within = |name: &str, value: f64, low: f64, high: f64| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError(format!(
                    "{name} must be between {low} and {high}, not {value}"
                )))
            }
        };
        within("service_down_time", self.service_down_time, 0.01, 1e6)?;
        within(
            "service_down_time_min",
            self.service_down_time_min,
            0.0,
            1e6,
        )?;
        within(
            "service_down_time_max",
            self.service_down_time_max,
            self.service_down_time_min.max(0.01),
            1e6,
        )?;
        for pattern in &self.service_down_time_by_binary {
            if pattern.binary.is_empty() {
                return Err(ConfigError(
                    "service_down_time_by_binary: binary must not be empty".into(),
                ));
            }
            within(
                &format!("service_down_time_by_binary {:?}", pattern.binary),
                pattern.service_down_time,
                0.01,
                1e6,
            )?;
        }
        within("flush_interval", self.flush_interval, 0.01, 60.0)?;
        within("event_retention_days", self.event_retention_days, 1e-9, 1e5)?;
        within("phi_threshold", self.phi_threshold, 0.1, 100.0)?;
        within("clock_offset", self.clock_offset, -1e6, 1e6)?;
        within(
            "http.header_read_timeout",
            self.http.header_read_timeout,
            0.01,
            3600.0,
        )?;
        within("http.idle_timeout", self.http.idle_timeout, 0.01, 86_400.0)?;
        within("flapping.window", self.flapping.window, 0.01, 1e6)?;
        if !(1..=100).contains(&self.flapping.up_after_beats) {
            return Err(ConfigError(format!(
                "flapping.up_after_beats must be between 1 and 100, not {}",
                self.flapping.up_after_beats
            )));
        }
        within("partition_guard.hold", self.partition_guard.hold, 0.01, 1e7)?;
        if !(self.partition_guard.share > 0.0 && self.partition_guard.share < 1.0) {
            return Err(ConfigError(format!(
                "partition_guard.share must be above 0 and below 1 (more than this share is silent), not {}",
                self.partition_guard.share
            )));
        }
        if self.partition_guard.min_services == 0 {
            return Err(ConfigError(
                "partition_guard.min_services must be at least 1".into(),
            ));
        }
        if self.http.max_connections == Some(0) {
            return Err(ConfigError(
                "http.max_connections must be at least 1".into(),
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError(
                "database_max_connections must be at least 1".into(),
            ));
        }
        if self.default_zone.is_empty() {
            return Err(ConfigError("default_zone must not be empty".into()));
        }
        Ok(())
    }

    /// The commented default file that `vigil config default` prints.
    pub fn default_toml() -> &'static str {
        DEFAULT_TOML
    }
}

const DEFAULT_TOML: &str = r#"# Vigil server configuration. Every key is optional; shown are the defaults.
# Precedence: command-line flag > VIGIL_* environment variable > this file > default.
# Durations are in seconds; fractions are allowed.

# Address of the Vigil HTTP API (--listen, VIGIL_LISTEN).
listen = "127.0.0.1:8799"

# Database URL (--database, VIGIL_DATABASE): "sqlite://PATH" or "postgres://USER@HOST/DB".
# Unset: the embedded SQLite database at <data_dir>/vigil.db, created on first start.
# database = "postgres://vigil@127.0.0.1/vigil"

# Where the embedded database and the generated admin token live (--data-dir, VIGIL_DATA_DIR).
data_dir = "vigil-data"

# A service is down when its newest heartbeat, as received by this server's clock, is older
# than this (--service-down-time, VIGIL_SERVICE_DOWN_TIME). Cinder's default is 60.
service_down_time = 60.0

# Bounds of the service_down_time a service may declare when it registers (it must also be at
# least twice its report_interval).
service_down_time_min = 1.0
service_down_time_max = 3600.0

# Heartbeats are applied in memory and written to the database in one batch at most this
# often, and once more on shutdown (--flush-interval, VIGIL_FLUSH_INTERVAL).
flush_interval = 1.0

# Availability zone of services that do not declare one (--default-zone, VIGIL_DEFAULT_ZONE).
default_zone = "nova"

# Bearer token for admin calls (--admin-token, VIGIL_ADMIN_TOKEN). Unset: one is generated
# on first start into <data_dir>/admin.token (mode 0600), where the CLI finds it.
# admin_token = "change-me"

# TLS on every listener (API, Cinder-compatible API, metrics): a PEM certificate chain and
# its key (--tls-cert, --tls-key; VIGIL_TLS_CERT, VIGIL_TLS_KEY). Reloaded on SIGHUP without
# dropping connections. Plain HTTP when unset (a warning at start-up off loopback).
# tls_cert = "/etc/vigil/tls/cert.pem"
# tls_key = "/etc/vigil/tls/key.pem"

# Bearer token of role agent for any host, for reporters on this machine; generated on first
# start into <data_dir>/agent.token (mode 0600). Share it only with hosts you trust with
# every host's services; give the others tokens bound to their hosts.
# agent_token = "change-me-too"

# Events (transitions and admin changes) older than this many days are pruned.
event_retention_days = 30.0

# Phi-accrual suspicion threshold for the early-warning `suspect` flag.
phi_threshold = 8.0

# Most database connections the server opens.
database_max_connections = 8

# How log lines are written (--log-format, VIGIL_LOG_FORMAT): "text", or "json" for one JSON
# object per line. Which lines: the VIGIL_LOG (or RUST_LOG) variable, a tracing filter.
log_format = "text"

# Limits of the HTTP listeners: a client that holds connections open cannot lock out the
# services heartbeating.
[http]
# Most open connections per listener. Unset: below the open-file limit (raised to its hard
# limit at start-up), an eighth of it kept for the database and everything else. At the cap,
# the connection idle the longest is closed to make room.
# max_connections = 10000
# A client must send a whole request head within this many seconds.
header_read_timeout = 10.0
# A connection with no request in progress for this long is closed (reporters reconnect).
idle_timeout = 120.0

# What needs a token. Roles: admin (everything), agent (register and heartbeat on the hosts
# its patterns match), reader (every read). Tokens: `vigil token create|list|revoke`.
[auth]
# Reads need no token (--anonymous-read, VIGIL_ANONYMOUS_READ). When false, every read of
# both APIs needs a reader or admin token. /healthz, /readyz and /openapi.json are always open.
anonymous_read = true
# Registration and heartbeats need no token (--open-registration). For trusted networks and
# demos only: anyone who reaches the port could keep a dead service looking alive. When
# false they need an agent token (the server writes one for any host to
# <data_dir>/agent.token) or an admin token.
open_registration = false

# Limits on writers. One caller is a token (or an address, without one).
[limits]
# Registrations and admin writes per second per caller once its burst is spent (0: no limit);
# more answer 429 with Retry-After. Heartbeats are never rate limited.
writes_per_second = 100.0
# Writes a caller may make at once: a fleet whose services all register again after a restart.
write_burst = 2000
# Most services kept (watched ones included); more registrations answer 409 too_many_services.
max_services = 2000000

# The Cinder-compatible os-services API (Block Storage API v3). Off unless `listen` is set.
[cinder_api]
# listen = "127.0.0.1:8776"
# Let every call through without a token: for trusted networks only.
noauth = false

# Prometheus metrics: GET /metrics on the main listener, and on `listen` when set.
[metrics]
# A listener of its own serving /metrics only (--metrics-listen, VIGIL_METRICS_LISTEN).
# listen = "127.0.0.1:9799"
# Ask for the admin token (Authorization: Bearer) on /metrics.
require_token = false
# One series per service and metric (vigil_service_*): on unless the fleet is very large
# (--metrics-per-service, VIGIL_METRICS_PER_SERVICE).
per_service = true

# A service with at least `transitions` up/down transitions within `window` seconds is flagged
# `flapping` (events `flapping` and `flapping_ended`). transitions = 0 turns it off.
[flapping]
transitions = 4
window = 600.0
# Hysteresis: after a `down`, this many on-time heartbeats in a row (each within half a
# report_interval of its time) bring a service back `up`; 1 is Cinder's behaviour.
up_after_beats = 1

# The partition guard: when, as a deadline passes, more than `share` of the services (and at
# least `min_services`) have been silent for half their service_down_time, Vigil may be the one
# cut off. The services that miss their deadline are held `unreachable`, not `down` (one
# `mass_failure` event), until they beat again, an admin runs `vigil confirm-down`, or `hold`
# seconds pass. enabled = false declares them down as usual.
[partition_guard]
enabled = true
share = 0.5
min_services = 10
hold = 600.0

# service_down_time of the services of some binaries, when they declare none: `*` stands for
# any text; the first match wins.
# [[service_down_time_by_binary]]
# binary = "cinder-backup*"
# service_down_time = 300.0

# Watch an OpenStack deployment's own services table, read-only (--watch KIND:URL,
# VIGIL_WATCH; repeat the table for several databases: every Nova cell, several regions).
# Its rows are listed, judged, streamed and diagnosed like Vigil's own services; Vigil never
# writes to that database.
# [[watch]]
# kind = "cinder"                      # or "nova"
# url = "mysql://vigil:secret@db1/cinder"   # mysql:// (MySQL, MariaDB), postgres://, sqlite://
# name = "cinder/cinder"               # the services' `source`; default: KIND/DATABASE
# poll_interval = 2.0                  # seconds between polls
# service_down_time = 60.0             # what the deployment runs with, for its own verdict
# report_interval = 10.0               # what its daemons run with; for the doctor
# conf = "/etc/cinder/cinder.conf"     # or read both from the daemons' file ([DEFAULT])
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default() {
        let parsed = Config::from_toml(Config::default_toml()).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml("servce_down_time = 5").unwrap_err();
        assert!(err.to_string().contains("servce_down_time"), "{err}");
    }

    #[test]
    fn test_knobs_are_no_keys_of_the_file() {
        let err = Config::from_toml("servce_down_time = 5").unwrap_err();
        assert!(!err.to_string().contains("clock_offset"), "{err}");
        assert!(Config::from_toml("clock_offset = 5").is_err());
        assert!(!Config::default_toml().contains("clock_offset"));
    }

    #[test]
    fn the_commented_watch_table_parses() {
        let text: String = Config::default_toml()
            .lines()
            .skip_while(|line| !line.starts_with("# [[watch]]"))
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .map(|line| line.split("  #").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml(&text).unwrap();
        assert_eq!(config.watch.len(), 1);
        config.validate().unwrap();
        assert_eq!(config.watch[0].name(), "cinder/cinder");
    }

    #[test]
    fn the_commented_down_time_table_parses_and_bad_ones_are_refused() {
        let text: String = Config::default_toml()
            .lines()
            .skip_while(|line| !line.starts_with("# [[service_down_time_by_binary]]"))
            .take(3)
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n");
        let config = Config::from_toml(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.service_down_time_by_binary[0].service_down_time,
            300.0
        );
        for bad in [
            "service_down_time_max = 0.5",
            "[[service_down_time_by_binary]]\nbinary = \"\"\nservice_down_time = 5",
            "[[service_down_time_by_binary]]\nbinary = \"x\"\nservice_down_time = -1",
        ] {
            assert!(Config::from_toml(bad).unwrap().validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn two_watches_of_one_name_are_refused() {
        let watch = crate::watch::WatchConfig::parse("cinder:sqlite:///tmp/cinder.db").unwrap();
        let config = Config {
            watch: vec![watch.clone(), watch],
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("two watches are named"), "{err}");
    }

    #[test]
    fn nonsense_durations_are_rejected() {
        let config = Config {
            service_down_time: -1.0,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
