//! `GET /openapi.json` against the built server: every documented operation is routed, and
//! schemathesis (the real one, from PyPI, in `./.venv`) drives every operation with generated
//! positive and negative requests and checks that the server never answers 5xx, answers only
//! the documented statuses, content types and bodies, and accepts no request the document
//! forbids.
//!
//! Outside CI the schemathesis test skips with a notice when schemathesis is missing; under CI
//! (`CI=true`) it fails. `scripts/test` installs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{register, ServerProcess};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const TOKEN: &str = "openapi-test-admin-token-0123456789";

/// Fewest requests the runs must send; they send about 3,400.
const MIN_REQUESTS: usize = 2000;

/// Checks every request's answer must pass: no 5xx, only documented statuses, content types
/// and bodies, and no request that breaks the document accepted (`negative_data_rejection`:
/// it found that a JSON array was taken for a body). Not `positive_data_acceptance`: JSON
/// Schema's `date-time` format is an annotation, so schemathesis takes `"sent_at": ""` for
/// valid, which the server rightly refuses.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,negative_data_rejection";

/// Seed of the runs under CI, so that a red CI is a regression and can be replayed, not a new
/// corner the fuzzer happened on that day. Outside CI each run takes a fresh seed (printed in
/// its output) to keep exploring; `VIGIL_SCHEMATHESIS_SEED` fixes it anywhere.
const CI_SEED: &str = "274108784140914622792569127126771114634";

fn seed() -> Option<String> {
    std::env::var("VIGIL_SCHEMATHESIS_SEED")
        .ok()
        .or_else(|| under_ci().then(|| CI_SEED.to_owned()))
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn get_json(url: &str) -> Value {
    runtime().block_on(async {
        let response = reqwest::get(url).await.expect("GET");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    })
}

/// Every (method, path) of the document, with `{id}` as it is written.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// The document the server serves names every route and each route it names is served: a
/// request to each documented operation is never answered `not_found` (no such endpoint) nor
/// `method_not_allowed`.
#[test]
fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--admin-token", TOKEN]);
    register(&server.url, "node-1", "cinder-volume");
    let doc = get_json(&format!("{}/openapi.json", server.url));
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    for needle in [
        "POST /v1/services",
        "GET /v1/services",
        "GET /v1/services/{id}",
        "PATCH /v1/services/{id}",
        "DELETE /v1/services/{id}",
        "POST /v1/services/{id}/heartbeat",
        "POST /v1/heartbeats",
        "GET /v1/services/{id}/events",
        "GET /v1/events",
        "GET /v1/events/stream",
        "GET /v1/services/{id}/diagnosis",
        "GET /healthz",
        "GET /readyz",
        "GET /openapi.json",
    ] {
        let (method, path) = needle.split_once(' ').unwrap();
        assert!(
            ops.contains(&(method.to_owned(), path.to_owned())),
            "{needle} is not in the document"
        );
    }
    runtime().block_on(async {
        let client = reqwest::Client::new();
        for (method, path) in &ops {
            let url = format!("{}{}", server.url, path.replace("{id}", "1"));
            let method: reqwest::Method = method.parse().unwrap();
            let request = client
                .request(method.clone(), &url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(if method == reqwest::Method::PATCH {
                    r#"{"disabled": false}"#
                } else {
                    ""
                });
            // The stream answers its head at once; the body never ends, so it is not read.
            let response = tokio::time::timeout(Duration::from_secs(10), request.send())
                .await
                .unwrap_or_else(|_| panic!("{method} {path}: no answer"))
                .unwrap();
            let status = response.status();
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if kind.starts_with("text/event-stream") {
                assert_eq!(status, 200, "{method} {path}");
                continue;
            }
            let body = response.text().await.unwrap();
            // Our "no such endpoint" answers are JSON error bodies; /metrics is text, whose
            // labels may say not_found of heartbeats.
            let error_code = kind
                .starts_with("application/json")
                .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            assert!(
                !matches!(
                    error_code.as_deref(),
                    Some("not_found" | "method_not_allowed")
                ),
                "{method} {path} is documented but not routed: {status} {body}"
            );
            assert!(
                status.is_success() || status.is_client_error(),
                "{method} {path}: {status} {body}"
            );
        }
    });
}

/// The document of a server whose reads need a token says so, and needs no token itself.
#[test]
fn without_anonymous_reads_the_document_asks_for_the_token_on_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(
        dir.path(),
        &["--admin-token", TOKEN, "--anonymous-read", "false"],
    );
    let doc = get_json(&format!("{}/openapi.json", server.url));
    assert_eq!(
        doc["paths"]["/v1/services"]["get"]["security"],
        serde_json::json!([{"token": []}])
    );
    // Registration needs a token too, by default (`auth.open_registration` false).
    assert_eq!(
        doc["paths"]["/v1/services"]["post"]["security"],
        serde_json::json!([{"token": []}])
    );
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([{}])
    );
}

