//! The real OpenStack control plane as a test fixture, on loopback.
//!
//! One Cinder control plane per database engine per test-binary run, shared by the tests
//! (each uses its own hosts): a fresh database migrated by the real `cinder-manage db sync`,
//! real `cinder-scheduler` daemons with their own `[DEFAULT] host`, one of them under
//! `faketime '+75 seconds'`, and the real `cinder-api` with `auth_strategy = noauth` on a free
//! port of 127.0.0.1, driven by the real `cinder` client. Cinder's database is MariaDB
//! (`mysql+pymysql://`) or PostgreSQL (`postgresql+psycopg2://`); RabbitMQ carries the RPC, in
//! a virtual host of the plane's own so that concurrent runs never share a queue.
//!
//! What really runs here, cinder 29.0.0 on Python 3.11 (all installed by `scripts/test`):
//! - `cinder-api` runs under its own console script (eventlet's WSGI server, one worker with
//!   `osapi_volume_workers = 1`); no `uwsgi` or `cinder-wsgi` is needed. It must be told
//!   where `api-paste.ini` is (`api_paste_config`): the wheel installs it in
//!   `.venv/etc/cinder/`, not where cinder looks by default (it fails with "Could not find
//!   config at api-paste.ini").
//! - `cinder-manage db sync` takes 10-20 s (alembic, about 100 revisions); it is the largest
//!   part of a plane's start.
//! - eventlet prints a deprecation warning on every start; harmless.
//! - `faketime` forks: the daemon is its child. So every daemon runs in a process group of its
//!   own, and killing one kills its group.
//! - the API of cinder 29 computes `state` in `cinder/api/v3/services.py` (there is no
//!   `service_is_up` in `cinder/utils.py` any more) and its models are in `cinder/db/models.py`
//!   (not `cinder/db/sqlalchemy/`).
//!
//! Nova: the `nova` 34.0.0 package installs here (21 packages on top of cinder's, about two
//! minutes), so its `services` table is created from Nova's own model
//! (`nova.db.main.models.Service.__table__`) by a three-line Python script; the tests
//! heartbeat it the way `nova.servicegroup.drivers.db` and `nova.db.main.api.service_update`
//! do. No Nova daemon runs: nova-compute reports through nova-conductor, which would need the
//! whole Nova control plane.
//!
//! Clean-up: the test binary exits without running destructors, so one guard process per run
//! (`sh`, in its own session) waits for the test process to end, then kills the daemons'
//! process groups, drops the databases and virtual hosts and removes the temporary
//! directories.
//!
//! Under CI (`CI` set) anything missing (the venv, faketime, MariaDB, RabbitMQ) fails the
//! test; elsewhere the test prints a notice and skips.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::sync::OnceCell;

use crate::harness::{under_ci, POSTGRES_URL};

/// Cinder's `report_interval` on the plane.
pub const REPORT_INTERVAL: f64 = 2.0;
/// Cinder's `service_down_time` on the plane.
pub const SERVICE_DOWN_TIME: f64 = 10.0;
/// The clock offset of [`SKEWED_HOST`]'s daemon.
pub const SKEW_S: f64 = 75.0;
/// A scheduler with a true clock, the one tests disable through the API.
pub const HOST_A: &str = "sched-a";
/// A scheduler under `faketime '+75 seconds'`.
pub const SKEWED_HOST: &str = "sched-b";
/// A scheduler the kill test kills.
pub const HOST_C: &str = "sched-c";
/// MariaDB as the suite reaches it.
pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Which database Cinder runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    MariaDb,
    Postgres,
}

/// A running Cinder control plane.
#[derive(Debug)]
pub struct Plane {
    pub engine: Engine,
    /// Cinder's database.
    pub database: String,
    /// The database as sqlx (and so a watch) names it.
    pub url: String,
    /// Port of `cinder-api` on 127.0.0.1.
    pub api_port: u16,
    /// The plane's temporary directory: configuration and logs.
    pub dir: PathBuf,
    /// How long the plane took to start: database, `db sync`, daemons, until every
    /// scheduler's first `report_state` and `cinder-api` listening.
    pub started_in: Duration,
    /// Of that, `cinder-manage db sync`.
    pub db_sync_took: Duration,
    /// Process groups of the daemons, by host (`cinder-api` under `api`).
    daemons: Mutex<HashMap<String, i32>>,
}

