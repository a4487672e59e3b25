//! The states beside `up` and `down` (issue 15), told against every backend: a clean stop,
//! health beside liveness, per-service down time, flapping.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use vigil_reporter::Reporter;

use crate::harness::{eventually, temp_dir, Backend, EventStream, TestServer};

crate::each_backend!(
    a_clean_stop_is_stopped_at_once_until_the_next_beat,
    health_is_shown_beside_liveness_and_each_change_is_an_event,
    a_service_is_judged_by_its_own_down_time,
    a_service_up_and_down_too_often_is_flapping_until_it_settles,
);

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

/// A single heartbeat with `body`.
async fn beat(server: &TestServer, id: i64, body: Value) -> (StatusCode, Value) {
    server
        .post(&format!("/v1/services/{id}/heartbeat"), body)
        .await
}

/// A service's state, health and health message.
async fn show(server: &TestServer, id: i64) -> (Value, Value, Value) {
    let service = server.service(id).await;
    (
        service["state"].clone(),
        service["health"].clone(),
        service["health_message"].clone(),
    )
}

async fn health_is_shown_beside_liveness_and_each_change_is_an_event(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let id = server.register("node-1", "cinder-volume").await;
    let other = server.register("node-2", "cinder-volume").await;
    // An old reporter sends no health: none shown.
    assert_eq!(server.beat(id).await.0, StatusCode::OK);
    assert_eq!(
        show(&server, id).await,
        (json!("up"), Value::Null, Value::Null)
    );

    let (status, _) = beat(
        &server,
        id,
        json!({"health": "failing", "message": "pool a full"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        show(&server, id).await,
        (json!("up"), json!("failing"), json!("pool a full")),
        "alive but failing: up, with its health beside"
    );
    // A beat without health leaves it as it is; the same health again is no new event.
    beat(&server, id, json!({})).await;
    beat(
        &server,
        id,
        json!({"health": "failing", "message": "pool a full"}),
    )
    .await;
    assert_eq!(show(&server, id).await.1, "failing");
    // In a batch too.
    let (status, body) = server
        .post(
            "/v1/heartbeats",
            json!({"beats": [{"id": id, "health": "warning", "message": "pool a 90 %"},
                             {"id": other, "health": "ok"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(show(&server, id).await.1, "warning");
    assert_eq!(
        show(&server, other).await,
        (json!("up"), json!("ok"), Value::Null)
    );
    let (_, listed) = server.get("/v1/services?host=node-1").await;
    assert_eq!(listed["services"][0]["health"], "warning", "{listed}");
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l
            == r#"vigil_service_health{host="node-1",binary="cinder-volume",zone="nova",source="vigil"} 1"#),
        "{metrics}"
    );

    // Each change is an event, with what it was; `ok` reported first is none.
    let reasons = || async {
        let (_, events) = server.get("/v1/events?kind=health").await;
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|e| e["reason"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    eventually("two health events", Duration::from_secs(5), || async {
        reasons().await.len() >= 2
    })
    .await;
    assert_eq!(
        reasons().await,
        [
            "failing: pool a full (first reported)",
            "warning: pool a 90 % (was failing)"
        ]
    );

    // Bad input: a health that is not one of the three, a message too long.
    let (status, body) = beat(&server, id, json!({"health": "dying"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json")),
        "{body}"
    );
    let (status, body) = beat(
        &server,
        id,
        json!({"health": "ok", "message": "x".repeat(1025)}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_message")),
        "{body}"
    );
    assert_eq!(
        show(&server, id).await.1,
        "warning",
        "a refused beat changes nothing"
    );

    // Written by the flush: a restart keeps it.
    server.restart().await;
    assert_eq!(
        show(&server, id).await,
        (json!("up"), json!("warning"), json!("pool a 90 %"))
    );
    // Registering again is a new start: no health until its beats say.
    server.register("node-1", "cinder-volume").await;
    assert_eq!(show(&server, id).await.1, Value::Null);
}

async fn a_service_is_judged_by_its_own_down_time(backend: Backend) {
    let dir = temp_dir();
    let mut config = backend.config(dir.path());
    config.service_down_time_min = 0.5;
    config.service_down_time_max = 10.0;
    config.service_down_time_by_binary = vec![vigil_server::config::DownTimePattern {
        binary: "slow-*".into(),
        service_down_time: 2.0,
    }];
    let mut server = TestServer::start_with_cinder(config).await;
    let register = |body: Value| {
        let server = &server;
        async move { server.post("/v1/services", body).await }
    };
    // Outside the bounds, or under twice report_interval: refused.
    for (declared, interval) in [(0.4, 0.1), (11.0, 0.1), (0.7, 0.4)] {
        let (status, body) = register(json!({"host": "h", "binary": "own",
            "report_interval": interval, "service_down_time": declared}))
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_service_down_time")),
            "{declared} {body}"
        );
    }
    let (status, own) = register(json!({"host": "h", "binary": "own",
        "report_interval": 0.2, "service_down_time": 3.0}))
    .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    assert_eq!(own["service_down_time"], 3.0);
    let own = own["id"].as_i64().unwrap();
    let slow = server.register("h", "slow-worker").await;
    let plain = server.register("h", "plain").await;
    assert_eq!(server.service(slow).await["service_down_time"], 2.0);
    assert_eq!(server.service(plain).await["service_down_time"], 1.0);
    let (_, answer) = server.beat(own).await;
    assert_eq!(
        answer["service_down_time"], 3.0,
        "the beat's answer is its own"
    );
    for id in [own, slow, plain] {
        server.beat(id).await;
    }

    // Each goes down after its own time, and its down event says which.
    eventually("plain down", Duration::from_secs(5), || async {
        state(&server, plain).await == "down"
    })
    .await;
    assert_eq!(state(&server, slow).await, "up");
    assert_eq!(state(&server, own).await, "up");
    eventually("slow down", Duration::from_secs(5), || async {
        state(&server, slow).await == "down"
    })
    .await;
    assert_eq!(state(&server, own).await, "up");
    let cinder = format!(
        "{}/v3/os-services?binary=own",
        server.cinder_url.as_ref().unwrap()
    );
    let rows: Value = server
        .http
        .get(&cinder)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rows["services"][0]["state"], "up",
        "Cinder's API too: {rows}"
    );
    let (_, diagnosis) = server.get(&format!("/v1/services/{own}/diagnosis")).await;
    let interval = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "interval")
        .unwrap()
        .clone();
    assert!(
        interval["summary"]
            .as_str()
            .unwrap()
            .contains("service_down_time 3 s"),
        "the doctor judges with its own: {interval}"
    );
    eventually("own down", Duration::from_secs(5), || async {
        state(&server, own).await == "down"
    })
    .await;
    let down = || async {
        let (_, events) = server
            .get(&format!("/v1/events?kind=down&service={own}"))
            .await;
        events["events"][0].clone()
    };
    eventually("its down event", Duration::from_secs(5), || async {
        down().await.is_object()
    })
    .await;
    assert_eq!(down().await["threshold_s"], 3.0);

    // Durable, and replaced when it registers again.
    server.restart().await;
    assert_eq!(server.service(own).await["service_down_time"], 3.0);
    server.register("h", "own").await;
    assert_eq!(server.service(own).await["service_down_time"], 1.0);
}

async fn a_service_up_and_down_too_often_is_flapping_until_it_settles(backend: Backend) {
    let dir = temp_dir();
    let mut config = backend.config(dir.path());
    config.service_down_time = 0.5;
    config.flapping.transitions = 4;
    config.flapping.window = 5.0;
    let server = TestServer::start(config).await;
    let id = server.register("node-f", "cinder-volume").await;
    // Down, up, down, up: four transitions, each an event.
    let count = |kind: &'static str| {
        let server = &server;
        async move {
            let (_, events) = server
                .get(&format!("/v1/services/{id}/events?kind={kind}"))
                .await;
            events["events"].as_array().unwrap().len()
        }
    };
    for round in 1..=2 {
        eventually("down", Duration::from_secs(5), || async {
            count("down").await == round
        })
        .await;
        server.beat(id).await;
        assert_eq!(state(&server, id).await, "up");
        eventually("up", Duration::from_secs(5), || async {
            count("up").await == round
        })
        .await;
    }
    let service = server.service(id).await;
    assert_eq!(
        (
            service["flapping"].clone(),
            service["recent_transitions"].clone()
        ),
        (json!(true), json!(4)),
        "{service}"
    );
    let (_, listed) = server.get("/v1/services?host=node-f").await;
    assert_eq!(listed["services"][0]["flapping"], true, "{listed}");
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l
            == r#"vigil_service_flapping{host="node-f",binary="cinder-volume",zone="nova",source="vigil"} 1"#),
        "{metrics}"
    );
    let (_, diagnosis) = server.get(&format!("/v1/services/{id}/diagnosis")).await;
    let found = diagnosis["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "flapping")
        .unwrap()
        .clone();
    assert_eq!(found["severity"], "warning", "{found}");
    let kinds = || async {
        let (_, events) = server.get(&format!("/v1/services/{id}/events")).await;
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .filter(|k| k.starts_with("flapping"))
            .collect::<Vec<_>>()
    };
    eventually("the flapping event", Duration::from_secs(5), || async {
        kinds().await == ["flapping"]
    })
    .await;
    // Steady beats until the transitions leave the window: it settles, once.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(6500) {
        server.beat(id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let service = server.service(id).await;
    assert_eq!(service["flapping"], false, "{service}");
    assert_eq!(service["state"], "up", "{service}");
    eventually("the end of flapping", Duration::from_secs(5), || async {
        kinds().await == ["flapping_ended", "flapping"]
    })
    .await;
}
