//! The partition guard against real network isolation (issue 15): the server runs in one
//! network namespace, a `vigil agent` with twelve services in another, joined by a veth pair
//! that the test cuts (`ip link set ... down`) and restores. Three services beat from inside
//! the server's own namespace and are never cut. The test reaches the server over a second
//! veth pair from its own namespace.
//!
//! Needs root and `ip` (Debian's iproute2): outside CI it skips without them; under CI it
//! fails. Its figures go to `VIGIL_RELIABILITY_OUT` (RELIABILITY.md, "Partition").

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const SERVICE_DOWN_TIME: f64 = 2.0;
const REMOTE: usize = 12;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces (server, reporters) joined by a veth pair, and a second pair from this
/// namespace to the server's; all removed on drop.
struct Net {
    server_ns: String,
    reporter_ns: String,
    /// The reporters' end of their link to the server, in their namespace.
    reporter_link: String,
    /// This namespace's end of its link to the server's.
    test_link: String,
    /// The server's address as the reporters see it, and as this test sees it.
    server_for_reporters: String,
    server_for_test: String,
}

impl Net {
    fn create() -> Result<Net, String> {
        let pid = std::process::id();
        let n = pid % 250 + 1;
        let net = Net {
            server_ns: format!("vigil-s-{pid}"),
            reporter_ns: format!("vigil-r-{pid}"),
            reporter_link: format!("vr{pid}"),
            test_link: format!("vt{pid}"),
            server_for_reporters: format!("10.213.{n}.1"),
            server_for_test: format!("10.214.{n}.2"),
        };
        let (s, r) = (net.server_ns.as_str(), net.reporter_ns.as_str());
        let (server_side, test_peer) = (format!("vs{pid}"), format!("vu{pid}"));
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", r])?;
        // Reporters ↔ server.
        ip(&[
            "link",
            "add",
            &server_side,
            "type",
            "veth",
            "peer",
            "name",
            &net.reporter_link,
        ])?;
        ip(&["link", "set", &server_side, "netns", s])?;
        ip(&["link", "set", &net.reporter_link, "netns", r])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("10.213.{n}.1/24"),
            "dev",
            &server_side,
        ])?;
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &format!("10.213.{n}.2/24"),
            "dev",
            &net.reporter_link,
        ])?;
        ip(&["-n", s, "link", "set", &server_side, "up"])?;
        ip(&["-n", r, "link", "set", &net.reporter_link, "up"])?;
        // This test ↔ server.
        ip(&[
            "link",
            "add",
            &net.test_link,
            "type",
            "veth",
            "peer",
            "name",
            &test_peer,
        ])?;
        ip(&["link", "set", &test_peer, "netns", s])?;
        ip(&[
            "addr",
            "add",
            &format!("10.214.{n}.1/24"),
            "dev",
            &net.test_link,
        ])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("10.214.{n}.2/24"),
            "dev",
            &test_peer,
        ])?;
        ip(&["link", "set", &net.test_link, "up"])?;
        ip(&["-n", s, "link", "set", &test_peer, "up"])?;
        ip(&["-n", s, "link", "set", "lo", "up"])?;
        ip(&["-n", r, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Cuts (`false`) or restores (`true`) the reporters' link to the server.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.reporter_ns,
            "link",
            "set",
            &self.reporter_link,
            state,
        ])
        .unwrap();
    }

    fn exec(&self, ns: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, VIGIL]);
        command
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.test_link]);
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.reporter_ns]);
    }
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn get(url: &str) -> Value {
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        response.json().await.unwrap()
    })
}