static MARIADB_PLANE: OnceCell<Result<Arc<Plane>, String>> = OnceCell::const_new();
static POSTGRES_PLANE: OnceCell<Result<Arc<Plane>, String>> = OnceCell::const_new();

/// The Cinder plane on MariaDB, started on first use; `None` (skipped, outside CI only) when a
/// part is missing.
pub async fn cinder_on_mariadb() -> Option<Arc<Plane>> {
    plane(&MARIADB_PLANE, Engine::MariaDb).await
}

/// The Cinder plane on PostgreSQL, started on first use.
pub async fn cinder_on_postgres() -> Option<Arc<Plane>> {
    plane(&POSTGRES_PLANE, Engine::Postgres).await
}

async fn plane(
    cell: &'static OnceCell<Result<Arc<Plane>, String>>,
    engine: Engine,
) -> Option<Arc<Plane>> {
    start_both_planes();
    match init(cell, engine).await {
        Ok(plane) => Some(plane.clone()),
        Err(why) => missing(why),
    }
}

async fn init(
    cell: &'static OnceCell<Result<Arc<Plane>, String>>,
    engine: Engine,
) -> &'static Result<Arc<Plane>, String> {
    cell.get_or_init(|| async move {
        tokio::task::spawn_blocking(move || start_plane(engine).map(Arc::new))
            .await
            .unwrap_or_else(|e| Err(format!("plane start panicked: {e}")))
    })
    .await
}

/// The first test that asks for a plane starts both, each on a thread of its own, so that
/// their start-ups (mostly Python importing Cinder and `db sync`) overlap instead of
/// following each other when the test threads take the tests in turn.
fn start_both_planes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (cell, engine) in [
            (&MARIADB_PLANE, Engine::MariaDb),
            (&POSTGRES_PLANE, Engine::Postgres),
        ] {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(init(cell, engine));
            });
        }
    });
}

/// Fails under CI, else prints a notice; `None` either way the test does not go on.
pub fn missing<T>(why: &str) -> Option<T> {
    assert!(
        !under_ci(),
        "the OpenStack control plane is required under CI: {why}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "notice: skipping an OpenStack test: {why}"
    );
    None
}

/// The project's venv (`scripts/test` fills it).
pub fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv")
}

fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what} not ready after {limit:?}"))
}

/// MariaDB on 3306 and RabbitMQ on 5672, started when they are not running.
fn ensure_services(engine: Engine) -> Result<(), String> {
    if engine == Engine::MariaDb && !listening(3306) {
        let _ = Command::new("start-stop-daemon")
            .args([
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ])
            .status();
        wait_for("MariaDB on 127.0.0.1:3306", Duration::from_secs(30), || {
            listening(3306)
        })?;
    }
    if !listening(5672) {
        let _ = Command::new("rabbitmq-server")
            .arg("-detached")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        wait_for(
            "RabbitMQ on 127.0.0.1:5672",
            Duration::from_secs(60),
            || listening(5672),
        )?;
    }
    Ok(())
}

/// Runs a command to its end; its output in the error.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A command without the developer's OpenStack settings.
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let upper = name.to_string_lossy().to_ascii_uppercase();
        if upper.starts_with("OS_") || upper.starts_with("CINDER_") || upper.starts_with("FAKETIME")
        {
            command.env_remove(&name);
        }
    }
    command.env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// A name nobody else uses: this process, this moment, a random part.
pub fn unique(prefix: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{prefix}_{now}_{}_{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// A free port of 127.0.0.1 (free when asked; the daemon binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The guard's files: process groups to kill and shell lines to run once the test process
/// ended.
struct Guard {
    pgids: PathBuf,
    cleanup: PathBuf,
}

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let dir = std::env::temp_dir().join(unique("vigil-os-guard"));
        std::fs::create_dir_all(&dir).unwrap();
        let pgids = dir.join("pgids");
        let cleanup = dir.join("cleanup");
        std::fs::write(&pgids, "").unwrap();
        std::fs::write(&cleanup, "").unwrap();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done\n\
             for g in $(cat {pgids}); do kill -KILL -$g 2>/dev/null; done\n\
             sleep 1\n\
             sh {cleanup} >/dev/null 2>&1\n\
             rm -rf {dir}\n",
            pid = std::process::id(),
            pgids = pgids.display(),
            cleanup = cleanup.display(),
            dir = dir.display(),
        );
        use std::os::unix::process::CommandExt;
        let guard = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the clean-up guard");
        // It outlives this process on purpose.
        std::mem::forget(guard);
        Guard { pgids, cleanup }
    })
}

