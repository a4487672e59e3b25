//! The server under test: a fresh database per run, filled directly through the store, and a
//! `vigil server` child process on `127.0.0.1:0`.
//!
//! A child process rather than an in-process server, so that its CPU time and memory are its
//! own (read from `/proc/<pid>`), apart from the load generator's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use vigil_server::store::{NewService, PostgresStore};
use vigil_server::Config;

/// The agent token the bench's server takes and its heartbeats carry, as a fleet's would:
/// the figures include the token check.
pub(crate) const AGENT_TOKEN: &str = "bench-agent-token";

/// Binaries of the simulated fleet: four services per host, as on a Cinder/Nova node.
const BINARIES: [&str; 4] = [
    "cinder-volume",
    "cinder-scheduler",
    "cinder-backup",
    "nova-compute",
];

/// Services per host in the simulated fleet.
pub const PER_HOST: usize = BINARIES.len();

/// Zones of the simulated fleet.
const ZONES: usize = 3;

/// Service number `i` (0-based; its id is `i + 1` in a fresh database).
pub fn fleet_service(i: usize) -> NewService {
    let binary = BINARIES[i % PER_HOST];
    NewService {
        host: host_name(i / PER_HOST),
        binary: binary.to_string(),
        topic: Some(binary.split('-').nth(1).unwrap_or(binary).to_string()),
        zone: zone_of(i as i64 + 1).to_string(),
        report_interval: vigil_proto::DEFAULT_REPORT_INTERVAL,
        version: Some("2025.1".into()),
        service_down_time: None,
    }
}

pub fn host_name(host: usize) -> String {
    format!("node-{host:07}.example.net")
}

/// The zone of service `id`, which its heartbeats declare, as a reporter's do.
pub fn zone_of(id: i64) -> &'static str {
    ["az-1", "az-2", "az-3"][((id - 1) as usize) % ZONES]
}

