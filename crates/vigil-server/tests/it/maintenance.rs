//! Maintenance windows (`/v1/maintenance`): services in a window are judged as always and say
//! so (views, `down` events, metrics, the doctor); a window ends by itself or early, survives
//! a restart, and shows through every replica.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, temp_dir, under_ci, Backend, TestServer, AGENT_TOKEN};

/// The SQLite files of a data directory made immutable (`chattr +i`) while it lives: every
/// write fails. `None` (skip) when that cannot be done outside CI; panics under CI.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(dir: &std::path::Path) -> Option<Immutable> {
        let files: Vec<_> = ["vigil.db", "vigil.db-wal"]
            .iter()
            .map(|name| dir.join(name))
            .filter(|path| path.exists())
            .collect();
        let guard = Immutable(files);
        for path in &guard.0 {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                let why = format!("cannot chattr +i {}: {status:?}", path.display());
                assert!(!under_ci(), "{why}");
                eprintln!("skipping a storage fault test: {why}");
                return None;
            }
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(path)
                .status();
        }
    }
}

crate::each_backend!(
    a_window_flags_its_services_which_are_judged_as_always,
    a_window_ends_by_itself,
    windows_survive_a_restart,
    bad_windows_are_refused_and_readers_only_read,
);

/// Starts a window as admin; returns the answer, which must be 201.
async fn start(server: &TestServer, body: Value) -> Value {
    let (status, answer) = server
        .admin(Method::POST, "/v1/maintenance", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}: {answer}");
    answer
}

async fn windows(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/maintenance{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["windows"].as_array().unwrap().clone()
}

async fn in_maintenance(server: &TestServer, id: i64) -> bool {
    server.service(id).await["in_maintenance"] == json!(true)
}

/// The `/metrics` text of `server`.
async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap()
}