/// The `schemathesis` executable: `VIGIL_SCHEMATHESIS_BIN`, else `<workspace>/.venv/bin/
/// schemathesis`. Missing, it fails the test under CI and skips it elsewhere.
fn schemathesis() -> Option<PathBuf> {
    let path = match std::env::var_os("VIGIL_SCHEMATHESIS_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(REPO).join(".venv/bin/schemathesis"),
    };
    let works = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        return Some(path);
    }
    assert!(
        !under_ci(),
        "schemathesis is required under CI ({}); run scripts/test, which installs it",
        path.display()
    );
    eprintln!(
        "notice: skipping the schemathesis run: no {} (scripts/test installs it)",
        path.display()
    );
    None
}

/// What a run's NDJSON report holds: requests sent, operations they went to, failed checks.
struct Report {
    requests: usize,
    operations: BTreeSet<String>,
    failures: Vec<String>,
}

fn read_report(dir: &Path) -> Report {
    let mut report = Report {
        requests: 0,
        operations: BTreeSet::new(),
        failures: Vec::new(),
    };
    for file in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let Some(scenario) = event.get("ScenarioFinished") else {
                continue;
            };
            let recorder = &scenario["recorder"];
            if let Some(label) = recorder["label"].as_str() {
                report.operations.insert(label.to_owned());
            }
            report.requests += recorder["interactions"].as_object().map_or(0, |i| i.len());
            for checks in recorder["checks"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
            {
                for check in checks.as_array().into_iter().flatten() {
                    if check["status"] != "success" && check["status"] != "skip" {
                        report.failures.push(check.to_string());
                    }
                }
            }
        }
    }
    report
}

