//! The CLI as an operator runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// A `vigil server` child process; killed on drop.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl ServerProcess {
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let mut child = Command::new(VIGIL)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--agent-token", crate::AGENT_TOKEN])
            .args(["--service-down-time", "1", "--flush-interval", "0.1"])
            .args(extra)
            .env_remove("VIGIL_ADMIN_TOKEN")
            .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
            .env("VIGIL_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vigil server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server printed its address");
        ServerProcess {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn vigil(args: &[&str], data_dir: &Path, url: &str) -> Output {
    Command::new(VIGIL)
        .args(args)
        .arg("--server")
        .arg(url)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("VIGIL_ADMIN_TOKEN")
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .output()
        .expect("run vigil")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn register(url: &str, host: &str, binary: &str) {
    let body = serde_json::json!({"host": host, "binary": binary, "report_interval": 0.2});
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{url}/v1/services"))
            .bearer_auth(crate::AGENT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("register request");
        response.status()
    });
    assert!(status.is_success(), "register {host}/{binary}: {status}");
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn config_default_prints_a_file_that_parses_to_the_defaults() {
    let out = Command::new(VIGIL)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let parsed = vigil_server::Config::from_toml(&text(&out.stdout)).unwrap();
    assert_eq!(parsed, vigil_server::Config::default());
}

#[test]
fn a_listen_address_in_use_is_one_line_and_exit_code_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(VIGIL)
        .args(["server", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .args(["--agent-token", crate::AGENT_TOKEN])
        .env("VIGIL_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_metrics_address_in_use_is_one_line_and_exit_code_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(VIGIL)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &addr,
            "--data-dir",
        ])
        .arg(dir.path())
        .env("VIGIL_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("vigil: cannot listen on {addr} for metrics: Address already in use (os error 98)")
    );
}

#[test]
fn an_unusable_data_dir_is_one_line_and_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(VIGIL)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .args(["--agent-token", crate::AGENT_TOKEN])
        .env("VIGIL_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not-a-dir"), "{stderr}");
}

