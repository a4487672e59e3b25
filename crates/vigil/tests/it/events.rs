//! `vigil events` and `vigil watch` against a real `vigil server` child process, and the
//! server's grace rule after a pause of its process (SIGSTOP), which only a real process shows.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// A `vigil server` child process (service_down_time as given, flush 0.1 s); killed on drop.
struct Server {
    child: Child,
    url: String,
    /// Its log lines so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(data_dir: &Path, listen: &str, service_down_time: &str) -> Server {
        let mut child = Command::new(VIGIL)
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(["--agent-token", crate::AGENT_TOKEN])
            .args(["--service-down-time", service_down_time])
            .args(["--flush-interval", "0.1"])
            .env_remove("VIGIL_ADMIN_TOKEN")
            .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
            .env("VIGIL_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil server");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server printed its address");
        Server {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    fn signal(&self, signal: i32) {
        signal_child(&self.child, signal);
    }

    /// SIGTERM, as a service manager stops it; waits for a clean exit.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "server stopped with {status}");
    }

    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `vigil watch` child whose stdout lines arrive on `lines`; killed on drop.
struct Watch {
    child: Child,
    lines: Receiver<String>,
}

impl Watch {
    fn start(url: &str, args: &[&str]) -> Watch {
        let mut child = Command::new(VIGIL)
            .arg("watch")
            .args(args)
            .args(["--server", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Watch { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("vigil watch printed a line")
    }

    /// Waits for the exit; returns the exit code, every line printed and stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>, String) {
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "vigil watch did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let code = self.child.wait().unwrap().code();
        let lines = std::mem::replace(&mut self.lines, mpsc::channel().1);
        (code, lines.iter().collect(), stderr)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child that is sent SIGTERM and reaped on drop, so that it stops its own children too (an
/// agent its command).
struct Terminated(Child);

impl Drop for Terminated {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) with the pid of a child this test spawned and has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.0.wait();
    }
}

fn signal_child(child: &Child, signal: i32) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with the pid of a child this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid} {signal}");
}

/// Runs `vigil ARGS --server URL --data-dir DIR` (the admin token is in DIR).
fn vigil(args: &[&str], data_dir: &Path, url: &str) -> Output {
    Command::new(VIGIL)
        .args(args)
        .args(["--server", url, "--data-dir"])
        .arg(data_dir)
        .env_remove("VIGIL_ADMIN_TOKEN")
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .env_remove("VIGIL_URL")
        .output()
        .expect("run vigil")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `vigil ARGS --json`, which must succeed, parsed.
fn vigil_json(args: &[&str], data_dir: &Path, url: &str) -> Vec<Value> {
    let out = vigil(&[args, &["--json"]].concat(), data_dir, url);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One API call with the agent token (reads are open, registrations and beats need it); the
/// answer as JSON.
fn api(method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
    runtime().block_on(async {
        let mut request = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(crate::AGENT_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("api request");
        let status = response.status();
        assert!(status.is_success(), "{url}: {status}");
        response.json().await.unwrap()
    })
}

fn get(url: &str) -> Value {
    api(reqwest::Method::GET, url, None)
}

/// Registers (host, binary); returns its id.
fn register(url: &str, host: &str, binary: &str) -> i64 {
    let body = json!({"host": host, "binary": binary, "report_interval": 0.2});
    api(
        reqwest::Method::POST,
        &format!("{url}/v1/services"),
        Some(body),
    )["id"]
        .as_i64()
        .unwrap()
}

fn beat(url: &str, id: i64) {
    api(
        reqwest::Method::POST,
        &format!("{url}/v1/services/{id}/heartbeat"),
        Some(json!({})),
    );
}

fn events(url: &str, query: &str) -> Vec<Value> {
    get(&format!("{url}/v1/events?{query}"))["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ids(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["kind"].as_str().unwrap()).collect()
}

fn at(event: &Value) -> DateTime<Utc> {
    event["at"].as_str().unwrap().parse().unwrap()
}

/// A port that was free a moment ago, so that a server can be restarted on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn events_prints_the_history_newest_first_and_filters_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0", "1");
    let url = server.url.as_str();
    let volume = register(url, "node-1", "cinder-volume");
    register(url, "node-2", "cinder-backup");
    let out = vigil(
        &[
            "service",
            "disable",
            "node-2",
            "cinder-backup",
            "--reason",
            "disk swap",
        ],
        dir.path(),
        url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("both services down", Duration::from_secs(10), || {
        events(url, "kind=down").len() == 2
    });

    let out = vigil(&["events"], dir.path(), url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table.lines().nth(1).unwrap();
    for column in ["Id", "At", "Kind", "Host", "Binary", "Detail"] {
        assert!(header.contains(column), "{table}");
    }
    let first_row = table.lines().nth(3).unwrap();
    assert!(
        first_row.contains("| down ") && first_row.contains("threshold 1 s"),
        "{table}"
    );
    assert!(first_row.contains("last seen 20"), "{table}");
    assert!(table.contains("disk swap"), "{table}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    let all = vigil_json(&["events"], dir.path(), url);
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(ids(&all).windows(2).all(|w| w[0] > w[1]), "newest first");
    let mut sorted = kinds(&all);
    sorted.sort();
    assert_eq!(
        sorted,
        ["disabled", "down", "down", "registered", "registered"]
    );
    assert_eq!(vigil_json(&["events", "--all"], dir.path(), url), all);

    let node_1 = vigil_json(&["events", "--host", "node-1"], dir.path(), url);
    assert_eq!(kinds(&node_1), ["down", "registered"]);
    let by_id = vigil_json(
        &["events", "--service", &volume.to_string()],
        dir.path(),
        url,
    );
    assert_eq!(by_id, node_1);
    let positional = vigil_json(&["events", "node-2", "cinder-backup"], dir.path(), url);
    assert_eq!(kinds(&positional), ["down", "disabled", "registered"]);
    let disabled = vigil_json(
        &["events", "--binary", "cinder-backup", "--kind", "disabled"],
        dir.path(),
        url,
    );
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["reason"], "disk swap");
    let newest = vigil_json(&["events", "--limit", "2"], dir.path(), url);
    assert_eq!(newest, all[..2]);
    let down = vigil_json(&["events", "--kind", "down"], dir.path(), url);
    assert_eq!(down, all[..2]);
    assert_eq!(down[0]["threshold_s"], 1.0);
    let future = vigil_json(
        &["events", "--since", "2999-01-01T00:00:00Z"],
        dir.path(),
        url,
    );
    assert!(future.is_empty());

    let out = vigil(&["events", "--limit", "1"], dir.path(), url);
    assert!(
        text(&out.stderr).contains("--all"),
        "a hint that there is more"
    );

    // An unknown kind is refused before any request, as a usage error like the others.
    let out = vigil(&["events", "--kind", "bogus"], dir.path(), url);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid value 'bogus' for '--kind"),
        "{}",
        text(&out.stderr)
    );
    for usage in [
        &["events", "--limit", "0"][..],
        &["events", "node-1", "--host", "node-2"],
        &["events", "--all", "--limit", "5"],
    ] {
        let out = vigil(usage, dir.path(), url);
        assert_eq!(out.status.code(), Some(2), "{usage:?}");
    }
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let out = vigil(&["events"], dir.path(), &unreachable);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).starts_with("vigil: cannot reach vigil server"));
}

#[test]
fn events_all_reads_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0", "600");
    let url = server.url.clone();
    let count = 1001;
    runtime().block_on(async {
        let http = reqwest::Client::new();
        for i in 0..count {
            let response = http
                .post(format!("{url}/v1/services"))
                .bearer_auth(crate::AGENT_TOKEN)
                .json(&json!({"host": format!("h-{i}"), "binary": "b"}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    });
    let one_page = vigil_json(&["events"], dir.path(), &url);
    assert_eq!(one_page.len(), 50);
    let all = vigil_json(
        &["events", "--all", "--kind", "registered"],
        dir.path(),
        &url,
    );
    assert_eq!(all.len(), count);
    assert!(ids(&all).windows(2).all(|w| w[0] > w[1]), "no repeats");
    assert_eq!(all[0], one_page[0]);
    assert_eq!(all[count - 1]["host"], "h-0");
}

#[test]
fn watch_prints_a_service_registering_and_going_down() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0", "1");
    let url = server.url.as_str();
    // From the start of the history, so that it does not matter when they connect.
    let json_watch = Watch::start(url, &["--count", "2", "--json", "--from", "0"]);
    let text_watch = Watch::start(url, &["--count", "2", "--from", "0", "--host", "w-1"]);
    let id = register(url, "w-1", "cinder-volume");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        beat(url, id);
    }

    let (code, lines, stderr) = json_watch.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let seen: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kinds(&seen), ["registered", "down"], "{lines:?}");
    let down = &seen[1];
    assert_eq!(down["host"], "w-1");
    assert_eq!(down["threshold_s"], 1.0);
    assert_ne!(
        down["last_seen"], seen[0]["at"],
        "the last beat, not the creation"
    );
    assert!(at(down) > at(&seen[0]));

    let (code, lines, stderr) = text_watch.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let expected = format!(
        "{}  down         cinder-volume@w-1  last seen {}, threshold 1 s",
        down["at"].as_str().unwrap(),
        down["last_seen"].as_str().unwrap()
    );
    assert_eq!(lines[1], expected);
    assert!(
        lines[0].contains("  registered   cinder-volume@w-1"),
        "{lines:?}"
    );

    // Ctrl-C ends a watch with exit code 0. It has printed an event, so it is surely running.
    let watch = Watch::start(url, &["--from", &down["id"].to_string()]);
    let out = vigil(
        &["service", "disable", "w-1", "cinder-volume"],
        dir.path(),
        url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(watch.next_line().contains("disabled"));
    signal_child(&watch.child, libc::SIGINT);
    let (code, _, stderr) = watch.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn watch_survives_a_server_restart_and_prints_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start(dir.path(), &listen, "600");
    let url = server.url.clone();
    register(&url, "r-1", "cinder-volume");
    let watch = Watch::start(&url, &["--json", "--count", "5", "--from", "0"]);
    let first = watch.next_line();

    server.stop();
    let server = Server::start(dir.path(), &listen, "600");
    assert_eq!(server.url, url);
    // Some of these are written before the watcher is back: it must catch up on them.
    register(&url, "r-2", "cinder-volume");
    for change in ["disable", "enable"] {
        let out = vigil(
            &["service", change, "r-1", "cinder-volume"],
            dir.path(),
            &url,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    register(&url, "r-3", "cinder-volume");

    let (code, rest, stderr) = watch.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let seen: Vec<Value> = std::iter::once(&first)
        .chain(&rest)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        kinds(&seen),
        [
            "registered",
            "registered",
            "disabled",
            "enabled",
            "registered"
        ],
        "{rest:?}"
    );
    let hosts: Vec<&str> = seen.iter().map(|e| e["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["r-1", "r-2", "r-1", "r-1", "r-3"]);
    assert!(ids(&seen).windows(2).all(|w| w[0] < w[1]), "{rest:?}");
    assert_eq!(
        stderr.matches("lost the event stream").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("reconnected, resuming after event").count(),
        1,
        "{stderr}"
    );
}

/// The issue: after a pause of the server process longer than service_down_time (a stopped
/// VM), no service that was up may be declared down before it has had a full
/// service_down_time of server running time to beat again; one that stays silent still is.
#[test]
fn a_paused_server_downs_no_beating_service_and_still_downs_a_silent_one() {
    pause_and_check(1, "0.2", Duration::from_millis(2500));
}

/// A stall shorter than service_down_time held up heartbeats too: a service beating at the
/// largest interval the doctor accepts (a third of service_down_time) must not flap.
#[test]
fn a_short_stall_downs_no_beating_service() {
    pause_and_check(3, "1", Duration::from_millis(2900));
}

fn pause_and_check(service_down_time: i64, report_interval: &str, pause: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0", &service_down_time.to_string());
    let url = server.url.as_str();
    let _agent = Terminated(
        Command::new(VIGIL)
            .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
            .args(["agent", "--server", url, "--host", "pause-host"])
            .args(["--binary", "worker", "--report-interval", report_interval])
            .args(["--", "sleep", "30"])
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vigil agent"),
    );
    let worker = format!("{url}/v1/services?host=pause-host&binary=worker");
    wait_until("the worker beats", Duration::from_secs(10), || {
        get(&worker)["services"][0]["report_count"]
            .as_i64()
            .is_some_and(|n| n >= 3)
    });
    // The control's last beat comes just before the pause, so it too was up when the server
    // stopped watching: it gets the grace, then goes down for want of beats.
    let silent = register(url, "pause-host", "silent");
    beat(url, silent);

    server.signal(libc::SIGSTOP);
    std::thread::sleep(pause);
    let resumed = Utc::now();
    server.signal(libc::SIGCONT);
    wait_until("the silent service down", Duration::from_secs(15), || {
        !events(url, "kind=down&binary=silent").is_empty()
    });
    let settle = Duration::from_secs(service_down_time as u64 + 1);
    std::thread::sleep(settle.saturating_sub((Utc::now() - resumed).to_std().unwrap_or_default()));

    let downs = events(url, "kind=down&host=pause-host");
    assert_eq!(downs.len(), 1, "only the silent service is down: {downs:?}");
    assert_eq!(downs[0]["binary"], "silent");
    assert!(
        at(&downs[0]) >= resumed + chrono::TimeDelta::seconds(service_down_time),
        "down only after a full service_down_time of running time: {downs:?}"
    );
    assert_eq!(get(&worker)["services"][0]["state"], "up");
    assert!(server.logged("paused"), "the server noticed its pause");
}