fn guard_append(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(file, "{line}").unwrap();
}

/// Registers a shell line to run when the test process has ended (dropping a database).
pub fn at_exit(line: &str) {
    guard_append(&guard().cleanup, line);
}

/// Starts `command` in a process group of its own, known to the guard; returns the group.
fn spawn_daemon(mut command: Command, log: &Path) -> Result<i32, String> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    let pgid = child.id() as i32;
    guard_append(&guard().pgids, &pgid.to_string());
    // The child is reaped by nobody until the test process ends; a zombie of a killed daemon
    // costs nothing.
    std::mem::forget(child);
    Ok(pgid)
}

fn start_plane(engine: Engine) -> Result<Plane, String> {
    let started = Instant::now();
    for tool in [
        "cinder-manage",
        "cinder-scheduler",
        "cinder-api",
        "cinder",
        "python",
    ] {
        if !venv_bin(tool).exists() {
            return Err(format!(
                "{} is missing; run scripts/test, which installs it",
                venv_bin(tool).display()
            ));
        }
    }
    if !Path::new("/usr/bin/faketime").exists() {
        return Err(
            "faketime is missing (apt-get install -y faketime; scripts/test does it)".into(),
        );
    }
    ensure_services(engine)?;
    let tag = unique("vigil_os");
    let dir = std::env::temp_dir().join(&tag);
    for sub in ["log", "state", "lock"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    at_exit(&format!("rm -rf {}", dir.display()));

    // Cinder's database, empty.
    let (connection, url) = match engine {
        Engine::MariaDb => {
            create_database_mariadb(&tag)?;
            (
                format!("mysql+pymysql://root@127.0.0.1:3306/{tag}"),
                format!("mysql://root@127.0.0.1:3306/{tag}"),
            )
        }
        Engine::Postgres => {
            create_database_postgres(&tag)?;
            (
                format!("postgresql+psycopg2://postgres@127.0.0.1:5432/{tag}"),
                format!("postgres://postgres@127.0.0.1:5432/{tag}"),
            )
        }
    };

    // RabbitMQ: a virtual host of the plane's own.
    run(
        Command::new("rabbitmqctl").args(["-q", "add_vhost", &tag]),
        "rabbitmqctl add_vhost",
    )?;
    at_exit(&format!("rabbitmqctl -q delete_vhost {tag}"));
    run(
        Command::new("rabbitmqctl").args([
            "-q",
            "set_permissions",
            "-p",
            &tag,
            "guest",
            ".*",
            ".*",
            ".*",
        ]),
        "rabbitmqctl set_permissions",
    )?;

    let api_port = free_port();
    let conf = dir.join("cinder.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\n\
             transport_url = rabbit://guest:guest@127.0.0.1:5672/{tag}\n\
             auth_strategy = noauth\n\
             report_interval = {ri}\n\
             service_down_time = {sdt}\n\
             scheduler_driver_init_wait_time = 1\n\
             state_path = {dir}/state\n\
             log_dir = {dir}/log\n\
             api_paste_config = {paste}\n\
             osapi_volume_listen = 127.0.0.1\n\
             osapi_volume_listen_port = {api_port}\n\
             osapi_volume_workers = 1\n\
             [database]\n\
             connection = {connection}\n\
             [oslo_concurrency]\n\
             lock_path = {dir}/lock\n",
            ri = REPORT_INTERVAL as u32,
            sdt = SERVICE_DOWN_TIME as u32,
            dir = dir.display(),
            paste = venv().join("etc/cinder/api-paste.ini").display(),
        ),
    )
    .map_err(|e| e.to_string())?;

    let sync_start = Instant::now();
    run(
        clean_command(venv_bin("cinder-manage"))
            .arg("--config-file")
            .arg(&conf)
            .args(["db", "sync"]),
        "cinder-manage db sync",
    )?;
    let db_sync_took = sync_start.elapsed();

    let mut daemons = HashMap::new();
    for host in [HOST_A, SKEWED_HOST, HOST_C] {
        let host_conf = dir.join(format!("{host}.conf"));
        std::fs::write(
            &host_conf,
            format!("[DEFAULT]\nhost = {host}\nlog_file = {host}.log\n"),
        )
        .map_err(|e| e.to_string())?;
        let mut command = if host == SKEWED_HOST {
            let mut c = clean_command("faketime");
            c.arg(format!("+{} seconds", SKEW_S as u32))
                .arg(venv_bin("cinder-scheduler"));
            c
        } else {
            clean_command(venv_bin("cinder-scheduler"))
        };
        command
            .arg("--config-file")
            .arg(&conf)
            .arg("--config-file")
            .arg(&host_conf);
        let pgid = spawn_daemon(command, &dir.join(format!("{host}.out")))?;
        daemons.insert(host.to_owned(), pgid);
    }
    let api_conf = dir.join("api.conf");
    std::fs::write(&api_conf, "[DEFAULT]\nlog_file = cinder-api.log\n")
        .map_err(|e| e.to_string())?;
    let mut api = clean_command(venv_bin("cinder-api"));
    api.arg("--config-file")
        .arg(&conf)
        .arg("--config-file")
        .arg(&api_conf);
    daemons.insert("api".into(), spawn_daemon(api, &dir.join("api.out"))?);

    let plane = Plane {
        engine,
        database: tag,
        url,
        api_port,
        dir,
        started_in: Duration::ZERO,
        db_sync_took,
        daemons: Mutex::new(daemons),
    };
    // Ready: every scheduler reported once, and the API listens.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limit = Duration::from_secs(60);
    runtime.block_on(async {
        let start = Instant::now();
        loop {
            let counts = plane.report_counts().await.unwrap_or_default();
            let reported = [HOST_A, SKEWED_HOST, HOST_C]
                .iter()
                .all(|h| counts.get(*h).is_some_and(|c| *c >= 1));
            if reported && listening(plane.api_port) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "cinder daemons not ready after {limit:?} (report counts {counts:?}); logs in {}",
                    plane.dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })?;
    let took = started.elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "openstack plane on {engine:?} started in {:.1} s (db sync {:.1} s)",
        took.as_secs_f64(),
        db_sync_took.as_secs_f64()
    );
    Ok(Plane {
        started_in: took,
        ..plane
    })
}

