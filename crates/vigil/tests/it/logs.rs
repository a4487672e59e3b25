//! Logs of `vigil server`: `--log-format json` writes one JSON object per line with the request
//! span; `VIGIL_LOG` and `RUST_LOG` choose the lines (VIGIL_LOG first); a format that does not
//! exist is a usage error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Runs `vigil server` with `extra` flags and `env`, calls `with` with its URL once it
/// listens, stops it with SIGTERM and returns every line it wrote to stderr.
fn server_logs(extra: &[&str], env: &[(&str, &str)], with: impl FnOnce(&str)) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(VIGIL);
    command
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--agent-token", crate::AGENT_TOKEN])
        .args(["--service-down-time", "1", "--admin-token", "t"])
        .args(extra)
        .env_remove("VIGIL_LOG")
        .env_remove("RUST_LOG")
        .env_remove("VIGIL_LOG_FORMAT")
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start vigil server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let addr = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_string)
                .or_else(|| {
                    let json: Value = serde_json::from_str(&line).ok()?;
                    Some(json["addr"].as_str()?.to_string())
                });
            if let Some(addr) = addr {
                let _ = tx.send(addr);
            }
            lines.push(line);
        }
        lines
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server printed no address; it wrote:\n{}",
                reader.join().unwrap().join("\n")
            );
        }
    };
    let url = format!("http://{addr}");
    // Answering requests: its signal handlers are in place for the SIGTERM below.
    let ready = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        get_status(&format!("{url}/healthz")) == Some(200)
    });
    assert!(ready, "the server never answered /healthz");
    std::thread::sleep(Duration::from_millis(100));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| with(&url)));
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    if let Err(panic) = outcome {
        eprintln!("server log:\n{}", lines.join("\n"));
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "{status}:\n{}", lines.join("\n"));
    lines
}

fn get_status(url: &str) -> Option<u16> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { Some(reqwest::get(url).await.ok()?.status().as_u16()) })
}

/// POSTs `body` to `url`, returning the status.
fn post(url: &str, body: Value) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(url)
            .bearer_auth(crate::AGENT_TOKEN)
            .header("x-request-id", "test-request-7")
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_span() {
    let lines = server_logs(
        &["--log-format", "json"],
        &[("VIGIL_LOG", "info,vigil_server::api::metrics=debug")],
        |url| {
            // A report_interval longer than service_down_time: the server warns while it
            // registers, inside the request's span.
            let (status, service) = post(
                &format!("{url}/v1/services"),
                serde_json::json!({"host": "node-1", "binary": "cinder-volume", "report_interval": 90}),
            );
            assert_eq!(status, 201, "{service}");
            let id = service["id"].as_i64().unwrap();
            let (status, _) = post(
                &format!("{url}/v1/services/{id}/heartbeat"),
                serde_json::json!({}),
            );
            assert_eq!(status, 200);
        },
    );
    let objects: Vec<Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object: {line}: {e}"))
        })
        .collect();
    for object in &objects {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(object[field].is_string(), "no {field} in {object}");
        }
    }
    assert!(objects
        .iter()
        .any(|o| o["message"] == "vigil server listening" && o["level"] == "INFO"));
    // The doctor's complaint about the registration carries the request's span.
    let warning = objects
        .iter()
        .find(|o| o["level"] == "ERROR" && o["span"]["route"] == "/v1/services")
        .unwrap_or_else(|| {
            panic!(
                "no warning in the registration's span:\n{}",
                lines.join("\n")
            )
        });
    assert_eq!(warning["span"]["name"], "request");
    assert_eq!(warning["span"]["request_id"], "test-request-7");
    assert_eq!(warning["span"]["method"], "POST");
    // The heartbeat's answer: its route template and the service id.
    let answered = objects
        .iter()
        .find(|o| {
            o["message"] == "request answered"
                && o["span"]["route"] == "/v1/services/{id}/heartbeat"
        })
        .unwrap_or_else(|| panic!("no heartbeat answered:\n{}", lines.join("\n")));
    assert_eq!(answered["status"], 200);
    assert_eq!(answered["span"]["service_id"], "1");
    assert_eq!(answered["level"], "DEBUG");
}

#[test]
fn rust_log_is_honoured_and_vigil_log_wins() {
    let has = |lines: &[String], needle: &str| lines.iter().any(|l| l.contains(needle));
    // RUST_LOG alone: its debug lines are written.
    let lines = server_logs(&[], &[("RUST_LOG", "info,vigil_server=debug")], |_| {});
    assert!(has(&lines, "connection limits"), "{}", lines.join("\n"));
    // Both: VIGIL_LOG's filter, not RUST_LOG's.
    let lines = server_logs(
        &[],
        &[
            ("RUST_LOG", "info,vigil_server=debug"),
            ("VIGIL_LOG", "info"),
        ],
        |_| {},
    );
    assert!(!has(&lines, "connection limits"), "{}", lines.join("\n"));
    assert!(has(&lines, "vigil server stopped"), "{}", lines.join("\n"));
    // Text by default: not JSON.
    assert!(lines
        .iter()
        .all(|l| serde_json::from_str::<Value>(l).is_err()));
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let out = Command::new(VIGIL)
        .args(["server", "--log-format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'yaml' for '--log-format"),
        "{stderr}"
    );
    assert!(stderr.contains("text, json"), "{stderr}");
    // The same in the environment variable, and in the file (a configuration error, exit 1).
    let out = Command::new(VIGIL)
        .args(["server"])
        .env("VIGIL_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vigil.toml");
    std::fs::write(&file, "log_format = \"yaml\"\n").unwrap();
    let out = Command::new(VIGIL)
        .args(["server", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown variant `yaml`"), "{stderr}");
}
