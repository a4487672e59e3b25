//! The fault campaign, short version: the built `vigil server` killed with SIGKILL under load,
//! starved of file descriptors and slowlorised, and fed thousands of generated malformed
//! requests. (Full disks, read-only files and database outages run in-process, in the server
//! crate's suite: `storage_faults.rs`, `replicas.rs`.)
//!
//! `scripts/faults` runs the long version (`VIGIL_FAULT_CYCLES`, `VIGIL_FUZZ_REQUESTS`) and
//! writes RELIABILITY.md from the figures each test appends to `VIGIL_RELIABILITY_OUT`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const TOKEN: &str = "fault-token";
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Appends one test's figures to `VIGIL_RELIABILITY_OUT`, when set.
pub(crate) fn record(figures: Value) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "figures: {figures}");
    if let Ok(path) = std::env::var("VIGIL_RELIABILITY_OUT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the figures file");
        writeln!(file, "{figures}").unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `vigil server` on a fixed port, which the test kills and starts again.
struct Server {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    /// Soft and hard limit of open files for the process, when set.
    nofile: Option<u64>,
    http: reqwest::Client,
}

impl Server {
    async fn start(data_dir: &Path, args: &[&str], nofile: Option<u64>) -> Server {
        let mut all: Vec<String> = vec!["--data-dir".into(), data_dir.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = Server {
            child: None,
            port: free_port(),
            args: all,
            nofile,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap(),
        };
        server.spawn().await;
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it answers; returns how long that took.
    async fn spawn(&mut self) -> Duration {
        let started = Instant::now();
        let mut command = Command::new(VIGIL);
        command
            .args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--agent-token", crate::AGENT_TOKEN])
            .args(["--admin-token", TOKEN])
            .args(&self.args)
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(limit) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.child = Some(command.spawn().expect("start vigil server"));
        loop {
            let answered = self
                .http
                .get(format!("{}/healthz", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return started.elapsed();
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vigil server exited at start-up: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server not answering"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json answer")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A fresh schema's URL, or `None` (skipped) outside CI when PostgreSQL is not running.
async fn postgres_url() -> Option<String> {
    use sqlx::Connection;
    let mut conn = match sqlx::PgConnection::connect(POSTGRES).await {
        Ok(conn) => conn,
        Err(err) => {
            assert!(
                !under_ci(),
                "PostgreSQL at {POSTGRES} is required under CI: {err}"
            );
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!(
        "vigil_faults_{:x}",
        nanos as u64 ^ u64::from(std::process::id())
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    Some(format!("{POSTGRES}?options=-c%20search_path%3D{schema}"))
}

/// What the load generators had acknowledged.
#[derive(Default)]
struct Acknowledged {
    /// Heartbeats answered 200, per service id.
    beats: HashMap<i64, i64>,
    /// Services registered (201/200) and then disabled with a reason of their own (200).
    changes: BTreeMap<String, Option<i64>>,
}

/// Beats `ids` every `every` and registers-then-disables fresh services back to back, until
/// `stop`; every answer that is not a success is a refused write (the server is down), never
/// counted.
fn load(
    url: String,
    ids: Vec<i64>,
    every: Duration,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Acknowledged>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let beats = {
        let (http, url, stop, acknowledged) = (
            http.clone(),
            url.clone(),
            stop.clone(),
            acknowledged.clone(),
        );
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                for id in &ids {
                    let ok = http
                        .post(format!("{url}/v1/services/{id}/heartbeat"))
                        .bearer_auth(crate::AGENT_TOKEN)
                        .json(&json!({}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        *acknowledged.lock().unwrap().beats.entry(*id).or_insert(0) += 1;
                    }
                }
            }
        })
    };
    let changes = tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let host = format!("change-{n}");
            let registered = http
                .post(format!("{url}/v1/services"))
                .bearer_auth(crate::AGENT_TOKEN)
                .json(&json!({"host": host, "binary": "b", "report_interval": 60}))
                .send()
                .await;
            let id = match registered {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            }
            .and_then(|body| body["id"].as_i64());
            let Some(id) = id else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            acknowledged
                .lock()
                .unwrap()
                .changes
                .insert(host.clone(), None);
            let disabled = http
                .patch(format!("{url}/v1/services/{id}"))
                .bearer_auth(TOKEN)
                .json(&json!({"disabled": true, "disabled_reason": format!("reason-{n}")}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if disabled {
                acknowledged.lock().unwrap().changes.insert(host, Some(id));
            }
        }
    });
    vec![beats, changes]
}

/// `cycles` kill -9 and restarts of a server under heartbeats and acknowledged changes; then
/// checks and records what each cost.
async fn kill_cycles(label: &str, database: Option<String>, times: Times) {
    let cycles = env_usize("VIGIL_FAULT_CYCLES", 3);
    let Times {
        service_down_time,
        flush,
        report,
        down_for,
    } = times;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--service-down-time".to_string(),
        service_down_time.to_string(),
        "--flush-interval".to_string(),
        flush.to_string(),
    ];
    if let Some(url) = &database {
        args.extend(["--database".to_string(), url.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(dir.path(), &args, None).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let body: Value = server
            .http
            .post(format!("{}/v1/services", server.url()))
            .bearer_auth(crate::AGENT_TOKEN)
            .json(&json!({"host": format!("beater-{n}"), "binary": "cinder-volume", "report_interval": report}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(body["id"].as_i64().unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let tasks = load(
        server.url(),
        ids.clone(),
        Duration::from_secs_f64(report),
        stop.clone(),
        acknowledged.clone(),
    );
    let mut recoveries = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(1500 + 137 * cycle as u64)).await;
        server.kill9();
        // Down for longer than a report_interval: the reporters' beats are refused meanwhile.
        tokio::time::sleep(Duration::from_secs_f64(down_for)).await;
        recoveries.push(server.spawn().await.as_secs_f64());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // The last one is killed too: what it acknowledged must also be on disk.
    server.kill9();
    server.spawn().await;

    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    let listed = server.get("/v1/services").await;
    let services: HashMap<String, Value> = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["host"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    let mut lost_changes = Vec::new();
    for (host, disabled) in &acknowledged.changes {
        match services.get(host) {
            None => lost_changes.push(format!("{host} (registration)")),
            Some(service) if disabled.is_some() && service["status"] != "disabled" => {
                lost_changes.push(format!("{host} (disable)"))
            }
            Some(_) => {}
        }
    }
    let acknowledged_changes = acknowledged.changes.len()
        + acknowledged
            .changes
            .values()
            .filter(|d| d.is_some())
            .count();
    // A kill loses the heartbeats acknowledged since the last flush: at most one
    // flush_interval's worth of each service's beats (and the beat in flight).
    let per_cycle_limit = (flush / report).ceil() as i64 + 1;
    let mut worst_lost = 0;
    let mut total_lost = 0;
    for id in &ids {
        let stored = services
            .values()
            .find(|s| s["id"].as_i64() == Some(*id))
            .map(|s| s["report_count"].as_i64().unwrap())
            .unwrap();
        let lost = (acknowledged.beats[id] - stored).max(0);
        total_lost += lost;
        worst_lost = worst_lost.max(lost);
    }
    let beaters: BTreeSet<String> = (0..10).map(|n| format!("beater-{n}")).collect();
    let downs = server.get("/v1/events?kind=down&limit=1000").await;
    let false_downs: Vec<&Value> = downs["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| beaters.contains(e["host"].as_str().unwrap()))
        .collect();
    let figures = json!({
        "test": "kill9",
        "backend": label,
        "service_down_time_s": service_down_time,
        "flush_interval_s": flush,
        "report_interval_s": report,
        "down_for_s": down_for,
        "cycles": cycles + 1,
        "acknowledged_changes": acknowledged_changes,
        "lost_changes": lost_changes.len(),
        "acknowledged_beats": acknowledged.beats.values().sum::<i64>(),
        "lost_beats": total_lost,
        "lost_beats_worst_service": worst_lost,
        "lost_beats_limit_per_service": per_cycle_limit * (cycles as i64 + 1),
        "false_downs": false_downs.len(),
        "recovery_s_max": recoveries.iter().cloned().fold(0.0, f64::max),
    });
    record(figures);
    assert!(
        lost_changes.is_empty(),
        "acknowledged and lost: {lost_changes:?}"
    );
    assert!(acknowledged_changes > 0);
    assert!(
        false_downs.is_empty(),
        "{} live services declared down, the first: {:?}",
        false_downs.len(),
        false_downs.first()
    );
    assert!(
        worst_lost <= per_cycle_limit * (cycles as i64 + 1),
        "a service lost {worst_lost} acknowledged heartbeats over {} kills",
        cycles + 1
    );
}

/// The times of one kill campaign.
#[derive(Clone, Copy)]
struct Times {
    service_down_time: f64,
    flush: f64,
    report: f64,
    /// How long the server stays dead each time.
    down_for: f64,
}

/// `service_down_time` comfortably above `3 x flush_interval + report_interval` (1.1 s).
const COMFORTABLE: Times = Times {
    service_down_time: 4.0,
    flush: 0.2,
    report: 0.5,
    down_for: 1.0,
};

/// Close to it (4 s): the campaign's case, where a restart 2 s later declared services down.
const CLOSE: Times = Times {
    service_down_time: 3.0,
    flush: 1.0,
    report: 1.0,
    down_for: 2.0,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_sqlite_comfortable() {
    kill_cycles("sqlite", None, COMFORTABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_sqlite_close() {
    kill_cycles("sqlite", None, CLOSE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_postgres_comfortable() {
    if let Some(url) = postgres_url().await {
        kill_cycles("postgres", Some(url), COMFORTABLE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_postgres_close() {
    if let Some(url) = postgres_url().await {
        kill_cycles("postgres", Some(url), CLOSE).await;
    }
}

/// With 256 open files, three times that many idle and slowloris connections: a reporter
/// keeps beating, fresh clients are answered, nothing is declared down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_file_exhaustion_and_slowloris_never_make_a_live_service_look_dead() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--service-down-time", "2", "--flush-interval", "0.2"],
        Some(256),
    )
    .await;
    let url = server.url();
    let body: Value = server
        .http
        .post(format!("{url}/v1/services"))
        .bearer_auth(crate::AGENT_TOKEN)
        .json(&json!({"host": "live", "binary": "cinder-volume", "report_interval": 0.3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = body["id"].as_i64().unwrap();
    let reporter = vigil_reporter::Reporter::builder(url.as_str(), "live", "cinder-volume")
        .report_interval(Duration::from_millis(300))
        .token(crate::AGENT_TOKEN)
        .start()
        .expect("reporter starts");

    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let mut held = Vec::new();
    for n in 0..800 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            if n % 4 == 0 {
                let _ = stream
                    .write_all(b"POST /v1/services HTTP/1.1\r\nHost: x\r\n")
                    .await;
            }
            held.push(stream);
        }
    }
    let started = Instant::now();
    let (mut answered, mut refused) = (0, 0);
    while started.elapsed() < Duration::from_secs(6) {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        match fresh.get(format!("{url}/v1/services/{id}")).send().await {
            Ok(r) if r.status().is_success() => answered += 1,
            _ => refused += 1,
        }
        for stream in held.iter_mut().step_by(4) {
            let _ = stream.try_write(b"X");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let service = server.get(&format!("/v1/services/{id}")).await;
    let downs = server.get("/v1/events?kind=down").await;
    reporter.stop();
    reporter.wait();
    record(json!({
        "test": "connections",
        "open_files": 256,
        "held_connections": 800,
        "fresh_requests_answered": answered,
        "fresh_requests_refused": refused,
        "false_downs": downs["events"].as_array().unwrap().len(),
    }));
    assert_eq!(
        refused, 0,
        "fresh clients refused while connections were held"
    );
    assert_eq!(service["state"], "up", "{service}");
    assert_eq!(downs["events"], json!([]), "{downs}");
}

/// Requests generated from a fixed seed: methods, paths, queries and bodies, valid and
/// mangled. None may get a 5xx, hang, or hurt the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_malformed_requests_never_get_a_5xx() {
    use rand::{Rng, SeedableRng};
    let requests = env_usize("VIGIL_FUZZ_REQUESTS", 2000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], None).await;
    let url = server.url();
    let body: Value = server
        .http
        .post(format!("{url}/v1/services"))
        .bearer_auth(crate::AGENT_TOKEN)
        .json(&json!({"host": "h", "binary": "b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = body["id"].as_i64().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261201);
    let words = [
        "",
        "0",
        "-1",
        "1e9",
        "9999999999999999999999",
        "null",
        "true",
        "%00",
        "%ff",
        "%",
        "\u{7}",
        "é",
        "✓",
        "a b",
        "../..",
        "%2e%2e",
        "x".repeat(300).leak(),
        "🙂",
    ];
    let paths = [
        "/v1/services".to_string(),
        format!("/v1/services/{id}"),
        format!("/v1/services/{id}/heartbeat"),
        "/v1/heartbeats".to_string(),
        format!("/v1/services/{id}/events"),
        format!("/v1/services/{id}/diagnosis"),
        "/v1/events".to_string(),
        "/v1/services/{}".to_string(),
        "/readyz".to_string(),
        "/healthz".to_string(),
        "/v2/nothing".to_string(),
    ];
    let keys = [
        "host", "binary", "zone", "state", "status", "kind", "since", "limit", "before", "after",
        "service", "force", "x",
    ];
    let bodies = [
        json!({"host": "h2", "binary": "b", "report_interval": 1}),
        json!({"disabled": true, "disabled_reason": "r"}),
        json!({"forced_down": true}),
        json!({"zone": "z", "sent_at": "2026-01-01T00:00:00Z", "last_rtt_s": 0.1}),
        json!({}),
        json!([]),
        json!({"beats": [{"id": id, "zone": "z"}, {"id": -1}, {"id": id, "last_error": "e"}]}),
    ];
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut server_errors = Vec::new();
    for n in 0..requests {
        let method = ["GET", "POST", "PATCH", "DELETE", "PUT"][rng.random_range(0..5)];
        let mut path = paths[rng.random_range(0..paths.len())]
            .replace("{}", words[rng.random_range(0..words.len())]);
        if rng.random_bool(0.6) {
            path.push('?');
            for _ in 0..rng.random_range(1..4) {
                path.push_str(&format!(
                    "{}={}&",
                    keys[rng.random_range(0..keys.len())],
                    words[rng.random_range(0..words.len())]
                ));
            }
        }
        let mut bytes = serde_json::to_vec(&bodies[rng.random_range(0..bodies.len())]).unwrap();
        match rng.random_range(0..6) {
            0 => bytes.truncate(rng.random_range(0..bytes.len().max(1))),
            1 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = rng.random();
            }
            2 => bytes = words[rng.random_range(0..words.len())].as_bytes().to_vec(),
            _ => {}
        }
        let content_type =
            ["application/json", "text/plain", "application/x+json", ""][rng.random_range(0..4)];
        let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
            continue;
        };
        let mut request = server
            .http
            .request(method.clone(), format!("{url}{path}"))
            .body(bytes);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if rng.random_bool(0.5) {
            request = request.bearer_auth(TOKEN);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // reqwest refuses to send some URLs it cannot build; that is the client's limit.
            Err(err) if err.is_builder() => continue,
            Err(err) => panic!("request {n} {method} {path}: no answer: {err}"),
        };
        let status = response.status().as_u16();
        *statuses.entry(status).or_insert(0) += 1;
        let text = response.text().await.unwrap_or_default();
        if status >= 500 {
            server_errors.push(format!("{method} {path}: {status} {text}"));
        } else if status >= 400 {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: {status} without our body: {text}"));
            assert!(body["error"]["code"].is_string(), "{method} {path}: {text}");
        }
    }
    let health = server.get("/healthz").await;
    record(json!({
        "test": "fuzz",
        "requests": requests,
        "statuses": statuses,
        "server_errors": server_errors.len(),
    }));
    assert!(server_errors.is_empty(), "{server_errors:#?}");
    assert_eq!(health["status"], "ok");
}
