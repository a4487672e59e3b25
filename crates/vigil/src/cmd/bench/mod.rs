//! `vigil bench`: sizes a deployment, in the spirit of `redis-benchmark`.
//!
//! Starts a real `vigil server` as a child process on `127.0.0.1:0` with a fresh database,
//! drives it over real HTTP from this process (keep-alive connections, every phase bounded in
//! time), and prints one Markdown table with each measure beside its target.
//!
//! Scenarios:
//! - `ingest`: heartbeats as fast as C connections can send them, against Vigil, against a
//!   reference endpoint that parses the same request but leaves the registry out, and against
//!   a bare axum endpoint outside Vigil's middleware.
//! - `batch`: `POST /v1/heartbeats` with 1, 10, 100, 1,000 beats per request: beats/s and the
//!   server's CPU per beat.
//! - `protocol`: HTTP/1.1 against HTTP/2 without TLS (h2c), single beats and batches of 100.
//! - `list`: the full and the host-filtered `GET /v1/services` at several sizes.
//! - `cinder`: the full `GET /v3/os-services` of the Cinder-compatible API.
//! - `detection`: a fleet heartbeating on schedule, of which some stop; delay from each
//!   deadline to its `down` event on the SSE stream.
//! - `memory`: the server's RSS with the fleet registered and heartbeating.
//! - `restart`: time from process start to `/readyz` = 200 with the fleet in the database.
//! - `watch`: one poll of a large Cinder `services` table on MariaDB, as a watch does it (not
//!   among the defaults: it needs MariaDB).
//!
//! # Layout
//! - `child`: the database and the server process.
//! - `http`: the load generator's client and latency histogram.
//! - `ingest` (ingest, batch), `protocol`, `list`, `cinder`, `fleet` (detection, memory, restart),
//!   `watch`: the scenarios.

use std::fmt::Write as _;
use std::time::Duration;

mod child;
mod cinder;
mod fleet;
mod http;
mod ingest;
mod list;
mod protocol;
mod watch;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    pub scenario: Vec<Scenario>,
    /// PostgreSQL server to run on, e.g. postgres://postgres@127.0.0.1/test; each run creates
    /// and drops its own schema there [default: a temporary SQLite file].
    #[arg(long)]
    pub database: Option<String>,
    /// Ingest: services registered.
    #[arg(long, default_value_t = 100_000)]
    pub services: usize,
    /// Ingest: keep-alive connections sending heartbeats.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Ingest: seconds of load against each endpoint (after one second of warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Batch: beats per request of `POST /v1/heartbeats`, comma-separated (each size runs for
    /// `--duration`).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 100, 1000])]
    pub batch_sizes: Vec<usize>,
    /// List: numbers of services, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
    pub list_sizes: Vec<usize>,
    /// List: most full lists per size (fewer when a size's time budget runs out).
    #[arg(long, default_value_t = 20)]
    pub list_runs: usize,
    /// List: host-filtered lists per size.
    #[arg(long, default_value_t = 2000)]
    pub host_runs: usize,
    /// Cinder: services listed by `GET /v3/os-services`.
    #[arg(long, default_value_t = 100_000)]
    pub cinder_services: usize,
    /// Cinder: most lists timed (fewer when the time budget runs out).
    #[arg(long, default_value_t = 20)]
    pub cinder_runs: usize,
    /// Detection, memory, restart: services in the fleet.
    #[arg(long, default_value_t = 1_000_000)]
    pub fleet: usize,
    /// Detection: seconds between the fleet's heartbeats (each service beats once per interval).
    #[arg(long, default_value_t = 10.0)]
    pub report_interval: f64,
    /// Detection, memory: beats per request of the fleet (1: single heartbeats; more: `POST
    /// /v1/heartbeats` carrying that many services' beats, as a host agent would).
    #[arg(long, default_value_t = 1)]
    pub fleet_batch: usize,
    /// Detection: the server's service_down_time, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub service_down_time: f64,
    /// Detection: services that stop heartbeating.
    #[arg(long, default_value_t = 1000)]
    pub victims: usize,
    /// The server's flush_interval, seconds (heartbeats written to the database in batches).
    #[arg(long, default_value_t = 1.0)]
    pub flush_interval: f64,
    /// Watch: the MariaDB or MySQL server to create the throw-away Cinder database on.
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306/test")]
    pub watch_database: String,
    /// Watch: rows of the Cinder services table.
    #[arg(long, default_value_t = 100_000)]
    pub watch_rows: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Ingest,
    Batch,
    Protocol,
    List,
    Cinder,
    Detection,
    Memory,
    Restart,
    Watch,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Ingest,
        Scenario::Batch,
        Scenario::Protocol,
        Scenario::List,
        Scenario::Cinder,
        Scenario::Detection,
        Scenario::Memory,
        Scenario::Restart,
    ];
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Scenario::Ingest => "ingest",
            Scenario::Batch => "batch",
            Scenario::Protocol => "protocol",
            Scenario::List => "list",
            Scenario::Cinder => "cinder",
            Scenario::Detection => "detection",
            Scenario::Memory => "memory",
            Scenario::Restart => "restart",
            Scenario::Watch => "watch",
        };
        f.write_str(name)
    }
}

/// One line of the table.
pub struct Row {
    scenario: String,
    measure: String,
    result: String,
    target: String,
    /// `None`: information without a target.
    met: Option<bool>,
}

impl Row {
    fn info(scenario: impl Into<String>, measure: impl Into<String>, result: String) -> Row {
        Row {
            scenario: scenario.into(),
            measure: measure.into(),
            result,
            target: String::new(),
            met: None,
        }
    }

    fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

/// `1.23 ms`, `456 us`, `2.10 s`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} us", secs * 1e6)
    }
}

pub fn nanos(n: u64) -> String {
    human(Duration::from_nanos(n))
}

/// `1,000,000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(rows: &[Row]) -> String {
    let mut out =
        String::from("| scenario | measure | result | target | met |\n|---|---|---|---|---|\n");
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.scenario, row.measure, row.result, row.target, met
        );
    }
    out
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {cpu}")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let has = |s: Scenario| args.scenario.contains(&s);
    let database = match &args.database {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Some(url.as_str())
        }
        Some(url) => anyhow::bail!("--database must be a postgres:// URL, not {url:?}"),
        None => None,
    };
    eprintln!(
        "vigil bench: {} on {}; server and load generator share this machine",
        args.scenario
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    let mut rows = Vec::new();
    if has(Scenario::Ingest) || has(Scenario::Batch) || has(Scenario::Protocol) {
        rows.extend(ingest::run(&args, database).await?);
    }
    if has(Scenario::List) {
        rows.extend(list::run(&args, database).await?);
    }
    if has(Scenario::Cinder) {
        rows.extend(cinder::run(&args, database).await?);
    }
    if has(Scenario::Detection) || has(Scenario::Memory) || has(Scenario::Restart) {
        rows.extend(fleet::run(&args, database).await?);
    }
    if has(Scenario::Watch) {
        rows.extend(watch::run(&args).await?);
    }
    println!(
        "vigil bench, {} database, {}\n",
        if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        machine()
    );
    print!("{}", table(&rows));
    Ok(0)
}