/// Every operation, positive and negative generated requests (`--mode all`), through all of
/// schemathesis's phases, with the admin token (so the admin operations get past 401), on a
/// server that has services and a history (`registered` and `down` events) to read and stream;
/// then a short run without the token on a server whose reads need it.
#[test]
fn schemathesis_finds_nothing() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = ServerProcess::start(&data, &["--admin-token", TOKEN]);
    for host in ["node-1", "node-2", "node-3"] {
        register(&server.url, host, "cinder-volume");
    }
    // `service_down_time` is 1 s: wait for their `down` events, so the stream has some to send.
    let start = Instant::now();
    loop {
        let events = get_json(&format!("{}/v1/events?kind=down", server.url));
        if events["events"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no down events");
        std::thread::sleep(Duration::from_millis(100));
    }
    let doc = get_json(&format!("{}/openapi.json", server.url));

    // The event stream never ends by design (a comment every 15 s keeps it open). Schemathesis
    // reads an event stream until its request timeout and then judges what it received, so the
    // stream, and only it, gets a short timeout: each of its cases costs half a second instead
    // of the 10 s every other operation may take. The same timeout bounds the wait for the
    // stream's head (a few milliseconds here); should a loaded machine stall past it, the
    // request is retried rather than counted as a failure of the server.
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[[operations]]\ninclude-path = \"/v1/events/stream\"\nrequest-timeout = 0.5\n\
         request-retries = 2\n",
    )
    .unwrap();
    let run = |url: &str, token: Option<&str>, name: &str, extra: &[&str]| {
        let reports = dir.path().join(name);
        let mut command = Command::new(&schemathesis);
        command
            .arg("--config-file")
            .arg(&config)
            .args(["run", &format!("{url}/openapi.json")]);
        if let Some(token) = token {
            command.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(seed) = seed() {
            command.args(["--seed", &seed]);
        }
        let out = command
            .args(["--checks", CHECKS])
            .args(["--mode", "all"])
            .args(["--request-timeout", "10", "--continue-on-failure"])
            .args(["--report", "ndjson", "--report-dir"])
            .arg(&reports)
            .args(extra)
            .env("NO_COLOR", "1")
            .current_dir(dir.path())
            .output()
            .expect("run schemathesis");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "schemathesis found failures ({:?}):\n{stdout}\n{stderr}",
            out.status
        );
        (read_report(&reports), stdout)
    };
    let (mut report, stdout) = run(
        &server.url,
        Some(TOKEN),
        "reports",
        &["--max-examples", "150"],
    );
    // Schemathesis leaves out the operation that serves the document it loaded unless it is
    // asked for by name: a run of its own.
    let (own, _) = run(
        &server.url,
        Some(TOKEN),
        "reports-openapi",
        &["--max-examples", "20", "--include-path", "/openapi.json"],
    );
    // A short run without a token against a server whose reads need it: every read and admin
    // call is refused, with the documented 401.
    let closed_dir = dir.path().join("closed");
    std::fs::create_dir(&closed_dir).unwrap();
    let closed = ServerProcess::start(
        &closed_dir,
        &["--admin-token", TOKEN, "--anonymous-read", "false"],
    );
    let (refused, _) = run(
        &closed.url,
        None,
        "reports-closed",
        &["--max-examples", "10"],
    );
    for other in [own, refused] {
        report.requests += other.requests;
        report.operations.extend(other.operations);
        report.failures.extend(other.failures);
    }
    eprintln!(
        "schemathesis: {} requests to {} operations, {} failed checks",
        report.requests,
        report.operations.len(),
        report.failures.len()
    );
    assert!(
        report.failures.is_empty(),
        "{:?}\n{stdout}",
        report.failures
    );
    assert!(
        report.requests >= MIN_REQUESTS,
        "only {} requests:\n{stdout}",
        report.requests
    );
    for (method, path) in operations(&doc) {
        let label = format!("{method} {path}");
        assert!(
            report.operations.contains(&label),
            "{label} was not tested: {:?}",
            report.operations
        );
    }
}

/// Found by schemathesis (its `negative_data_rejection` check, now part of [`CHECKS`]): serde reads a struct from an
/// array of its fields, so `[null, null]` was a heartbeat and `["h", "b"]` a registration.
/// Every body of the API is an object; anything else is 400 `invalid_json`.
#[test]
fn a_body_that_is_not_an_object_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--admin-token", TOKEN]);
    register(&server.url, "node-1", "cinder-volume");
    runtime().block_on(async {
        let client = reqwest::Client::new();
        for (method, path, body) in [
            ("POST", "/v1/services/1/heartbeat", "[null, null]"),
            ("POST", "/v1/services/1/heartbeat", " []"),
            ("POST", "/v1/services", r#"["node-2", "cinder-backup"]"#),
            ("POST", "/v1/heartbeats", "[[]]"),
            ("PATCH", "/v1/services/1", "[true]"),
            ("POST", "/v1/services", "null"),
            ("POST", "/v1/services/1/heartbeat", "\"x\""),
        ] {
            let response = client
                .request(method.parse().unwrap(), format!("{}{path}", server.url))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap();
            assert_eq!(status, 400, "{method} {path} {body}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_json", "{answer}");
        }
        // Objects and empty bodies are still taken.
        for (path, body) in [
            ("/v1/services/1/heartbeat", ""),
            ("/v1/services/1/heartbeat", " {}"),
        ] {
            let response = client
                .post(format!("{}{path}", server.url))
                .bearer_auth(crate::AGENT_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path} {body:?}");
        }
        let list: Value = client
            .get(format!("{}/v1/services", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["services"].as_array().unwrap().len(), 1, "{list}");
    });
}
