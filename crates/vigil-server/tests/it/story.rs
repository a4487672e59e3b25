//! The life of a service, told against every backend.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use vigil_reporter::Reporter;

use crate::harness::{eventually, temp_dir, Backend, Logs, TestServer};

crate::each_backend!(
    register_then_up_then_down_when_the_reporter_stops,
    registration_is_get_or_create,
    disabling_a_dead_service_leaves_it_down,
    delete_needs_force_while_up_and_the_reporter_comes_back,
    admin_changes_survive_a_restart,
    heartbeats_are_batched_and_flushed_on_shutdown,
    list_filters,
    reporter_survives_its_server_going_away,
);

fn reporter(server: &TestServer, host: &str, binary: &str) -> vigil_reporter::ReporterHandle {
    Reporter::builder(&server.url, host, binary)
        .report_interval(Duration::from_millis(200))
        .start()
        .expect("reporter starts")
}

async fn state_of(server: &TestServer, host: &str, binary: &str) -> Option<String> {
    let (_, body) = server
        .get(&format!("/v1/services?host={host}&binary={binary}"))
        .await;
    body["services"][0]["state"].as_str().map(str::to_owned)
}

async fn register_then_up_then_down_when_the_reporter_stops(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let handle = reporter(&server, "node-1", "cinder-volume");
    eventually(
        "reporter registered and beating",
        Duration::from_secs(10),
        || async { handle.report_count() >= 2 },
    )
    .await;
    assert_eq!(
        state_of(&server, "node-1", "cinder-volume")
            .await
            .as_deref(),
        Some("up")
    );
    let id = handle.service_id().unwrap();
    let body = server.service(id).await;
    assert_eq!(body["status"], "enabled");
    assert_eq!(body["report_interval"], 0.2);
    assert!(body["updated_at"].as_str().unwrap().ends_with('Z'));
    handle.stop_silently();
    handle.shutdown().await;
    eventually(
        "service down after service_down_time",
        Duration::from_secs(10),
        || async {
            state_of(&server, "node-1", "cinder-volume")
                .await
                .as_deref()
                == Some("down")
        },
    )
    .await;
    let body = server.service(id).await;
    assert!(
        body["last_heartbeat_age_s"].as_f64().unwrap() > 1.0,
        "{body}"
    );
}

async fn registration_is_get_or_create(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let body = json!({"host": "h", "binary": "b", "topic": "t", "zone": "az-1", "report_interval": 5, "version": "1.2"});
    let (status, first) = server.post("/v1/services", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["zone"], "az-1");
    assert_eq!(first["version"], "1.2");
    assert_eq!(first["report_count"], 0);
    assert!(first["updated_at"].is_null());
    let (status, second) = server.post("/v1/services", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["id"], second["id"]);
    let (_, defaulted) = server
        .post("/v1/services", json!({"host": "h2", "binary": "b"}))
        .await;
    assert_eq!(defaulted["zone"], "nova");
    assert_eq!(defaulted["report_interval"], 10.0);
}