fn create_database_mariadb(name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = sqlx::MySqlConnection::connect(MARIADB_URL)
            .await
            .map_err(|e| format!("MariaDB at {MARIADB_URL}: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok::<_, String>(())
    })?;
    at_exit(&format!(
        "mariadb -h127.0.0.1 -uroot -e 'DROP DATABASE IF EXISTS {name}'"
    ));
    Ok(())
}

fn create_database_postgres(name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(POSTGRES_URL)
            .await
            .map_err(|e| format!("PostgreSQL at {POSTGRES_URL}: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        Ok::<_, String>(())
    })?;
    at_exit(&format!(
        "psql -q -h 127.0.0.1 -U postgres -d test -c 'DROP DATABASE IF EXISTS {name} WITH (FORCE)'"
    ));
    Ok(())
}

impl Plane {
    /// `report_count` by host, read with a plain (writable, test-side) connection.
    pub async fn report_counts(&self) -> Result<HashMap<String, i64>, sqlx::Error> {
        let sql = "SELECT host, CAST(report_count AS SIGNED) FROM services WHERE deleted = 0";
        let rows: Vec<(String, i64)> = match self.engine {
            Engine::MariaDb => {
                let mut conn = sqlx::MySqlConnection::connect(&self.url).await?;
                let rows = sqlx::query_as(sql).fetch_all(&mut conn).await?;
                let _ = conn.close().await;
                rows
            }
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                let rows = sqlx::query_as(
                    "SELECT host, report_count::int8 FROM services WHERE deleted = false",
                )
                .fetch_all(&mut conn)
                .await?;
                let _ = conn.close().await;
                rows
            }
        };
        Ok(rows.into_iter().collect())
    }

    /// Kills one daemon (`kill -9` of its process group: `faketime` and its child alike).
    pub fn kill(&self, host: &str) {
        let pgid = self.daemons.lock().unwrap().remove(host);
        if let Some(pgid) = pgid {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    /// Runs the real `cinder` client against this plane's `cinder-api`, with the `noauth`
    /// plugin as admin.
    pub async fn cinder(&self, args: &[&str]) -> CliOutput {
        let endpoint = format!("http://127.0.0.1:{}/v3", self.api_port);
        let mut command = tokio::process::Command::from(clean_command(venv_bin("cinder")));
        command
            .args([
                "--os-auth-type",
                "noauth",
                "--os-user-id",
                "admin",
                "--os-project-id",
                "admin",
            ])
            .args(["--os-endpoint", &endpoint])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), command.output())
            .await
            .unwrap_or_else(|_| panic!("cinder {args:?} took longer than 30 s"))
            .expect("run the cinder client");
        CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `cinder service-list`, as rows of column → value.
    pub async fn service_list(&self) -> Vec<HashMap<String, String>> {
        let out = self.cinder(&["service-list"]).await;
        assert!(
            out.ok,
            "cinder service-list failed: {}{}",
            out.stdout, out.stderr
        );
        parse_table(&out.stdout)
    }

    /// `cinder service-disable HOST cinder-scheduler --reason REASON`.
    pub async fn disable_scheduler(&self, host: &str, reason: &str) {
        let out = self
            .cinder(&[
                "service-disable",
                host,
                "cinder-scheduler",
                "--reason",
                reason,
            ])
            .await;
        assert!(
            out.ok,
            "cinder service-disable failed: {}{}",
            out.stdout, out.stderr
        );
    }
}