#[test]
fn bad_configuration_values_are_refused() {
    let out = Command::new(VIGIL)
        .args(["server", "--service-down-time", "0"])
        .env("VIGIL_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("service_down_time"));
    for (flag, key) in [
        ("--header-read-timeout", "http.header_read_timeout"),
        ("--idle-timeout", "http.idle_timeout"),
        ("--max-connections", "http.max_connections"),
    ] {
        let out = Command::new(VIGIL)
            .args(["server", flag, "0"])
            .env("VIGIL_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} 0");
        assert!(text(&out.stderr).contains(key), "{}", text(&out.stderr));
    }
    let out = Command::new(VIGIL)
        .args(["service", "list", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn service_commands_administer_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert!(token.trim().len() >= 32, "a generated token");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    register(&server.url, "node-1", "cinder-volume");
    register(&server.url, "node-2", "cinder-backup");

    let out = vigil(&["service", "list"], dir.path(), &server.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for column in [
        "Binary",
        "Host",
        "Zone",
        "Status",
        "State",
        "Updated At",
        "Disabled Reason",
    ] {
        assert!(table.contains(column), "{table}");
    }
    assert!(
        table.contains("cinder-volume") && table.contains("node-2"),
        "{table}"
    );

    let out = vigil(
        &[
            "service",
            "disable",
            "node-1",
            "cinder-volume",
            "--reason",
            "disk swap",
        ],
        dir.path(),
        &server.url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("disk swap"));
    let out = vigil(
        &["service", "list", "--status", "disabled", "--json"],
        dir.path(),
        &server.url,
    );
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(services.as_array().unwrap().len(), 1);
    assert_eq!(services[0]["disabled_reason"], "disk swap");

    let out = vigil(
        &["service", "enable", "node-1", "cinder-volume"],
        dir.path(),
        &server.url,
    );
    assert!(out.status.success());
    let out = vigil(
        &["service", "show", "node-1", "cinder-volume"],
        dir.path(),
        &server.url,
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "enabled");

    let out = vigil(
        &["service", "force-down", "node-2", "cinder-backup"],
        dir.path(),
        &server.url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("down (forced)"));
    let out = vigil(
        &[
            "service",
            "force-down",
            "node-2",
            "cinder-backup",
            "--unset",
        ],
        dir.path(),
        &server.url,
    );
    assert!(out.status.success());

    let out = vigil(
        &["service", "enable", "node-9", "nothing"],
        dir.path(),
        &server.url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("vigil: no service nothing on host node-9"),
        "{}",
        text(&out.stderr)
    );

    register(&server.url, "node-3", "cinder-volume");
    let out = vigil(
        &["service", "delete", "node-3", "cinder-volume"],
        dir.path(),
        &server.url,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("service_up"),
        "{}",
        text(&out.stderr)
    );
    let out = vigil(
        &["service", "delete", "node-3", "cinder-volume", "--force"],
        dir.path(),
        &server.url,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = Command::new(VIGIL)
        .args([
            "service",
            "disable",
            "node-1",
            "cinder-volume",
            "--token",
            "wrong",
            "--server",
            &server.url,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unreachable_server_is_exit_code_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = vigil(
        &["service", "list"],
        dir.path(),
        &format!("http://127.0.0.1:{port}"),
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("vigil: cannot reach vigil server"),
        "{stderr}"
    );
}

#[test]
fn the_agent_heartbeats_for_its_child_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let out = Command::new(VIGIL)
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .args([
            "agent",
            "--server",
            &server.url,
            "--host",
            "agent-host",
            "--binary",
            "worker",
            "--report-interval",
            "0.2",
        ])
        .args(["--", "sh", "-c", "sleep 1; exit 7"])
        .env("VIGIL_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let listed = vigil(
        &["service", "list", "--host", "agent-host", "--json"],
        dir.path(),
        &server.url,
    );
    let services: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(services[0]["binary"], "worker");
    assert!(
        services[0]["report_count"].as_i64().unwrap() >= 2,
        "{services}"
    );
    assert_eq!(services[0]["report_interval"], 0.2);
    wait_until(
        "the agent's service goes down",
        Duration::from_secs(10),
        || {
            let listed = vigil(
                &[
                    "service",
                    "list",
                    "--host",
                    "agent-host",
                    "--state",
                    "down",
                    "--json",
                ],
                dir.path(),
                &server.url,
            );
            serde_json::from_slice::<serde_json::Value>(&listed.stdout)
                .map(|v| v.as_array().is_some_and(|a| a.len() == 1))
                .unwrap_or(false)
        },
    );
}

/// A command that exits 0 ends cleanly: the agent tells the server, which shows its services
/// `stopped` at once (a failing command, above, goes `down` instead). Alone and as a group.
#[test]
fn the_agent_tells_the_server_when_its_child_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    for binaries in [&["worker"][..], &["worker-a", "worker-b"][..]] {
        let mut args = vec!["agent", "--server", &server.url, "--host", "clean-host"];
        for binary in binaries {
            args.extend(["--binary", binary]);
        }
        args.extend(["--report-interval", "0.2", "--", "sh", "-c", "sleep 0.6"]);
        let out = Command::new(VIGIL)
            .args(&args)
            .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
            .env("VIGIL_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let listed = vigil(
            &["service", "list", "--host", "clean-host", "--json"],
            dir.path(),
            &server.url,
        );
        let services: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        for binary in binaries {
            let service = services
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["binary"] == *binary)
                .unwrap_or_else(|| panic!("no {binary} in {services}"));
            assert_eq!(service["state"], "stopped", "{service}");
        }
    }
}

/// `--health-cmd`: its exit status is the health each beat carries (1: warning), the first
/// line it prints the message.
#[test]
fn the_agent_sends_the_health_its_command_tells() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let out = Command::new(VIGIL)
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .args(["agent", "--server", &server.url, "--host", "health-host"])
        .args(["--binary", "worker", "--report-interval", "0.2"])
        .args(["--health-cmd", "echo; echo 'disk 91 %'; exit 1"])
        .args(["--", "sleep", "0.7"])
        .env("VIGIL_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed = vigil(
        &["service", "list", "--host", "health-host", "--json"],
        dir.path(),
        &server.url,
    );
    let services: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(services[0]["health"], "warning", "{services}");
    assert_eq!(services[0]["health_message"], "disk 91 %", "{services}");
}

/// `--binary` repeated: one service per binary on the host, their beats in one batch per tick
/// (a `ReporterGroup`), while the command runs; a binary given twice is refused.
#[test]
fn the_agent_heartbeats_several_binaries_of_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let agent = |binaries: &[&str], command: &str| {
        let mut args = vec!["agent", "--server", &server.url, "--host", "multi-host"];
        for binary in binaries {
            args.extend(["--binary", binary]);
        }
        args.extend(["--report-interval", "0.2", "--", "sh", "-c", command]);
        Command::new(VIGIL)
            .args(&args)
            .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
            .env("VIGIL_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = agent(&["cinder-volume", "cinder-backup", "cinder-volume"], "true");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--binary cinder-volume is given twice"),
        "{}",
        text(&out.stderr)
    );

    let binaries = ["cinder-volume", "cinder-backup", "cinder-scheduler"];
    let out = agent(&binaries, "sleep 1.2; exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let listed = vigil(
        &["service", "list", "--host", "multi-host", "--json"],
        dir.path(),
        &server.url,
    );
    let services: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let services = services.as_array().unwrap();
    assert_eq!(services.len(), 3, "{services:?}");
    for binary in binaries {
        let service = services
            .iter()
            .find(|s| s["binary"] == binary)
            .unwrap_or_else(|| panic!("no {binary} in {services:?}"));
        assert!(service["report_count"].as_i64().unwrap() >= 2, "{service}");
        assert_eq!(service["report_interval"], 0.2, "{service}");
    }
    wait_until("all three go down", Duration::from_secs(10), || {
        let listed = vigil(
            &[
                "service",
                "list",
                "--host",
                "multi-host",
                "--state",
                "down",
                "--json",
            ],
            dir.path(),
            &server.url,
        );
        serde_json::from_slice::<serde_json::Value>(&listed.stdout)
            .map(|v| v.as_array().is_some_and(|a| a.len() == 3))
            .unwrap_or(false)
    });
}

#[test]
fn the_demo_shows_a_service_going_down_and_cleans_up() {
    let out = Command::new(VIGIL)
        .args([
            "demo",
            "--stop-after",
            "1",
            "--service-down-time",
            "2",
            "--duration",
            "6",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // It starts clean: the first line is the dashboard's address, and stderr has only the
    // demo's note that a 2 s service_down_time is short for its 1 s beats, no log line of the
    // server.
    assert!(
        stdout.starts_with("dashboard: http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("\nvigil demo at"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.lines().all(|l| l.starts_with("vigil demo: ")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("WARN"),
        "{stderr}"
    );
    let last_table = stdout.rsplit("vigil demo at").next().unwrap();
    assert_eq!(last_table.matches("| down ").count(), 1, "{stdout}");
    assert_eq!(last_table.matches("| up ").count(), 11, "{stdout}");
    assert!(stdout.contains("temporary database was removed"));
}

/// A CA and a certificate it signed for 127.0.0.1, written as `ca.pem`, `cert.pem` and
/// `key.pem` into `dir`.
fn tls_files(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// The quick start over TLS, as an operator runs it: a server with `--tls-cert`, the agent
/// and the CLI with `--ca-file`; without it the CLI refuses the unknown certificate. A real
/// SIGHUP to the process reloads the certificate and the server keeps running.
#[test]
fn the_cli_and_the_agent_speak_tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path());
    let data = dir.path().join("data");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let ca = dir.path().join("ca.pem");
    let server = ServerProcess::start(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = server.url.replace("http://", "https://");
    let mut agent = Command::new(VIGIL)
        .args([
            "agent", "--server", &url, "--host", "tls-host", "--binary", "worker",
        ])
        .args([
            "--report-interval",
            "0.2",
            "--ca-file",
            ca.to_str().unwrap(),
        ])
        .env("VIGIL_AGENT_TOKEN", crate::AGENT_TOKEN)
        .env("VIGIL_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let list = |with_ca: bool| {
        let mut command = Command::new(VIGIL);
        command
            .args(["service", "list", "--json", "--server", &url, "--data-dir"])
            .arg(&data);
        if with_ca {
            command.arg("--ca-file").arg(&ca);
        }
        command.env_remove("VIGIL_CA_FILE").output().unwrap()
    };
    wait_until(
        "the agent's service up over https",
        Duration::from_secs(15),
        || {
            let out = list(true);
            out.status.success() && text(&out.stdout).contains("\"state\": \"up\"")
        },
    );
    let refused = list(false);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("cannot reach vigil server"));
    // SIGHUP: the certificate is read again; the server stays up and keeps answering.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    let out = list(true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = agent.kill();
    let _ = agent.wait();
}
