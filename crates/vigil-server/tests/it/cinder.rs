//! The Cinder-compatible API: the real `cinder` CLI (python-cinderclient 9.10, installed by
//! `scripts/test`) against the real server, and the HTTP details the CLI does not show.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vigil_server::store::{EventFilter, EventKind, SqliteStore, Store};

use crate::harness::{eventually, temp_dir, Backend, TestServer, TOKEN};

/// Longest any one `cinder` run may take (a cold Python start is about a second).
const CLI_LIMIT: Duration = Duration::from_secs(30);

/// The `cinder` executable: `VIGIL_CINDER_BIN`, else `<workspace>/.venv/bin/cinder`. Missing,
/// it fails the test under CI and skips it (with a notice) elsewhere.
fn cinder_bin() -> Option<PathBuf> {
    let path = match std::env::var_os("VIGIL_CINDER_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/cinder"),
    };
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the cinder CLI is missing at {}; run scripts/test, which installs it",
        path.display()
    );
    eprintln!(
        "notice: skipping a cinder CLI test: no cinder at {} (run scripts/test to install it)",
        path.display()
    );
    None
}

/// What one `cinder` run printed.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cinder` with the `noauth` plugin against the server's Cinder-compatible API, the
/// admin token as project id. `OS_*` and `CINDER_*` variables are removed from the child so
/// that the developer's cloud settings cannot leak in.
async fn cinder(bin: &PathBuf, server: &TestServer, project: &str, args: &[&str]) -> Output {
    let endpoint = format!("{}/v3", server.cinder_url.as_ref().unwrap());
    let mut command = tokio::process::Command::new(bin);
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy().to_ascii_uppercase();
        if name_text.starts_with("OS_") || name_text.starts_with("CINDER_") {
            command.env_remove(&name);
        }
    }
    command
        .args(["--os-auth-type", "noauth", "--os-user-id", "admin"])
        .args(["--os-project-id", project, "--os-endpoint", &endpoint])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("start the cinder CLI");
    let output = tokio::time::timeout(CLI_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("cinder {args:?} took longer than {CLI_LIMIT:?}"))
        .expect("cinder CLI output");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `cinder` as the admin and expects success with a silent stderr.
async fn cinder_ok(bin: &PathBuf, server: &TestServer, args: &[&str]) -> Table {
    let out = cinder(bin, server, TOKEN, args).await;
    assert!(
        out.ok,
        "cinder {args:?} failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.trim().is_empty(),
        "cinder {args:?} wrote to stderr:\n{}",
        out.stderr
    );
    Table::parse(&out.stdout)
}

/// A table as prettytable prints it.
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    rows: Vec<HashMap<String, String>>,
}

impl Table {
    fn parse(text: &str) -> Table {
        let mut lines = text
            .lines()
            .filter(|line| line.starts_with('|'))
            .map(|line| {
                line.trim_matches('|')
                    .split('|')
                    .map(|cell| cell.trim().to_string())
                    .collect::<Vec<_>>()
            });
        let columns = lines
            .next()
            .unwrap_or_else(|| panic!("no table in:\n{text}"));
        let rows = lines
            .map(|cells| columns.iter().cloned().zip(cells).collect())
            .collect();
        Table { columns, rows }
    }

    /// The row whose `Host` and `Binary` are these.
    fn row(&self, host: &str, binary: &str) -> &HashMap<String, String> {
        self.rows
            .iter()
            .find(|row| row["Host"] == host && row["Binary"] == binary)
            .unwrap_or_else(|| panic!("no row {host} {binary} in {self:?}"))
    }
}

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = temp_dir();
    let server = TestServer::start_with_cinder(Backend::Sqlite.config(dir.path())).await;
    (dir, server)
}

/// A service that keeps beating until the handle drops.
fn beating(server: &TestServer, host: &str, binary: &str) -> vigil_reporter::ReporterHandle {
    vigil_reporter::Reporter::builder(&server.url, host, binary)
        .report_interval(Duration::from_millis(200))
        .start()
        .expect("reporter starts")
}