fn events(url: &str, query: &str) -> Vec<Value> {
    get(&format!("{url}/v1/events?{query}&limit=1000"))["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// The remote services' states, and the local ones'.
fn states(url: &str) -> (Vec<String>, Vec<String>) {
    let services = get(&format!("{url}/v1/services"))["services"]
        .as_array()
        .unwrap()
        .clone();
    let of = |host: &str| {
        services
            .iter()
            .filter(|s| s["host"] == host)
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    (of("remote"), of("local"))
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn agent(net: &Net, ns: &str, server: &str, host: &str, binaries: &[String]) -> Killed {
    let mut command = net.exec(ns);
    command
        .args(["agent", "--server", server, "--host", host])
        .args(["--report-interval", "0.5"])
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for binary in binaries {
        command.args(["--binary", binary]);
    }
    command.args(["--", "sleep", "600"]);
    Killed(command.spawn().expect("start vigil agent"))
}

fn start_server(net: &Net, data_dir: &Path, port: u16) -> Killed {
    let child = net
        .exec(&net.server_ns)
        .args([
            "server",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(["--agent-token", crate::AGENT_TOKEN])
        .args(["--service-down-time", &SERVICE_DOWN_TIME.to_string()])
        .args(["--flush-interval", "0.1"])
        .env_remove("VIGIL_ADMIN_TOKEN")
        .env("VIGIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("server.log")).expect("the server's log"))
        .spawn()
        .expect("start vigil server");
    Killed(child)
}

#[test]
fn a_cut_network_makes_services_unreachable_not_down() {
    let net = match Net::create() {
        Ok(net) => net,
        Err(err) => {
            assert!(
                !under_ci(),
                "network namespaces are required under CI (root and iproute2): {err}"
            );
            eprintln!("skipped: cannot create network namespaces: {err}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let _server = start_server(&net, dir.path(), port);
    let url = format!("http://{}:{port}", net.server_for_test);
    wait_until("the server answers", Duration::from_secs(20), || {
        runtime().block_on(async {
            reqwest::Client::new()
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    });
    let remote: Vec<String> = (1..=REMOTE).map(|i| format!("r{i}")).collect();
    let local: Vec<String> = (1..=3).map(|i| format!("l{i}")).collect();
    let _remote = agent(
        &net,
        &net.reporter_ns,
        &format!("http://{}:{port}", net.server_for_reporters),
        "remote",
        &remote,
    );
    let _local = agent(
        &net,
        &net.server_ns,
        &format!("http://127.0.0.1:{port}"),
        "local",
        &local,
    );
    wait_until("every service beats", Duration::from_secs(30), || {
        let services = get(&format!("{url}/v1/services"))["services"]
            .as_array()
            .unwrap()
            .clone();
        services.len() == REMOTE + 3
            && services
                .iter()
                .all(|s| s["report_count"].as_i64().unwrap_or(0) >= 3)
    });

    // The cut: every remote service unreachable, none down; the local ones up.
    net.link(false);
    let cut = Instant::now();
    let mut first = None;
    let all = wait_until(
        "the cut services unreachable",
        Duration::from_secs(15),
        || {
            let (remote, local) = states(&url);
            assert!(
                local.iter().all(|s| s == "up"),
                "local services stay up: {local:?}"
            );
            if remote.iter().any(|s| s == "down") {
                panic!(
                    "a cut service is down {:?} after the cut: {remote:?}\nservices: {}\nevents: {:?}\nserver log: {}",
                    cut.elapsed(),
                    get(&format!("{url}/v1/services")),
                    events(&url, "kind=down"),
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
                );
            }
            let unreachable = remote.iter().filter(|s| *s == "unreachable").count();
            if unreachable > 0 && first.is_none() {
                first = Some(cut.elapsed());
            }
            unreachable == REMOTE
        },
    );
    let mass = events(&url, "kind=mass_failure");
    assert_eq!(mass.len(), 1, "{mass:?}");
    let ready = get(&format!("{url}/readyz"));
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["mass_failure"]["unreachable"], REMOTE, "{ready}");
    // Held for longer than another service_down_time: still no down.
    std::thread::sleep(Duration::from_secs_f64(SERVICE_DOWN_TIME * 1.5));
    let (remote_states, _) = states(&url);
    assert!(
        remote_states.iter().all(|s| s == "unreachable"),
        "{remote_states:?}"
    );

    // Restored: up again, with neither a down nor an up (they never were down).
    net.link(true);
    let restored = Instant::now();
    wait_until("the cut services up again", Duration::from_secs(30), || {
        states(&url).0.iter().all(|s| s == "up")
    });
    let back = restored.elapsed();
    assert!(events(&url, "kind=down").is_empty());
    assert!(events(&url, "kind=up").is_empty());
    wait_until("the episode ends", Duration::from_secs(5), || {
        events(&url, "kind=mass_failure_ended").len() == 1
    });

    // Cut again, and an admin confirms them down: twelve downs naming the admin.
    net.link(false);
    wait_until(
        "the cut services unreachable again",
        Duration::from_secs(15),
        || states(&url).0.iter().all(|s| s == "unreachable"),
    );
    let out = Command::new(VIGIL)
        .args(["confirm-down", "--server", &url, "--data-dir"])
        .arg(dir.path())
        .env_remove("VIGIL_ADMIN_TOKEN")
        .output()
        .expect("run vigil confirm-down");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        said.trim(),
        format!("confirmed {REMOTE} service(s) down; 0 still unreachable")
    );
    wait_until("their downs", Duration::from_secs(5), || {
        events(&url, "kind=down").len() == REMOTE
    });
    for down in events(&url, "kind=down") {
        assert_eq!(down["actor"], "admin", "{down}");
        assert_eq!(down["host"], "remote", "{down}");
    }
    net.link(true);
    wait_until(
        "up again after the confirmed down",
        Duration::from_secs(30),
        || states(&url).0.iter().all(|s| s == "up"),
    );
    // Their `up` events are written by the detector within a tick of the beats.
    wait_until("their up events", Duration::from_secs(5), || {
        events(&url, "kind=up").len() == REMOTE
    });

    let figures = json!({
        "test": "partition",
        "services_cut": REMOTE,
        "services_not_cut": 3,
        "service_down_time_s": SERVICE_DOWN_TIME,
        "report_interval_s": 0.5,
        "cut_to_first_unreachable_s": first.map(|d| d.as_secs_f64()),
        "cut_to_all_unreachable_s": all.as_secs_f64(),
        "wrongly_down": 0,
        "restore_to_all_up_s": back.as_secs_f64(),
    });
    crate::faults::record(figures);
}
