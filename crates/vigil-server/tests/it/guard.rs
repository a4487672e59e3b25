//! The partition guard and the hysteresis of issue 15, against every backend: many services
//! silent together are `unreachable`, not `down`, until they beat again, an admin confirms
//! them down, or the hold passes; a lone silent service is down as ever; after a down, a
//! service comes back up only after `up_after_beats` on-time beats.
//!
//! Real network isolation (network namespaces, a veth pair cut) is tested against the binary
//! in `crates/vigil/tests/it/partition.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{eventually, temp_dir, Backend, TestServer, AGENT_TOKEN};

crate::each_backend!(
    many_silent_together_are_unreachable_until_they_beat_or_are_confirmed_down,
    held_services_go_down_when_the_hold_passes,
    a_held_service_forced_down_is_down_and_one_that_stops_is_stopped,
    after_a_down_a_service_comes_back_only_after_enough_on_time_beats,
);

/// Beats `ids` every 200 ms until `stop` is set.
fn keep_beating(server: &TestServer, ids: Vec<i64>, stop: Arc<AtomicBool>) {
    let (http, url) = (server.http.clone(), server.url.clone());
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for id in &ids {
                let _ = http
                    .post(format!("{url}/v1/services/{id}/heartbeat"))
                    .bearer_auth(AGENT_TOKEN)
                    .json(&json!({}))
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

async fn events(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/events?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

async fn in_state(server: &TestServer, state: &str) -> Vec<i64> {
    let (_, body) = server.get(&format!("/v1/services?state={state}")).await;
    body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

fn guarded(backend: &Backend, dir: &std::path::Path, hold: f64) -> vigil_server::Config {
    let mut config = backend.config(dir);
    config.service_down_time = 2.0;
    config.partition_guard.min_services = 10;
    config.partition_guard.share = 0.5;
    config.partition_guard.hold = hold;
    config
}

async fn many_silent_together_are_unreachable_until_they_beat_or_are_confirmed_down(
    backend: Backend,
) {
    let dir = temp_dir();
    let server = TestServer::start(guarded(&backend, dir.path(), 600.0)).await;
    let lonely = server.register("lonely", "worker").await;
    let mut cut = Vec::new();
    for i in 0..12 {
        cut.push(server.register(&format!("node-c{i}"), "worker").await);
    }
    let mut alive = Vec::new();
    for i in 0..3 {
        alive.push(server.register(&format!("node-a{i}"), "worker").await);
    }
    let alive_stop = Arc::new(AtomicBool::new(false));
    keep_beating(&server, alive.clone(), alive_stop.clone());
    let cut_stop = Arc::new(AtomicBool::new(false));
    keep_beating(&server, cut.clone(), cut_stop.clone());

    // One service dying alone is down, as ever (its event written: declared by the detector).
    eventually("the lonely one down", Duration::from_secs(10), || async {
        in_state(&server, "down").await == [lonely] && events(&server, "kind=down").await.len() == 1
    })
    .await;
    assert!(events(&server, "kind=mass_failure").await.is_empty());

    // Twelve of the fifteen live ones go silent at once: unreachable, not down.
    cut_stop.store(true, Ordering::Relaxed);
    eventually(
        "the cut ones unreachable",
        Duration::from_secs(10),
        || async { in_state(&server, "unreachable").await.len() == cut.len() },
    )
    .await;
    assert_eq!(in_state(&server, "unreachable").await, cut);
    // The event is written under the lease after the tick that held them (a reader can see
    // them unreachable in memory a moment before).
    eventually(
        "the mass failure written",
        Duration::from_secs(10),
        || async { !events(&server, "kind=mass_failure").await.is_empty() },
    )
    .await;
    let downs = events(&server, "kind=down").await;
    assert_eq!(downs.len(), 1, "only the lonely one is down: {downs:?}");
    let mass = events(&server, "kind=mass_failure").await;
    assert_eq!(mass.len(), 1, "{mass:?}");
    let reason = mass[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("12 of 15 services went silent together"),
        "{reason}"
    );
    assert_eq!(
        (mass[0]["host"].clone(), mass[0]["service_id"].clone()),
        (json!("*"), json!(0))
    );

    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["mass_failure"]["unreachable"], 12, "{ready}");
    assert!(ready["reason"]
        .as_str()
        .unwrap()
        .contains("Vigil may be the one cut off"));
    // The dashboard's overview: the count, and the banner's words.
    let (_, overview) = server.get("/ui/api/overview").await;
    assert_eq!(overview["all"]["unreachable"], 12, "{overview}");
    assert!(
        overview["mass_failure"]
            .as_str()
            .unwrap()
            .starts_with("Vigil may be the one cut off: 12 of 15 services"),
        "{overview}"
    );
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l
            == r#"vigil_services{state="unreachable",status="enabled",zone="nova",source="vigil"} 12"#),
        "{metrics}"
    );
    let (_, diagnosis) = server
        .get(&format!("/v1/services/{}/diagnosis", cut[0]))
        .await;
    let reach = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "reach")
        .unwrap()
        .clone();
    assert_eq!(reach["severity"], "error", "{reach}");
    assert!(reach["remedy"]
        .as_str()
        .unwrap()
        .contains("vigil confirm-down node-c0 worker"));
    // The Cinder view has no such state: down.
    let (_, service) = server.get(&format!("/v1/services/{}", cut[0])).await;
    assert_eq!(service["state"], "unreachable");

    // Half of them come back: up, and no event (they were never down).
    for id in &cut[..6] {
        assert!(server.beat(*id).await.0.is_success());
    }
    for id in &cut[..6] {
        assert_eq!(server.service(*id).await["state"], "up");
    }
    keep_beating(&server, cut[..6].to_vec(), alive_stop.clone());
    assert!(events(&server, "kind=up").await.is_empty());

    // Only an admin confirms.
    let (status, body) = server
        .request(
            Method::POST,
            "/v1/confirm-down",
            Some(json!({})),
            Some(AGENT_TOKEN),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );
    let (status, body) = server
        .admin(
            Method::POST,
            "/v1/confirm-down",
            Some(json!({"host": "node-c6"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"confirmed": 1, "unreachable": 5, "leader": true})
    );
    let (_, body) = server
        .admin(Method::POST, "/v1/confirm-down", Some(json!({})))
        .await;
    assert_eq!(
        body,
        json!({"confirmed": 5, "unreachable": 0, "leader": true})
    );
    eventually("their downs written", Duration::from_secs(5), || async {
        events(&server, "kind=down").await.len() == 7
    })
    .await;
    for down in events(&server, "kind=down").await {
        if down["service_id"] != lonely {
            assert_eq!(down["actor"], "admin", "{down}");
            assert!(
                down["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("confirmed down by admin"),
                "{down}"
            );
        }
    }
    eventually("the episode ends", Duration::from_secs(5), || async {
        events(&server, "kind=mass_failure_ended").await.len() == 1
    })
    .await;
    let ended = &events(&server, "kind=mass_failure_ended").await[0];
    assert!(
        ended["reason"]
            .as_str()
            .unwrap()
            .ends_with(
                "6 beat again (or stopped, or were forced down), 6 confirmed down, 0 down after the hold"
            ),
        "{ended}"
    );
    let (_, ready) = server.get("/readyz").await;
    assert_eq!(ready["status"], "ok", "{ready}");
    // The live ones never flinched.
    for id in alive.iter().chain(&cut[..6]) {
        assert_eq!(server.service(*id).await["state"], "up");
        assert!(events(&server, &format!("kind=down&service={id}"))
            .await
            .is_empty());
    }
    alive_stop.store(true, Ordering::Relaxed);
}

async fn held_services_go_down_when_the_hold_passes(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(guarded(&backend, dir.path(), 1.0)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.register(&format!("node-h{i}"), "worker").await);
    }
    eventually("all unreachable", Duration::from_secs(10), || async {
        in_state(&server, "unreachable").await.len() + in_state(&server, "down").await.len()
            == ids.len()
            && !events(&server, "kind=mass_failure").await.is_empty()
    })
    .await;
    eventually(
        "all down after the hold",
        Duration::from_secs(10),
        || async {
            in_state(&server, "down").await.len() == ids.len()
                && events(&server, "kind=down").await.len() == ids.len()
        },
    )
    .await;
    for down in &events(&server, "kind=down").await {
        let reason = down["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("unreachable for ")
                && reason.ends_with(" s after a mass failure, and never beat again"),
            "{down}"
        );
    }
    eventually("the episode ends", Duration::from_secs(5), || async {
        events(&server, "kind=mass_failure_ended").await.len() == 1
    })
    .await;
}

async fn a_held_service_forced_down_is_down_and_one_that_stops_is_stopped(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(guarded(&backend, dir.path(), 600.0)).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(server.register(&format!("node-x{i}"), "worker").await);
    }
    eventually("all unreachable", Duration::from_secs(10), || async {
        in_state(&server, "unreachable").await.len() == ids.len()
    })
    .await;
    // An admin's forced down wins over the guard's doubt, at once.
    let (status, body) = server.patch(ids[0], json!({"forced_down": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "down", "{body}");
    // A clean stop is a stop.
    let (status, body) = server
        .post(&format!("/v1/services/{}/stop", ids[1]), json!({}))
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(server.service(ids[1]).await["state"], "stopped");
    // The guard lets both go; the rest stay held.
    eventually("two released", Duration::from_secs(5), || async {
        server.get("/readyz").await.1["mass_failure"]["unreachable"] == 8
    })
    .await;
    assert_eq!(in_state(&server, "unreachable").await, ids[2..].to_vec());
    let (_, body) = server.admin(Method::POST, "/v1/confirm-down", None).await;
    assert_eq!(
        body,
        json!({"confirmed": 8, "unreachable": 0, "leader": true})
    );
    eventually("the episode ends", Duration::from_secs(5), || async {
        events(&server, "kind=mass_failure_ended").await.len() == 1
    })
    .await;
    assert_eq!(server.service(ids[1]).await["state"], "stopped");
    let stopped_downs = events(&server, &format!("kind=down&service={}", ids[1])).await;
    assert!(stopped_downs.is_empty(), "{stopped_downs:?}");
}

async fn after_a_down_a_service_comes_back_only_after_enough_on_time_beats(backend: Backend) {
    let dir = temp_dir();
    let mut config = backend.config(dir.path());
    config.flapping.up_after_beats = 3;
    let server = TestServer::start(config).await;
    let id = server.register("node-k", "worker").await;
    // Declared down by the detector (its event written), not only past its deadline.
    eventually("down", Duration::from_secs(5), || async {
        events(&server, &format!("kind=down&service={id}"))
            .await
            .len()
            == 1
    })
    .await;
    // One beat: still down, coming back.
    server.beat(id).await;
    assert_eq!(server.service(id).await["state"], "down");
    let (_, diagnosis) = server.get(&format!("/v1/services/{id}/diagnosis")).await;
    let reach = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "reach")
        .unwrap()
        .clone();
    assert_eq!(
        (reach["severity"].clone(), reach["summary"].clone()),
        (
            json!("warning"),
            json!("coming back: 1 of 3 on-time heartbeats since its down")
        )
    );
    // A late one (its interval is 0.2 s) starts the count again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.beat(id).await;
    server.beat(id).await;
    assert_eq!(server.service(id).await["state"], "down");
    server.beat(id).await;
    assert_eq!(server.service(id).await["state"], "up");
    eventually("one up event", Duration::from_secs(5), || async {
        events(&server, &format!("kind=up&service={id}"))
            .await
            .len()
            == 1
    })
    .await;
    // A clean stop comes back at its first beat: it was never down.
    let (status, _) = server
        .post(&format!("/v1/services/{id}/stop"), json!({}))
        .await;
    assert!(status.is_success());
    assert_eq!(server.service(id).await["state"], "stopped");
    server.beat(id).await;
    assert_eq!(server.service(id).await["state"], "up");
}
