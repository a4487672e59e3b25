//! The states beside `up` and `down` (issue 15), told against every backend: a clean stop.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use vigil_reporter::Reporter;

use crate::harness::{eventually, temp_dir, Backend, EventStream, TestServer};

crate::each_backend!(a_clean_stop_is_stopped_at_once_until_the_next_beat);

/// The kinds of a service's events, oldest first.
async fn kinds(server: &TestServer, id: i64) -> Vec<String> {
    let (_, body) = server.get(&format!("/v1/services/{id}/events")).await;
    let mut kinds: Vec<String> = body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events of {id}: {body}"))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.reverse();
    kinds
}

async fn state(server: &TestServer, id: i64) -> Value {
    server.service(id).await["state"].clone()
}

async fn a_clean_stop_is_stopped_at_once_until_the_next_beat(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start_with_cinder(backend.config(dir.path())).await;
    let handle = Reporter::builder(&server.url, "node-1", "cinder-volume")
        .report_interval(Duration::from_millis(200))
        .start()
        .expect("reporter starts");
    eventually("beating", Duration::from_secs(10), || async {
        handle.report_count() >= 2
    })
    .await;
    let id = handle.service_id().unwrap();
    let mut stream = EventStream::connect(&server, &format!("?service={id}"), None).await;

    // The reporter's stop tells the server: stopped at once, not up for service_down_time.
    handle.shutdown().await;
    assert_eq!(state(&server, id).await, "stopped");
    let seen = stream.until("stopped", Duration::from_secs(5)).await;
    assert_eq!(seen.last().unwrap().kind, "stopped");
    let (_, listed) = server.get("/v1/services?state=stopped").await;
    assert_eq!(listed["services"][0]["id"], id, "{listed}");
    let (_, listed) = server.get("/v1/services?state=down").await;
    assert_eq!(listed["services"], json!([]), "{listed}");

    // Cinder knows up and down only: a stopped service takes no work.
    let cinder = format!("{}/v3/os-services", server.cinder_url.as_ref().unwrap());
    let rows: Value = server
        .http
        .get(&cinder)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows["services"][0]["state"], "down", "{rows}");

    // Metrics count it as stopped, and give it no `vigil_service_up` sample (so the
    // `VigilServiceDown` alert does not fire for it).
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l
            == r#"vigil_services{state="stopped",status="enabled",zone="nova",source="vigil"} 1"#),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("vigil_service_up{") && l.contains(r#"host="node-1""#)),
        "{metrics}"
    );

    // Long past service_down_time: still stopped, never a `down` event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(&server, id).await, "stopped");
    assert!(!kinds(&server, id).await.contains(&"down".to_owned()));

    // Durable: a restart finds it stopped, and writes no `down` for it either.
    server.restart().await;
    assert_eq!(state(&server, id).await, "stopped");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(&server, id).await, "stopped");
    assert_eq!(
        kinds(&server, id)
            .await
            .iter()
            .filter(|k| *k == "down")
            .count(),
        0
    );

    // A heartbeat brings it back, with an `up`.
    let mut stream = EventStream::connect(&server, &format!("?service={id}"), None).await;
    assert_eq!(server.beat(id).await.0, StatusCode::OK);
    assert_eq!(state(&server, id).await, "up");
    let seen = stream.until("up", Duration::from_secs(5)).await;
    assert_eq!(seen.last().unwrap().kind, "up");

    // A stop retried is answered as it is, with no second event.
    let (status, body) = server
        .post(&format!("/v1/services/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "stopped");
    let (status, _) = server
        .post(&format!("/v1/services/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stops = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "stopped").count();
    assert_eq!(stops(kinds(&server, id).await), 2);

    // Registering again is a start: no longer stopped.
    server.register("node-1", "cinder-volume").await;
    assert_eq!(state(&server, id).await, "up");

    // Bad input gets our error body.
    let (status, body) = server.post("/v1/services/999/stop", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("service_not_found"))
    );
    let (status, body) = server.post("/v1/services/x/stop", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id"))
    );
}