/// Every service of a list (`query`), by id.
async fn listed(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/services{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["services"].as_array().unwrap().clone()
}

async fn a_window_flags_its_services_which_are_judged_as_always(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let volume = server.register("node-1", "cinder-volume").await;
    let backup = server.register("node-1", "cinder-backup").await;
    let other = server.register("node-2", "cinder-volume").await;
    let window = start(
        &server,
        json!({"host": "node-1", "binary": "cinder-volume", "duration_s": 120, "reason": "disk swap"}),
    )
    .await;
    let id = window["id"].as_i64().unwrap();
    assert_eq!(window["host"], "node-1");
    assert_eq!(window["binary"], "cinder-volume");
    assert_eq!(window["reason"], "disk swap");
    assert_eq!(window["created_by"], "admin");
    assert_eq!(window["active"], true);
    assert_eq!(window["ended_at"], Value::Null);

    // The detail, the list (streamed, and sorted and paged), each say so for the one covered.
    let shown = server.service(volume).await;
    assert_eq!(shown["in_maintenance"], true, "{shown}");
    assert_eq!(shown["maintenance_reason"], "disk swap", "{shown}");
    let shown = server.service(backup).await;
    assert_eq!(shown["in_maintenance"], false, "{shown}");
    assert!(shown.get("maintenance_reason").is_none(), "{shown}");
    for query in ["", "?host=node-1", "?sort=host&limit=10"] {
        for service in listed(&server, query).await {
            let covered = service["id"] == json!(volume);
            assert_eq!(service["in_maintenance"], covered, "{query}: {service}");
            if covered {
                assert_eq!(service["maintenance_reason"], "disk swap");
            }
        }
    }

    // Silent, it goes down all the same, and its down event says why nobody should worry.
    let down = |id: i64| {
        let server = &server;
        async move {
            let (_, body) = server
                .get(&format!("/v1/events?service={id}&kind=down"))
                .await;
            body["events"][0].clone()
        }
    };
    for (id, name) in [(volume, "volume down"), (other, "other down")] {
        eventually(name, Duration::from_secs(10), || async {
            server.service(id).await["state"] == "down" && down(id).await.is_object()
        })
        .await;
    }
    assert_eq!(down(volume).await["reason"], "in maintenance: disk swap");
    assert_eq!(down(other).await["reason"], Value::Null);
    assert_eq!(server.service(volume).await["in_maintenance"], true);

    // Metrics carry it, for alert rules to silence by.
    let text = metrics(&server).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vigil_service_in_maintenance{"))
        .collect();
    assert_eq!(
        series,
        [
            r#"vigil_service_in_maintenance{host="node-1",binary="cinder-volume",zone="nova",source="vigil"} 1"#
        ],
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "vigil_maintenance_windows 1"),
        "{text}"
    );

    // The doctor names the window and expects the down.
    let (_, diagnosis) = server
        .get(&format!("/v1/services/{volume}/diagnosis"))
        .await;
    let finding = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "maintenance")
        .cloned()
        .unwrap();
    assert_eq!(finding["severity"], "warning", "{finding}");
    let summary = finding["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!(
            "down during maintenance window {id} (reason: disk swap): expected"
        )),
        "{finding}"
    );
    assert!(
        finding["detail"]
            .as_str()
            .unwrap()
            .contains("started by admin at"),
        "{finding}"
    );
    let (_, diagnosis) = server.get(&format!("/v1/services/{other}/diagnosis")).await;
    assert!(diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["check"] == "maintenance" && f["severity"] == "ok"));

    // Listed while it holds; ended early, it is not, and says by whom.
    let listed_now = windows(&server, "").await;
    assert_eq!(listed_now.len(), 1);
    assert_eq!(listed_now[0]["id"], id);
    let (status, ended) = server
        .admin(Method::DELETE, &format!("/v1/maintenance/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["active"], false);
    assert_eq!(ended["ended_by"], "admin");
    assert!(ended["ended_at"].is_string(), "{ended}");
    assert!(!in_maintenance(&server, volume).await);
    let (status, body) = server
        .admin(Method::DELETE, &format!("/v1/maintenance/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "maintenance_not_found");
    assert!(windows(&server, "").await.is_empty());
    let all = windows(&server, "?all=true").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["ended_by"], "admin");
    let text = metrics(&server).await;
    assert!(!text.contains("vigil_service_in_maintenance{"), "{text}");
    assert!(
        text.lines().any(|l| l == "vigil_maintenance_windows 0"),
        "{text}"
    );
}

async fn a_window_ends_by_itself(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let volume = server.register("node-1", "cinder-volume").await;
    let backup = server.register("node-1", "cinder-backup").await;
    let window = start(
        &server,
        json!({"host": "node-1", "duration_s": 1.5, "reason": "reboot"}),
    )
    .await;
    let id = window["id"].as_i64().unwrap();
    assert_eq!(window["binary"], Value::Null);
    // Every binary of the host.
    assert!(in_maintenance(&server, volume).await);
    assert!(in_maintenance(&server, backup).await);
    eventually("the window ends", Duration::from_secs(5), || async {
        !in_maintenance(&server, volume).await && !in_maintenance(&server, backup).await
    })
    .await;
    assert!(windows(&server, "").await.is_empty());
    let all = windows(&server, "?all=true").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["active"], false);
    assert_eq!(
        all[0]["ended_at"],
        Value::Null,
        "ended by itself, not early"
    );
    let (status, body) = server
        .admin(Method::DELETE, &format!("/v1/maintenance/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "maintenance_not_found");
    assert!(metrics(&server)
        .await
        .lines()
        .any(|l| l == "vigil_maintenance_windows 0"));

    // A window given by its end.
    let ends_at = chrono::Utc::now() + chrono::TimeDelta::seconds(60);
    let window = start(
        &server,
        json!({"host": "node-1", "ends_at": vigil_proto::ts::format(&ends_at), "reason": "bios"}),
    )
    .await;
    assert_eq!(window["ends_at"], vigil_proto::ts::format(&ends_at));
    assert!(in_maintenance(&server, volume).await);
}

async fn windows_survive_a_restart(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let volume = server.register("node-1", "cinder-volume").await;
    let kept = start(
        &server,
        json!({"host": "node-1", "duration_s": 600, "reason": "kept"}),
    )
    .await;
    let ended = start(
        &server,
        json!({"host": "node-1", "binary": "cinder-volume", "duration_s": 600, "reason": "ended"}),
    )
    .await;
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/v1/maintenance/{}", ended["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.restart().await;
    let shown = server.service(volume).await;
    assert_eq!(shown["in_maintenance"], true, "{shown}");
    assert_eq!(shown["maintenance_reason"], "kept", "{shown}");
    let listed = windows(&server, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], kept["id"]);
    assert_eq!(windows(&server, "?all=true").await.len(), 2);
}

async fn bad_windows_are_refused_and_readers_only_read(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let month = 30.0 * 86_400.0;
    let past = vigil_proto::ts::format(&(chrono::Utc::now() - chrono::TimeDelta::seconds(1)));
    let far = vigil_proto::ts::format(&(chrono::Utc::now() + chrono::TimeDelta::days(31)));
    for (body, code) in [
        (
            json!({"host": "", "duration_s": 60, "reason": "r"}),
            "invalid_host",
        ),
        (
            json!({"host": "  ", "duration_s": 60, "reason": "r"}),
            "invalid_host",
        ),
        (
            json!({"host": "a\u{7}", "duration_s": 60, "reason": "r"}),
            "invalid_host",
        ),
        (
            json!({"host": "h", "binary": "", "duration_s": 60, "reason": "r"}),
            "invalid_binary",
        ),
        (
            json!({"host": "h", "duration_s": 60, "reason": ""}),
            "invalid_reason",
        ),
        (
            json!({"host": "h", "duration_s": 60, "reason": "x".repeat(256)}),
            "invalid_reason",
        ),
        (json!({"host": "h", "duration_s": 60}), "invalid_json"),
        (
            json!({"host": "h", "duration_s": 0, "reason": "r"}),
            "invalid_duration",
        ),
        (
            json!({"host": "h", "duration_s": -5, "reason": "r"}),
            "invalid_duration",
        ),
        (
            json!({"host": "h", "duration_s": month + 1.0, "reason": "r"}),
            "invalid_duration",
        ),
        (json!({"host": "h", "reason": "r"}), "invalid_duration"),
        (
            json!({"host": "h", "duration_s": 60, "ends_at": far, "reason": "r"}),
            "invalid_duration",
        ),
        (
            json!({"host": "h", "ends_at": past, "reason": "r"}),
            "invalid_ends_at",
        ),
        (
            json!({"host": "h", "ends_at": far, "reason": "r"}),
            "invalid_ends_at",
        ),
        (
            json!({"host": "h", "ends_at": "soon", "reason": "r"}),
            "invalid_json",
        ),
        (
            json!({"host": "h", "duration": 60, "reason": "r"}),
            "invalid_json",
        ),
    ] {
        let (status, answer) = server
            .admin(Method::POST, "/v1/maintenance", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let (status, answer) = server
        .admin(Method::DELETE, "/v1/maintenance/abc", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "invalid_id");
    let (status, answer) = server
        .admin(Method::DELETE, "/v1/maintenance/999", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "maintenance_not_found");
    let (status, answer) = server.get("/v1/maintenance?all=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "invalid_query");
    assert!(windows(&server, "?all=true").await.is_empty());

    // Admin only: no token, an agent's, a reader's.
    let (status, answer) = server
        .admin(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "dash", "role": "reader"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let reader = answer["secret"].as_str().unwrap().to_string();
    let good = json!({"host": "h", "duration_s": 60, "reason": "r"});
    for (token, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(AGENT_TOKEN), StatusCode::FORBIDDEN),
        (Some(reader.as_str()), StatusCode::FORBIDDEN),
    ] {
        let (status, answer) = server
            .request(Method::POST, "/v1/maintenance", Some(good.clone()), token)
            .await;
        assert_eq!(status, expected, "{token:?}: {answer}");
    }
    let window = start(&server, good).await;
    let (status, answer) = server
        .request(
            Method::DELETE,
            &format!("/v1/maintenance/{}", window["id"]),
            None,
            Some(&reader),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    let (status, answer) = server
        .request(Method::GET, "/v1/maintenance", None, Some(&reader))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["windows"].as_array().unwrap().len(), 1);
}

/// Two replicas on one PostgreSQL schema: a window started through one shows through the
/// other within a few flush intervals, and so does its early end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_shows_through_every_replica() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (dir_a, dir_b) = (temp_dir(), temp_dir());
    let a = TestServer::start(backend.config(dir_a.path())).await;
    let b = TestServer::start(backend.config(dir_b.path())).await;
    let volume = a.register("node-1", "cinder-volume").await;
    let window = start(
        &a,
        json!({"host": "node-1", "duration_s": 600, "reason": "rack move"}),
    )
    .await;
    // The list reads the database: at once.
    assert_eq!(windows(&b, "").await.len(), 1);
    eventually("b sees the window", Duration::from_secs(5), || async {
        let shown = b.service(volume).await;
        shown["in_maintenance"] == true && shown["maintenance_reason"] == "rack move"
    })
    .await;
    let (status, body) = b
        .admin(
            Method::DELETE,
            &format!("/v1/maintenance/{}", window["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!in_maintenance(&b, volume).await);
    eventually("a sees the end", Duration::from_secs(5), || async {
        !in_maintenance(&a, volume).await
    })
    .await;
    drop((a, b));
    backend.drop_schema().await;
}

/// With `metrics.per_service = false` no service has a series of its own, in maintenance or
/// not; the count of windows stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_per_service_metrics_only_the_count_of_windows_shows() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.metrics.per_service = false;
    let server = TestServer::start(config).await;
    server.register("node-1", "cinder-volume").await;
    start(
        &server,
        json!({"host": "node-1", "duration_s": 60, "reason": "r"}),
    )
    .await;
    let text = metrics(&server).await;
    assert!(!text.contains("vigil_service_in_maintenance"), "{text}");
    assert!(
        text.lines().any(|l| l == "vigil_maintenance_windows 1"),
        "{text}"
    );
}

/// A database that cannot be written refuses starting and ending windows with 503
/// `database_unavailable`, changing nothing; once it can, they are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_fault_refuses_window_changes_with_503() {
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let volume = server.register("node-1", "cinder-volume").await;
    let window = start(
        &server,
        json!({"host": "node-1", "duration_s": 600, "reason": "kept"}),
    )
    .await;
    let Some(fault) = Immutable::set(dir.path()) else {
        return;
    };
    let body = json!({"host": "node-2", "duration_s": 60, "reason": "refused"});
    let (status, answer) = server
        .admin(Method::POST, "/v1/maintenance", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "database_unavailable");
    let (status, answer) = server
        .admin(
            Method::DELETE,
            &format!("/v1/maintenance/{}", window["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "database_unavailable");
    assert!(in_maintenance(&server, volume).await, "nothing was ended");
    drop(fault);
    eventually("writes come back", Duration::from_secs(10), || async {
        server
            .admin(Method::POST, "/v1/maintenance", Some(body.clone()))
            .await
            .0
            == StatusCode::CREATED
    })
    .await;
    let listed = windows(&server, "").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
}

/// The dashboard in a real Chromium: a service in a window has a `maintenance` badge with its
/// reason on its page, and says so in the overview's table; no script error, no CSP violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_maintenance_badge() {
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let Some(browser) = crate::ui::Browser::start().await else {
        return;
    };
    let volume = server.register("node-1", "cinder-volume").await;
    server.register("node-2", "cinder-volume").await;
    start(
        &server,
        json!({"host": "node-1", "duration_s": 600, "reason": "disk swap"}),
    )
    .await;
    browser
        .goto(&format!("{}/ui/services/{volume}", server.url))
        .await;
    browser
        .until(
            "the maintenance badge",
            Duration::from_secs(10),
            r#"[...document.querySelectorAll("h1 .badge.maintenance")].some(b => b.textContent === "maintenance" && b.title === "disk swap")"#,
        )
        .await;
    browser
        .until(
            "the reason in the facts",
            Duration::from_secs(5),
            r#"document.body.textContent.includes("disk swap")"#,
        )
        .await;
    browser.assert_no_errors("a service page").await;
    browser.goto(&format!("{}/", server.url)).await;
    browser
        .until(
            "the overview's table says maintenance once",
            Duration::from_secs(10),
            r#"[...document.querySelectorAll("td")].filter(td => td.textContent.includes("· maintenance")).length === 1"#,
        )
        .await;
    browser.assert_no_errors("the overview").await;
}