/// A fresh database: a SQLite file in a temporary directory, or a new schema on the given
/// PostgreSQL server, dropped again by [`BenchDb::remove`].
pub struct BenchDb {
    pub url: String,
    /// The server's data directory (admin token; the SQLite file).
    dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl BenchDb {
    pub async fn create(postgres: Option<&str>) -> anyhow::Result<BenchDb> {
        let dir = tempfile::Builder::new()
            .prefix("vigil-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        match postgres {
            None => Ok(BenchDb {
                url: format!("sqlite://{}", dir.path().join("vigil.db").display()),
                dir,
                postgres: None,
            }),
            Some(base) => {
                let schema = format!(
                    "vigil_bench_{}_{:08x}",
                    std::process::id(),
                    rand_u32(dir.path())
                );
                let url = PostgresStore::create_schema(base, &schema)
                    .await
                    .with_context(|| format!("cannot create schema {schema}"))?;
                Ok(BenchDb {
                    url,
                    dir,
                    postgres: Some((base.to_string(), schema)),
                })
            }
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Inserts services `0..count` of the fleet, created now, and records that a server was
    /// watching until they were created: so the server started next gives every service its
    /// full `service_down_time` from its start (the restart grace) rather than counting the
    /// insert and the load against them. (Stamped when the insert ended instead, a PostgreSQL
    /// insert of 10M rows, 123 s, outlasted a 90 s `service_down_time`: the fleet was down,
    /// never beaten since its creation, before the server started, and the grace covers only
    /// services that were up.)
    pub async fn populate(&self, count: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let config = Config {
            database: Some(self.url.clone()),
            data_dir: self.data_dir(),
            database_max_connections: 2,
            ..Config::default()
        };
        let store = vigil_server::open_store(&config).await?;
        let now = Utc::now();
        let mut batch = Vec::with_capacity(100_000.min(count));
        for i in 0..count {
            batch.push(fleet_service(i));
            if batch.len() == batch.capacity() || i + 1 == count {
                store.bulk_insert_services(&batch, now).await?;
                batch.clear();
            }
        }
        store
            .set_meta(vigil_server::LAST_ALIVE, &vigil_proto::ts::format(&now))
            .await?;
        Ok(started.elapsed())
    }

    pub async fn remove(self) {
        if let Some((base, schema)) = &self.postgres {
            if let Err(err) = PostgresStore::drop_schema(base, schema).await {
                eprintln!("vigil bench: cannot drop schema {schema}: {err}");
            }
        }
    }
}

/// Enough randomness for a schema name that concurrent runs do not share.
fn rand_u32(salt: &std::path::Path) -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(salt) as u32
}

/// How the child server is run.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    pub service_down_time: f64,
    pub flush_interval: f64,
    pub bench_reference: bool,
    /// `vigil_service_*` series in `/metrics` (off: the fleet scenario reads only the server's
    /// counters, and a scrape of a million services' series would weigh on its RSS).
    pub metrics_per_service: bool,
    /// The Cinder-compatible API on a listener of its own (`--cinder-listen 127.0.0.1:0`).
    pub cinder: bool,
}

/// A `vigil server` child process; killed if dropped without [`ServerChild::stop`].
pub struct ServerChild {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    /// The Cinder-compatible API's address, when [`ServerOptions::cinder`].
    pub cinder_addr: Option<SocketAddr>,
    /// From spawning the process to its "listening" line (the services are loaded by then).
    pub listening_after: Duration,
    pub spawned_at: Instant,
}

impl ServerChild {
    pub async fn start(db: &BenchDb, options: ServerOptions) -> anyhow::Result<ServerChild> {
        let exe = std::env::current_exe().context("cannot find the vigil executable")?;
        let mut command = Command::new(exe);
        command
            .args(["server", "--listen", "127.0.0.1:0", "--database", &db.url])
            .arg("--data-dir")
            .arg(db.data_dir())
            .arg("--service-down-time")
            .arg(options.service_down_time.to_string())
            .arg("--flush-interval")
            .arg(options.flush_interval.to_string())
            .args(["--admin-token", "bench-admin-token"])
            .args(["--agent-token", AGENT_TOKEN])
            .env("VIGIL_LOG", "info")
            .env_remove("VIGIL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if options.bench_reference {
            command.arg("--bench-reference");
        }
        if !options.metrics_per_service {
            command.arg("--metrics-per-service=false");
        }
        if options.cinder {
            command.args(["--cinder-listen", "127.0.0.1:0"]);
        }
        let spawned_at = Instant::now();
        let mut child = command.spawn().context("cannot start vigil server")?;
        let pid = child.id().context("server exited at once")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let (cinder_tx, cinder_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        let tail_writer = tail.clone();
        // Reads the server's log until it exits: finds the address, keeps the last lines for an
        // error message, and keeps the pipe from filling up and blocking the server.
        // `VIGIL_BENCH_SERVER_LOG=FILE` keeps the whole log too, to find out why a run went
        // wrong.
        let mut keep = std::env::var_os("VIGIL_BENCH_SERVER_LOG").and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            let mut cinder_tx = Some(cinder_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(file) = keep.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(file, "{line}");
                }
                if let Some(addr) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|addr| addr.parse().ok())
                {
                    // The main listener is logged first, the Cinder API's after it.
                    let tx = if line.contains("cinder-compatible api listening") {
                        cinder_tx.take()
                    } else {
                        addr_tx.take()
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(addr);
                    }
                }
                let Ok(mut tail) = tail_writer.lock() else {
                    continue;
                };
                if tail.len() == 20 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(300), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill().await;
                bail!(
                    "the server did not start; its last log lines:\n{}",
                    tail.lock().map(|t| t.join("\n")).unwrap_or_default()
                );
            }
        };
        let listening_after = spawned_at.elapsed();
        let cinder_addr = if options.cinder {
            match tokio::time::timeout(Duration::from_secs(30), cinder_rx).await {
                Ok(Ok(addr)) => Some(addr),
                _ => {
                    let _ = child.kill().await;
                    bail!("the server did not log its Cinder API's address");
                }
            }
        } else {
            None
        };
        Ok(ServerChild {
            child,
            pid,
            addr,
            cinder_addr,
            listening_after,
            spawned_at,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// User plus system CPU time the server has used so far, all threads.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |n: usize| -> anyhow::Result<u64> {
            Ok(fields.get(n).context("short /proc stat")?.parse::<u64>()?)
        };
        // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
        let total = ticks(11)? + ticks(12)?;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Duration::from_secs_f64(total as f64 / per_second))
    }

    /// Resident set size now, bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .context("no VmRSS in /proc status")?;
        Ok(kib * 1024)
    }

    /// Polls `/readyz` until it answers 200; returns the time since the process was spawned.
    pub async fn wait_ready(&self, http: &reqwest::Client) -> anyhow::Result<Duration> {
        let url = format!("{}/readyz", self.url());
        loop {
            if let Ok(response) = http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(self.spawned_at.elapsed());
                }
            }
            if self.spawned_at.elapsed() > Duration::from_secs(300) {
                bail!("the server was not ready after 300 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM, so that the server drains and flushes as in production; killed after a minute.
    pub async fn stop(mut self) {
        // Our own child's pid, which is not reaped before `wait` below.
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