async fn disabling_a_dead_service_leaves_it_down(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let id = server.register("node-1", "cinder-backup").await;
    server.beat(id).await;
    let before = server.service(id).await;
    eventually("down", Duration::from_secs(10), || async {
        server.service(id).await["state"] == "down"
    })
    .await;
    let (status, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true, "disabled_reason": "disk swap"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["state"], "down",
        "disabling must not revive (Cinder bug 1397167)"
    );
    assert_eq!(body["status"], "disabled");
    assert_eq!(body["disabled_reason"], "disk swap");
    assert_eq!(
        body["updated_at"], before["updated_at"],
        "admin changes never move updated_at"
    );
    assert!(body["modified_at"].is_string());
    let (_, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(body["state"], "down");
    assert_eq!(body["status"], "enabled");
    assert!(
        body["disabled_reason"].is_null(),
        "enabling clears the reason"
    );
}

async fn delete_needs_force_while_up_and_the_reporter_comes_back(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let handle = reporter(&server, "node-2", "cinder-scheduler");
    eventually("registered", Duration::from_secs(10), || async {
        handle.service_id().is_some()
    })
    .await;
    let id = handle.service_id().unwrap();
    let (status, body) = server
        .admin(Method::DELETE, &format!("/v1/services/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "service_up");
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("/v1/services/{id}?force=true"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("/v1/services/{id}?force=true"),
            None,
            Some("wrong"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .admin(
            Method::DELETE,
            &format!("/v1/services/{id}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.get(&format!("/v1/services/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "service_not_found");
    eventually(
        "the reporter registered again",
        Duration::from_secs(10),
        || async { handle.service_id().is_some_and(|new| new != id) },
    )
    .await;
    assert_eq!(
        state_of(&server, "node-2", "cinder-scheduler")
            .await
            .as_deref(),
        Some("up")
    );
    handle.shutdown().await;
}

async fn admin_changes_survive_a_restart(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let id = server.register("node-3", "cinder-volume").await;
    let (status, _) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true, "disabled_reason": "rack move"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let deleted = server.register("node-3", "cinder-backup").await;
    eventually("down", Duration::from_secs(10), || async {
        server.service(deleted).await["state"] == "down"
    })
    .await;
    let (status, _) = server
        .admin(Method::DELETE, &format!("/v1/services/{deleted}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.restart().await;
    let body = server.service(id).await;
    assert_eq!(body["status"], "disabled");
    assert_eq!(body["disabled_reason"], "rack move");
    let (status, _) = server.get(&format!("/v1/services/{deleted}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn heartbeats_are_batched_and_flushed_on_shutdown(backend: Backend) {
    let dir = temp_dir();
    let mut config = backend.config(dir.path());
    config.flush_interval = 60.0;
    config.service_down_time = 30.0;
    let mut server = TestServer::start(config).await;
    let id = server.register("node-4", "cinder-volume").await;
    for expected in 1..=25 {
        let (status, body) = server.beat(id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["report_count"], expected);
        assert_eq!(body["service_down_time"], 30.0);
    }
    assert_eq!(
        server.service(id).await["report_count"],
        25,
        "reads come from memory"
    );
    server.restart().await;
    let body = server.service(id).await;
    assert_eq!(body["report_count"], 25, "the final flush wrote every beat");
    assert!(body["updated_at"].is_string());
    assert_eq!(body["state"], "up");
}

async fn list_filters(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    for (host, binary, zone) in [("a", "vol", "z1"), ("a", "sch", "z1"), ("b", "vol", "z2")] {
        let (status, _) = server
            .post(
                "/v1/services",
                json!({"host": host, "binary": binary, "zone": zone}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let count = |q: &'static str| {
        let server = &server;
        async move {
            let (status, body) = server.get(&format!("/v1/services{q}")).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            body["services"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("").await, 3);
    assert_eq!(count("?host=a").await, 2);
    assert_eq!(count("?host=a&binary=vol").await, 1);
    assert_eq!(count("?binary=vol").await, 2);
    assert_eq!(count("?zone=z2").await, 1);
    assert_eq!(count("?state=up").await, 3);
    assert_eq!(count("?state=down").await, 0);
    assert_eq!(count("?status=enabled").await, 3);
    assert_eq!(count("?status=disabled").await, 0);
    assert_eq!(count("?host=nobody").await, 0);
}

async fn reporter_survives_its_server_going_away(backend: Backend) {
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let handle = reporter(&server, "node-5", "cinder-volume");
    eventually("beating", Duration::from_secs(10), || async {
        handle.report_count() >= 2
    })
    .await;
    server.stop().await;
    eventually("outage noticed", Duration::from_secs(10), || async {
        logs.count("lost connection to vigil server") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut config = server.config.clone();
    config.listen = server.addr.to_string();
    let server = TestServer::start(config).await;
    let before = handle.report_count();
    eventually("beating again", Duration::from_secs(10), || async {
        handle.report_count() > before
    })
    .await;
    eventually("recovery logged", Duration::from_secs(10), || async {
        logs.count("recovered connection to vigil server") == 1
    })
    .await;
    assert_eq!(
        logs.count("lost connection to vigil server"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(
        state_of(&server, "node-5", "cinder-volume")
            .await
            .as_deref(),
        Some("up")
    );
    handle.shutdown().await;
}