/// What one `cinder` run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A prettytable (`+---+` borders, `|` cells) as rows of header → cell.
pub fn parse_table(text: &str) -> Vec<HashMap<String, String>> {
    let mut lines = text.lines().filter(|l| l.starts_with('|')).map(|l| {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>()
    });
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    lines
        .map(|cells| header.iter().cloned().zip(cells).collect())
        .collect()
}

/// Creates a `services` table from OpenStack's own SQLAlchemy model (`cinder.db.models` or
/// `nova.db.main.models`) in the database at `sqlalchemy_url`.
pub async fn create_table_from_model(kind: &str, sqlalchemy_url: &str) -> Result<(), String> {
    let script = "import sys, sqlalchemy as sa\n\
                  kind, url = sys.argv[1:]\n\
                  if kind == 'nova':\n    from nova.db.main import models\n\
                  else:\n    from cinder.db import models\n\
                  models.Service.__table__.create(sa.create_engine(url))\n";
    let python = venv_bin("python");
    if !python.exists() {
        return Err(format!("{} is missing; run scripts/test", python.display()));
    }
    let mut command = clean_command(python);
    command.args(["-W", "ignore", "-c", script, kind, sqlalchemy_url]);
    tokio::task::spawn_blocking(move || {
        run(&mut command, "creating the services table from the model")
    })
    .await
    .unwrap()
}

/// A fresh MariaDB database (dropped when the test process ends); its name.
pub async fn mariadb_database(prefix: &str) -> Option<String> {
    if let Err(why) = tokio::task::spawn_blocking(|| ensure_services(Engine::MariaDb))
        .await
        .unwrap()
    {
        return missing(&why);
    }
    let name = unique(prefix);
    let create = name.clone();
    match tokio::task::spawn_blocking(move || create_database_mariadb(&create))
        .await
        .unwrap()
    {
        Ok(()) => Some(name),
        Err(why) => missing(&why),
    }
}

/// A fresh PostgreSQL database (dropped when the test process ends); its name.
pub async fn postgres_database(prefix: &str) -> Option<String> {
    let name = unique(prefix);
    let create = name.clone();
    match tokio::task::spawn_blocking(move || create_database_postgres(&create))
        .await
        .unwrap()
    {
        Ok(()) => Some(name),
        Err(why) => missing(&why),
    }
}

/// The fixture itself: the real `cinder service-list` through the real `cinder-api` shows the
/// schedulers, the one under faketime down by Cinder's own rule. (The watch tests kill
/// [`HOST_C`] on this plane, so it is not looked at here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cinder_plane_runs() {
    let Some(plane) = cinder_on_mariadb().await else {
        return;
    };
    let list = plane.service_list().await;
    let state = |host: &str| {
        list.iter()
            .find(|r| r["Host"] == host && r["Binary"] == "cinder-scheduler")
            .map(|r| r["State"].clone())
            .unwrap_or_else(|| panic!("{host} not in {list:?}"))
    };
    assert_eq!(state(HOST_A), "up");
    assert_eq!(
        state(SKEWED_HOST),
        "down",
        "a clock 75 s ahead is down by Cinder's rule"
    );
    let counts = plane.report_counts().await.unwrap();
    assert!(counts.values().all(|c| *c >= 1), "{counts:?}");
    assert!(plane.db_sync_took <= plane.started_in);
    assert!(
        plane.started_in < Duration::from_secs(120),
        "{:?}",
        plane.started_in
    );
}