async fn vigil_state(server: &TestServer, id: i64) -> String {
    server.service(id).await["state"]
        .as_str()
        .unwrap()
        .to_string()
}

const BASE_COLUMNS: [&str; 6] = ["Binary", "Host", "Zone", "Status", "State", "Updated_at"];

fn columns(extra: &[&str]) -> Vec<String> {
    BASE_COLUMNS
        .iter()
        .chain(extra)
        .map(|c| c.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinder_service_list_at_each_microversion() {
    let Some(bin) = cinder_bin() else { return };
    let (_dir, server) = server().await;
    let volume = beating(&server, "node-1@lvm", "cinder-volume");
    let stopped = server.register("node-2", "cinder-scheduler").await;
    server.beat(stopped).await;
    eventually("reporter beating", Duration::from_secs(10), || async {
        volume.report_count() >= 2
    })
    .await;
    eventually(
        "the scheduler that stopped beating is down",
        Duration::from_secs(10),
        || async { vigil_state(&server, stopped).await == "down" },
    )
    .await;

    let table = cinder_ok(&bin, &server, &["service-list"]).await;
    assert_eq!(
        table.columns,
        columns(&["Cluster", "Disabled Reason", "Backend State"]),
        "the client negotiates 3.71 by default"
    );
    assert_eq!(table.rows.len(), 2, "{table:?}");
    let up = table.row("node-1@lvm", "cinder-volume");
    assert_eq!(up["State"], "up");
    assert_eq!(up["Status"], "enabled");
    assert_eq!(up["Zone"], "nova");
    assert_eq!(up["Backend State"], "up");
    assert_eq!(up["Disabled Reason"], "-");
    let updated_at = &up["Updated_at"];
    assert!(
        updated_at.len() == 26
            && updated_at.as_bytes()[10] == b'T'
            && updated_at[19..].starts_with('.'),
        "Cinder's time format, no zone: {updated_at}"
    );
    let down = table.row("node-2", "cinder-scheduler");
    assert_eq!(down["State"], "down");
    assert_eq!(
        down["Backend State"], "",
        "only cinder-volume rows have one"
    );

    for (version, extra) in [
        ("3.0", vec!["Disabled Reason"]),
        ("3.7", vec!["Cluster", "Disabled Reason"]),
        ("3.49", vec!["Cluster", "Disabled Reason", "Backend State"]),
    ] {
        let table = cinder_ok(
            &bin,
            &server,
            &["--os-volume-api-version", version, "service-list"],
        )
        .await;
        assert_eq!(table.columns, columns(&extra), "at {version}");
        assert_eq!(table.rows.len(), 2, "at {version}: {table:?}");
        assert_eq!(table.row("node-2", "cinder-scheduler")["State"], "down");
    }

    let table = cinder_ok(&bin, &server, &["service-list", "--host", "node-1@lvm"]).await;
    assert_eq!(table.rows.len(), 1, "{table:?}");
    assert_eq!(table.rows[0]["Binary"], "cinder-volume");
    let table = cinder_ok(
        &bin,
        &server,
        &["service-list", "--binary", "cinder-scheduler"],
    )
    .await;
    assert_eq!(table.rows.len(), 1, "{table:?}");
    assert_eq!(table.rows[0]["Host"], "node-2");
    volume.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cinder_service_disable_and_enable() {
    let Some(bin) = cinder_bin() else { return };
    let (_dir, server) = server().await;
    let id = server.register("node-1@lvm", "cinder-volume").await;
    let (host, binary) = ("node-1@lvm", "cinder-volume");

    let table = cinder_ok(
        &bin,
        &server,
        &["service-disable", host, binary, "--reason", "disk swap"],
    )
    .await;
    assert_eq!(
        table.columns,
        ["Host", "Binary", "Status", "Disabled Reason"]
    );
    assert_eq!(table.row(host, binary)["Status"], "disabled");
    assert_eq!(table.row(host, binary)["Disabled Reason"], "disk swap");
    let body = server.service(id).await;
    assert_eq!(body["disabled"], true, "{body}");
    assert_eq!(body["disabled_reason"], "disk swap", "{body}");
    let table = cinder_ok(&bin, &server, &["service-list"]).await;
    assert_eq!(table.row(host, binary)["Status"], "disabled");
    assert_eq!(table.row(host, binary)["Disabled Reason"], "disk swap");

    let table = cinder_ok(&bin, &server, &["service-enable", host, binary]).await;
    assert_eq!(table.columns, ["Host", "Binary", "Status"]);
    assert_eq!(table.row(host, binary)["Status"], "enabled");
    let body = server.service(id).await;
    assert_eq!(body["disabled"], false, "{body}");
    assert_eq!(
        body["disabled_reason"],
        Value::Null,
        "enable clears the reason"
    );

    let table = cinder_ok(&bin, &server, &["service-disable", host, binary]).await;
    assert_eq!(table.row(host, binary)["Status"], "disabled");
    let table = cinder_ok(&bin, &server, &["service-list"]).await;
    assert_eq!(table.row(host, binary)["Status"], "disabled");
    assert_eq!(table.row(host, binary)["Disabled Reason"], "-");
    assert_eq!(server.service(id).await["disabled"], true);

    let refused = cinder(
        &bin,
        &server,
        "not-the-token",
        &["service-enable", host, binary],
    )
    .await;
    assert!(!refused.ok, "a wrong token is refused: {}", refused.stdout);
    assert!(refused.stderr.contains("HTTP 401"), "{}", refused.stderr);
    let missing = cinder(&bin, &server, TOKEN, &["service-enable", "nowhere", binary]).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains("Service cinder-volume could not be found on host nowhere. (HTTP 404)"),
        "{}",
        missing.stderr
    );
    assert_eq!(server.service(id).await["disabled"], true);
}

/// A request to the Cinder-compatible API with optional token, microversion and body.
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    version: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let url = format!("{}{}", server.cinder_url.as_ref().unwrap(), path);
    let mut request = server.http.request(method, url);
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    if let Some(version) = version {
        request = request.header("OpenStack-API-Version", version);
    }
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("cinder api answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
    };
    (status, headers, value)
}

async fn get(
    server: &TestServer,
    path: &str,
    version: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    call(server, Method::GET, path, Some("any"), version, None).await
}

async fn put(server: &TestServer, action: &str, body: &str) -> (StatusCode, Value) {
    let path = format!("/v3/os-services/{action}");
    let (status, _, value) = call(server, Method::PUT, &path, Some(TOKEN), None, Some(body)).await;
    (status, value)
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

/// `{"<name>": {"code": <status>, "message": ...}}`; returns the message.
fn fault(status: StatusCode, body: &Value, want: StatusCode, name: &str) -> String {
    assert_eq!(status, want, "{body}");
    assert_eq!(body[name]["code"], want.as_u16(), "{body}");
    body[name]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

#[tokio::test]
async fn version_discovery_and_microversion_headers() {
    let (_dir, server) = server().await;
    let base = server.cinder_url.clone().unwrap();
    for (path, want) in [
        ("/", StatusCode::MULTIPLE_CHOICES),
        ("/v3", StatusCode::OK),
        ("/v3/", StatusCode::OK),
    ] {
        let (status, headers, body) = call(&server, Method::GET, path, None, None, None).await;
        assert_eq!(status, want, "{path}: {body}");
        let v3 = &body["versions"][0];
        assert_eq!(v3["id"], "v3.0", "{path}");
        assert_eq!(v3["status"], "CURRENT");
        assert_eq!(v3["version"], "3.71");
        assert_eq!(v3["min_version"], "3.0");
        let links = v3["links"].as_array().unwrap();
        assert!(
            links.contains(&json!({"rel": "self", "href": format!("{base}/v3/")})),
            "{path}: {links:?}"
        );
        assert!(header(&headers, "x-openstack-request-id").starts_with("req-"));
    }

    let (status, headers, _) = get(&server, "/v3/os-services", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "openstack-api-version"), "volume 3.0");
    assert_eq!(header(&headers, "vary"), "OpenStack-API-Version");
    let request_id = header(&headers, "x-openstack-request-id");
    assert_eq!(request_id.len(), 40, "req- and a UUID: {request_id}");
    assert_eq!(header(&headers, "x-compute-request-id"), request_id);
    let (_, again, _) = get(&server, "/v3/os-services", Some("volume 3.49")).await;
    assert_eq!(header(&again, "openstack-api-version"), "volume 3.49");
    assert_ne!(header(&again, "x-openstack-request-id"), request_id);

    for (version, want) in [
        ("volume 3.72", StatusCode::NOT_ACCEPTABLE),
        ("volume 2.0", StatusCode::NOT_ACCEPTABLE),
        ("volume 3.x", StatusCode::BAD_REQUEST),
    ] {
        let (status, headers, body) = get(&server, "/v3/os-services", Some(version)).await;
        let name = if want == StatusCode::BAD_REQUEST {
            "badRequest"
        } else {
            "computeFault"
        };
        let message = fault(status, &body, want, name);
        assert!(
            message.contains(version.trim_start_matches("volume ")),
            "{message}"
        );
        assert!(headers.contains_key("x-openstack-request-id"));
    }
    let (status, headers, body) = get(&server, "/v3/nothing-here", None).await;
    fault(status, &body, StatusCode::NOT_FOUND, "itemNotFound");
    assert!(headers.contains_key("x-compute-request-id"));
}

#[tokio::test]
async fn list_rows_follow_the_microversion() {
    let (_dir, server) = server().await;
    let volume = server.register("node-1@lvm", "cinder-volume").await;
    server.register("node-1", "cinder-scheduler").await;
    server.beat(volume).await;

    let (_, _, body) = get(&server, "/v3/os-services", Some("volume 3.0")).await;
    let rows = body["services"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{body}");
    let vol = &rows[0];
    assert_eq!(vol["binary"], "cinder-volume");
    assert_eq!(vol["state"], "up");
    assert_eq!(vol["status"], "enabled");
    assert_eq!(vol["zone"], "nova");
    assert_eq!(vol["disabled_reason"], Value::Null);
    assert_eq!(vol["replication_status"], "disabled");
    assert_eq!(vol["active_backend_id"], Value::Null);
    assert_eq!(vol["frozen"], false);
    assert!(vol.get("active_backend_id").is_some());
    assert!(
        vol.get("cluster").is_none() && vol.get("backend_state").is_none(),
        "{vol}"
    );
    let heartbeat = server.service(volume).await["updated_at"]
        .as_str()
        .unwrap()
        .trim_end_matches('Z')
        .to_string();
    assert_eq!(
        vol["updated_at"], heartbeat,
        "the heartbeat time, without a zone"
    );
    let scheduler = &rows[1];
    for field in [
        "replication_status",
        "active_backend_id",
        "frozen",
        "backend_state",
    ] {
        assert!(scheduler.get(field).is_none(), "{field} in {scheduler}");
    }
    assert_eq!(scheduler["updated_at"], Value::Null, "never beat");

    let (_, _, body) = get(&server, "/v3/os-services", Some("volume 3.7")).await;
    assert!(
        body["services"][0]
            .get("cluster")
            .is_some_and(Value::is_null),
        "{body}"
    );
    assert!(body["services"][0].get("backend_state").is_none());
    let (_, _, body) = get(&server, "/v3/os-services", Some("volume 3.49")).await;
    assert_eq!(body["services"][0]["backend_state"], "up");
    assert!(body["services"][1].get("backend_state").is_none());

    for path in [
        "/v3/os-services?host=node-1@lvm",
        "/v3/os-services?host=node-1%40lvm",
        "/v3/some-project/os-services?host=node-1%40lvm&binary=cinder-volume",
    ] {
        let (status, _, body) = get(&server, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let rows = body["services"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{path}: {body}");
        assert_eq!(rows[0]["host"], "node-1@lvm");
    }
    let (_, _, body) = get(&server, "/v3/os-services?binary=cinder-scheduler", None).await;
    assert_eq!(body["services"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["services"][0]["host"], "node-1");

    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _) = put(
        &server,
        "disable",
        r#"{"host":"node-1@lvm","binary":"cinder-volume"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let modified = server.service(volume).await["modified_at"]
        .as_str()
        .unwrap()
        .trim_end_matches('Z')
        .to_string();
    assert!(modified > heartbeat);
    let (_, _, body) = get(&server, "/v3/os-services?host=node-1@lvm", None).await;
    assert_eq!(
        body["services"][0]["updated_at"], modified,
        "the admin change is later than the heartbeat"
    );
}

#[tokio::test]
async fn actions_answer_as_cinder_does() {
    let (_dir, server) = server().await;
    let id = server.register("node-1@lvm", "cinder-volume").await;

    let (status, body) = put(
        &server,
        "disable-log-reason",
        r#"{"host":"node-1@lvm","binary":"cinder-volume","disabled_reason":"maintenance"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"host": "node-1@lvm", "service": "", "binary": "cinder-volume",
               "status": "disabled", "disabled": true, "disabled_reason": "maintenance"})
    );
    let (status, body) = put(
        &server,
        "enable",
        r#"{"host":"node-1@lvm","binary":"cinder-volume"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"host": "node-1@lvm", "service": "", "binary": "cinder-volume",
               "status": "enabled", "disabled": false, "disabled_reason": null})
    );
    let (status, body) = put(
        &server,
        "disable",
        r#"{"host":"node-1@lvm","service":"cinder-volume"}"#,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the deprecated `service` key still names the binary"
    );
    assert_eq!(
        body,
        json!({"host": "node-1@lvm", "service": "cinder-volume", "binary": "",
               "status": "disabled", "disabled": true})
    );

    let (status, body) = put(
        &server,
        "enable",
        r#"{"host":"elsewhere","binary":"cinder-volume"}"#,
    )
    .await;
    assert_eq!(
        fault(status, &body, StatusCode::NOT_FOUND, "itemNotFound"),
        "Service cinder-volume could not be found on host elsewhere."
    );
    let long = "x".repeat(256);
    let bad_bodies = [
        format!(r#"{{"host":"node-1@lvm","binary":"cinder-volume","disabled_reason":"{long}"}}"#),
        r#"{"host":"node-1@lvm","binary":"cinder-volume","disabled_reason":" "}"#.to_string(),
        r#"{"host":"node-1@lvm","binary":"cinder-volume"}"#.to_string(),
        r#"{"binary":"cinder-volume","disabled_reason":"r"}"#.to_string(),
        r#"{"host":"node-1@lvm","disabled_reason":"r"}"#.to_string(),
        r#"{"host": "node-1@lvm", "#.to_string(),
        r#"{"host": 7, "binary":"cinder-volume","disabled_reason":"r"}"#.to_string(),
    ];
    for body in &bad_bodies {
        let (status, answer) = put(&server, "disable-log-reason", body).await;
        fault(status, &answer, StatusCode::BAD_REQUEST, "badRequest");
    }
    let (status, body) = put(&server, "reboot", "{}").await;
    fault(status, &body, StatusCode::BAD_REQUEST, "badRequest");
    let service = server.service(id).await;
    assert_eq!(service["disabled"], true);
    assert_eq!(
        service["disabled_reason"],
        Value::Null,
        "refused changes changed nothing"
    );

    for action in ["failover_host", "failover", "get-log", "set-log"] {
        let (status, body) = put(&server, action, r#"{"host":"node-1@lvm"}"#).await;
        let message = fault(status, &body, StatusCode::NOT_IMPLEMENTED, "notImplemented");
        assert!(message.contains("not supported"), "{action}: {message}");
    }
}

#[tokio::test]
async fn freeze_and_thaw_mark_every_service_of_the_host() {
    let (_dir, mut server) = server().await;
    let volume = server.register("node-1@lvm", "cinder-volume").await;
    let backup = server.register("node-1@lvm", "cinder-backup").await;
    let other = server.register("node-2@lvm", "cinder-volume").await;

    let (status, body) = put(&server, "freeze", r#"{"host":"node-1@lvm"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for id in [volume, backup] {
        assert_eq!(server.service(id).await["frozen"], true);
    }
    assert_eq!(server.service(other).await["frozen"], false);
    let (_, _, list) = get(&server, "/v3/os-services?binary=cinder-volume", None).await;
    assert_eq!(list["services"][0]["frozen"], true, "{list}");
    assert_eq!(list["services"][1]["frozen"], false, "{list}");

    let (status, body) = put(&server, "thaw", r#"{"host":"node-1@lvm"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for id in [volume, backup] {
        assert_eq!(server.service(id).await["frozen"], false);
    }
    let (status, body) = put(&server, "freeze", r#"{"host":"nowhere"}"#).await;
    fault(status, &body, StatusCode::BAD_REQUEST, "badRequest");
    let (status, body) = put(&server, "freeze", "{}").await;
    fault(status, &body, StatusCode::BAD_REQUEST, "badRequest");

    server.stop().await;
    let store = SqliteStore::connect(&server.config.database_url())
        .await
        .expect("open the stopped server's database");
    let events = store
        .list_events(&EventFilter {
            host: Some("node-1@lvm".into()),
            limit: 100,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    let mut kinds: Vec<(i64, &str)> = events
        .iter()
        .filter(|e| e.kind != EventKind::Registered)
        .map(|e| (e.service_id, e.kind.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (volume, "frozen"),
            (volume, "thawed"),
            (backup, "frozen"),
            (backup, "thawed")
        ],
        "one event per service and change"
    );
}

#[tokio::test]
async fn tokens_are_checked_unless_noauth() {
    let (_dir, server) = server().await;
    server.register("node-1@lvm", "cinder-volume").await;
    let enable = Some(r#"{"host":"node-1@lvm","binary":"cinder-volume"}"#);
    let path = "/v3/os-services/enable";

    let (status, _, body) = call(&server, Method::GET, "/v3/os-services", None, None, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reads are anonymous by default: {body}"
    );
    let (status, _, body) = call(&server, Method::PUT, path, None, None, enable).await;
    fault(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    for wrong in ["admin:wrong", "wrong", "test-admin-token-not"] {
        let (status, _, body) = call(&server, Method::PUT, path, Some(wrong), None, enable).await;
        fault(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let noauth_style = format!("admin:{TOKEN}");
    for good in [TOKEN, noauth_style.as_str()] {
        let (status, _, body) = call(&server, Method::PUT, path, Some(good), None, enable).await;
        assert_eq!(status, StatusCode::OK, "{good}: {body}");
    }
    let (status, _, _) = get(&server, "/v3/os-services", None).await;
    assert_eq!(status, StatusCode::OK, "any token reads");

    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.auth.anonymous_read = false;
    let closed = TestServer::start_with_cinder(config).await;
    let (status, _, body) = call(&closed, Method::GET, "/v3/os-services", None, None, None).await;
    fault(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // A token nobody holds is refused; the admin token (or a reader's) reads.
    let (status, _, body) = get(&closed, "/v3/os-services", None).await;
    fault(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _, body) = call(
        &closed,
        Method::GET,
        "/v3/os-services",
        Some(TOKEN),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the admin token reads: {body}");
    let (status, _, body) = call(&closed, Method::PUT, path, Some("any"), None, enable).await;
    fault(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.cinder_api.noauth = true;
    let open = TestServer::start_with_cinder(config).await;
    let id = open.register("node-1@lvm", "cinder-volume").await;
    let (status, _, body) = call(&open, Method::PUT, path, None, None, enable).await;
    assert_eq!(status, StatusCode::OK, "noauth: {body}");
    let (status, _, _) = call(&open, Method::GET, "/v3/os-services", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = open
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the Vigil API is unchanged: {body}");
}

#[tokio::test]
async fn a_busy_cinder_address_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.cinder_api.listen = Some(addr.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = vigil_server::serve(listener, config, std::future::pending::<()>())
        .await
        .expect_err("the cinder address is taken");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot listen on {addr} for the Cinder-compatible API:"
        )),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

/// With `auth.anonymous_read = false` the Vigil API's reads need the admin token (the only
/// token there is); `/healthz` and `/readyz` stay open for load balancers and supervisors.
#[tokio::test]
async fn vigil_reads_need_the_admin_token_unless_anonymous() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.auth.anonymous_read = false;
    let server = TestServer::start(config).await;
    let id = server.register("node-1", "cinder-volume").await;
    let reads = [
        "/v1/services".to_string(),
        format!("/v1/services/{id}"),
        format!("/v1/services/{id}/diagnosis"),
        format!("/v1/services/{id}/events"),
        "/v1/events".to_string(),
    ];
    for path in &reads {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}: {body}");
        let (status, body) = server.request(Method::GET, path, None, Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, body) = server.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    for open in ["/healthz", "/readyz"] {
        assert_eq!(server.get(open).await.0, StatusCode::OK, "{open}");
    }
    let (status, body) = server.beat(id).await;
    assert_eq!(status, StatusCode::OK, "heartbeats need no token: {body}");

    let dir = temp_dir();
    let open = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    assert_eq!(open.get("/v1/services").await.0, StatusCode::OK, "default");
}

/// The `openstack` executable (python-openstackclient, installed by `scripts/test`):
/// `VIGIL_OPENSTACK_BIN`, else `<workspace>/.venv/bin/openstack`. Missing, it fails the test
/// under CI and skips it (with a notice) elsewhere.
fn openstack_bin() -> Option<PathBuf> {
    let path = match std::env::var_os("VIGIL_OPENSTACK_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack"),
    };
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !crate::harness::under_ci(),
        "the openstack CLI is missing at {}; run scripts/test, which installs it",
        path.display()
    );
    eprintln!(
        "notice: skipping an openstack CLI test: no openstack at {} (run scripts/test to install it)",
        path.display()
    );
    None
}

/// The README's `openstack` command lines (section "OpenStack clients"), split into words as a
/// shell would: double quotes group, `"$TOKEN"` is the admin token, and the README's endpoint
/// `http://127.0.0.1:8776` is this server's Cinder-compatible listener.
fn readme_openstack_lines(server: &TestServer) -> Vec<Vec<String>> {
    let readme = include_str!("../../../../README.md");
    let endpoint = server.cinder_url.as_ref().unwrap();
    readme
        .lines()
        .filter(|line| line.starts_with("openstack "))
        .map(|line| {
            let mut words = Vec::new();
            let mut word = String::new();
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ' ' if !quoted => {
                        if !word.is_empty() {
                            words.push(std::mem::take(&mut word));
                        }
                    }
                    _ => word.push(c),
                }
            }
            assert!(!quoted, "unbalanced quotes in the README line {line}");
            if !word.is_empty() {
                words.push(word);
            }
            words
                .into_iter()
                .map(|w| {
                    w.replace("$TOKEN", TOKEN)
                        .replace("http://127.0.0.1:8776", endpoint)
                })
                .collect()
        })
        .collect()
}

/// Runs one README line (its first word is `openstack`) with the real client; `OS_*` variables
/// are removed so that the developer's cloud settings cannot leak in.
async fn openstack(bin: &PathBuf, words: &[String]) -> Output {
    let mut command = tokio::process::Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("OS_")
        {
            command.env_remove(&name);
        }
    }
    command
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("start the openstack CLI");
    let output = tokio::time::timeout(CLI_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{words:?} took longer than {CLI_LIMIT:?}"))
        .expect("openstack CLI output");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The README's `openstack` lines, exactly as written: a list without a token
/// (`--os-auth-type none`, reads are anonymous by default), a list with the admin token
/// (`admin_token`), and a disable with a reason, whose effect both lists and Vigil show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_openstack_lines_work() {
    let Some(bin) = openstack_bin() else { return };
    let (_dir, server) = server().await;
    let id = server.register("node1", "cinder-volume").await;
    let lines = readme_openstack_lines(&server);
    let find = |auth: &str, action: &str| -> Vec<String> {
        lines
            .iter()
            .find(|words| {
                words
                    .windows(2)
                    .any(|w| w[0] == "--os-auth-type" && w[1] == auth)
                    && words.join(" ").contains(action)
            })
            .unwrap_or_else(|| panic!("no README line with {auth} and {action:?} in {lines:?}"))
            .clone()
    };
    let anonymous_list = find("none", "volume service list");
    let admin_list = find("admin_token", "volume service list");
    let disable = find("admin_token", "volume service set --disable");
    assert_eq!(lines.len(), 3, "every README line is run here: {lines:?}");

    let run = |words: Vec<String>| {
        let bin = bin.clone();
        async move {
            let out = openstack(&bin, &words).await;
            assert!(out.ok, "{words:?} failed:\n{}\n{}", out.stdout, out.stderr);
            out.stdout
        }
    };
    for list in [&anonymous_list, &admin_list] {
        let table = Table::parse(&run(list.clone()).await);
        assert_eq!(
            table.columns,
            [
                "Binary",
                "Host",
                "Zone",
                "Status",
                "State",
                "Updated At",
                "Cluster",
                "Backend State"
            ],
            "the client negotiates a microversion of at least 3.49: {list:?}"
        );
        assert_eq!(table.row("node1", "cinder-volume")["Status"], "enabled");
    }
    run(disable).await;
    let service = server.service(id).await;
    assert_eq!(service["disabled"], true, "{service}");
    assert_eq!(service["disabled_reason"], "disk swap", "{service}");
    for list in [anonymous_list, admin_list] {
        let table = Table::parse(&run(list).await);
        assert_eq!(table.row("node1", "cinder-volume")["Status"], "disabled");
    }

    // Without the admin token a write is refused.
    let mut no_token = find("admin_token", "volume service set --disable");
    let at = no_token.iter().position(|w| w == "--os-token").unwrap();
    no_token.drain(at..at + 2);
    let auth = no_token.iter().position(|w| w == "admin_token").unwrap();
    no_token[auth] = "none".into();
    let refused = openstack(&bin, &no_token).await;
    assert!(!refused.ok, "a write without a token: {}", refused.stdout);
    // keystoneauth's `none` sends a placeholder token, which no token is: 401.
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    assert_eq!(server.service(id).await["disabled"], true);

    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.auth.anonymous_read = false;
    let closed = TestServer::start_with_cinder(config).await;
    closed.register("node1", "cinder-volume").await;
    let lines = readme_openstack_lines(&closed);
    // keystoneauth's `none` sends the placeholder token `notused`, which is no token: where
    // reads need one, the list is refused; the admin token's list works.
    let anonymous = lines
        .iter()
        .find(|w| w.contains(&"none".to_string()))
        .unwrap();
    let refused = openstack(&bin, anonymous).await;
    assert!(
        !refused.ok,
        "a closed read without a token: {}",
        refused.stdout
    );
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);
    let admin = lines
        .iter()
        .find(|w| w.contains(&"admin_token".to_string()) && w.join(" ").ends_with("list"))
        .unwrap();
    let table = Table::parse(&run(admin.clone()).await);
    assert_eq!(table.row("node1", "cinder-volume")["Status"], "enabled");
}
