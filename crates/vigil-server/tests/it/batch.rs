//! `POST /v1/heartbeats`: many services' beats in one request, against every backend.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use reqwest::Method;
use vigil_reporter::{Reporter, ReporterGroup, ReporterGroupHandle};

use crate::harness::{eventually, temp_dir, Backend, Logs, TestServer};

crate::each_backend!(
    batch_answers_each_beat_in_order,
    batch_beats_count_and_survive_a_restart,
    batch_limits_are_whole_batch_errors,
    a_group_keeps_each_services_interval,
    a_group_registers_a_deleted_service_again,
    a_group_logs_an_outage_once,
);

async fn batch(server: &TestServer, beats: Value) -> (StatusCode, Value) {
    server
        .post("/v1/heartbeats", json!({ "beats": beats }))
        .await
}

/// `(id, report_count or error code)` of each result, in order.
fn outcomes(body: &Value) -> Vec<(i64, String)> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|result| {
            let id = result["id"].as_i64().unwrap();
            match (&result["report_count"], &result["error"]) {
                (Value::Number(count), Value::Null) => (id, count.to_string()),
                (Value::Null, error) => {
                    assert!(
                        !error["message"].as_str().unwrap_or("").is_empty(),
                        "a human message: {result}"
                    );
                    (id, error["code"].as_str().unwrap().to_owned())
                }
                _ => panic!("neither report_count nor error, or both: {result}"),
            }
        })
        .collect()
}

async fn batch_answers_each_beat_in_order(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let a = server.register("node-1", "cinder-volume").await;
    let b = server.register("node-2", "cinder-volume").await;
    let unknown = a + b + 1000;

    let (status, body) = batch(&server, json!([])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"results": [], "service_down_time": 1.0}));

    let (status, body) = batch(
        &server,
        json!([
            {"id": a, "sent_at": "2026-11-25T11:03:11.322598Z", "last_rtt_s": 0.002, "overrun_s": 0.0},
            {"id": unknown},
            {"id": b, "zone": "z".repeat(256)},
            {"id": b, "zone": "a\u{0}b"},
            {"id": a, "last_error": "e".repeat(4097)},
            {"id": b, "zone": "zone-2", "last_error": "disk slow"},
            {"id": -1},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service_down_time"], 1.0, "{body}");
    assert_eq!(
        outcomes(&body),
        [
            (a, "1".to_owned()),
            (unknown, "service_not_found".to_owned()),
            (b, "invalid_zone".to_owned()),
            (b, "invalid_zone".to_owned()),
            (a, "invalid_last_error".to_owned()),
            (b, "1".to_owned()),
            (-1, "service_not_found".to_owned()),
        ],
        "{body}"
    );
    let service = server.service(b).await;
    assert_eq!(
        service["zone"], "zone-2",
        "the beat moved the zone: {service}"
    );
    assert_eq!(service["state"], "up", "{service}");

    let (status, body) = batch(&server, json!([{"id": b}, {"id": a}, {"id": a}])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        outcomes(&body),
        [
            (b, "2".to_owned()),
            (a, "2".to_owned()),
            (a, "3".to_owned())
        ],
        "a bad beat counts for nothing, a repeated one counts twice"
    );
    // A single heartbeat and a batch count alike.
    let (status, single) = server.beat(a).await;
    assert_eq!(status, StatusCode::OK, "{single}");
    assert_eq!(single["report_count"], 4, "{single}");
}

async fn batch_beats_count_and_survive_a_restart(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(server.register(&format!("node-{n}"), "cinder-backup").await);
    }
    let beats: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    for round in 1..=3 {
        let (status, body) = batch(&server, json!(beats)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let expected: Vec<(i64, String)> = ids.iter().map(|id| (*id, round.to_string())).collect();
        assert_eq!(outcomes(&body), expected);
    }
    // Flushed within a flush interval (0.1 s), not only at shutdown: the store has them.
    let flush_wait = Duration::from_millis(500);
    tokio::time::sleep(flush_wait).await;
    server.restart().await;
    for id in &ids {
        let service = server.service(*id).await;
        assert_eq!(service["report_count"], 3, "{service}");
        assert!(service["updated_at"].is_string(), "{service}");
    }
    let (status, body) = batch(&server, json!(beats)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        outcomes(&body).iter().all(|(_, count)| count == "4"),
        "{body}"
    );
}

async fn batch_limits_are_whole_batch_errors(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let id = server.register("node-1", "cinder-volume").await;

    // The maximum, far over the 64 KiB of other bodies: every beat counts.
    let full: Vec<Value> = (0..vigil_proto::MAX_BATCH_BEATS)
        .map(|_| json!({"id": id, "sent_at": "2026-11-25T11:03:11.322598Z"}))
        .collect();
    let (status, body) = batch(&server, json!(full)).await;
    assert_eq!(status, StatusCode::OK, "{}", &body.to_string()[..200]);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), vigil_proto::MAX_BATCH_BEATS);
    assert_eq!(
        results.last().unwrap()["report_count"],
        vigil_proto::MAX_BATCH_BEATS
    );

    let over: Vec<Value> = (0..=vigil_proto::MAX_BATCH_BEATS)
        .map(|_| json!({"id": id}))
        .collect();
    let (status, body) = batch(&server, json!(over)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "batch_too_large", "{body}");
    let service = server.service(id).await;
    assert_eq!(
        service["report_count"],
        vigil_proto::MAX_BATCH_BEATS,
        "a refused batch counts for nothing: {service}"
    );

    let (status, body) = batch(&server, json!([{"id": id}, {"id": "two"}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json", "{body}");
    assert_eq!(
        server.service(id).await["report_count"],
        vigil_proto::MAX_BATCH_BEATS,
        "a malformed batch applies no beat, not even those before the fault"
    );
}

/// The server speaks HTTP/2 without TLS (h2c, prior knowledge) on the same port: a batch
/// goes through it as through HTTP/1.1.
#[tokio::test]
async fn a_batch_over_h2c() {
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let a = server.register("node-1", "cinder-volume").await;
    let b = server.register("node-2", "cinder-volume").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/v1/heartbeats", server.url))
        .json(&json!({"beats": [{"id": a}, {"id": b}, {"id": a}]}))
        .send()
        .await
        .expect("h2c batch");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        outcomes(&body),
        [
            (a, "1".to_owned()),
            (b, "1".to_owned()),
            (a, "2".to_owned())
        ]
    );
}

/// A group of services on `host`, each `(binary, interval)`.
fn group(server: &TestServer, host: &str, services: &[(&str, Duration)]) -> ReporterGroupHandle {
    services
        .iter()
        .fold(ReporterGroup::builder(), |group, (binary, interval)| {
            group.service(Reporter::builder(&server.url, host, *binary).report_interval(*interval))
        })
        .start()
        .expect("the group starts")
}

async fn a_group_keeps_each_services_interval(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let handle = group(
        &server,
        "node-1",
        &[
            ("cinder-volume", Duration::from_millis(100)),
            ("cinder-backup", Duration::from_millis(100)),
            ("cinder-scheduler", Duration::from_millis(300)),
        ],
    );
    eventually(
        "the slow service beat 4 times",
        Duration::from_secs(10),
        || async { handle.report_counts()[2] >= 4 },
    )
    .await;
    let counts = handle.report_counts();
    let ids: Vec<i64> = handle
        .service_ids()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert!(
        counts[0] >= 2 * counts[2] && counts[1] >= 2 * counts[2],
        "a 100 ms service beats about three times as often as a 300 ms one: {counts:?}"
    );
    for (id, binary) in ids
        .iter()
        .zip(["cinder-volume", "cinder-backup", "cinder-scheduler"])
    {
        let service = server.service(*id).await;
        assert_eq!(service["binary"], binary, "{service}");
        assert_eq!(service["host"], "node-1", "{service}");
        assert_eq!(service["state"], "up", "{service}");
        assert!(service["report_count"].as_i64().unwrap() >= 4, "{service}");
    }
    handle.stop_silently();
    handle.shutdown().await;
    eventually(
        "all down once the group stops",
        Duration::from_secs(10),
        || async {
            let (_, body) = server.get("/v1/services?state=down").await;
            body["services"].as_array().unwrap().len() == 3
        },
    )
    .await;
}

async fn a_group_registers_a_deleted_service_again(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let fast = Duration::from_millis(100);
    let handle = group(
        &server,
        "node-2",
        &[("cinder-volume", fast), ("cinder-backup", fast)],
    );
    eventually("both beating", Duration::from_secs(10), || async {
        handle.report_counts().iter().all(|&count| count >= 2)
    })
    .await;
    let old = handle.service_ids()[1].unwrap();
    let (status, body) = server
        .admin(
            Method::DELETE,
            &format!("/v1/services/{old}?force=true"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    eventually("registered again", Duration::from_secs(10), || async {
        handle.service_ids()[1].is_some_and(|id| id != old) && handle.report_counts()[1] >= 1
    })
    .await;
    let new = handle.service_ids()[1].unwrap();
    let service = server.service(new).await;
    assert_eq!(service["binary"], "cinder-backup", "{service}");
    assert_eq!(service["state"], "up", "{service}");
    let kept = handle.report_counts()[0];
    eventually(
        "the other kept beating",
        Duration::from_secs(10),
        || async { handle.report_counts()[0] > kept },
    )
    .await;
    handle.shutdown().await;
}

async fn a_group_logs_an_outage_once(backend: Backend) {
    let logs = Logs::default();
    let _guard = logs.capture();
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let fast = Duration::from_millis(100);
    let handle = group(
        &server,
        "node-3",
        &[
            ("cinder-volume", fast),
            ("cinder-backup", fast),
            ("nova-compute", fast),
        ],
    );
    eventually("beating", Duration::from_secs(10), || async {
        handle.report_counts().iter().all(|&count| count >= 2)
    })
    .await;
    server.stop().await;
    eventually("outage noticed", Duration::from_secs(10), || async {
        logs.count("lost connection to vigil server") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut config = server.config.clone();
    config.listen = server.addr.to_string();
    let server = TestServer::start(config).await;
    let before = handle.report_counts();
    eventually("beating again", Duration::from_secs(10), || async {
        handle
            .report_counts()
            .iter()
            .zip(&before)
            .all(|(now, then)| now > then)
    })
    .await;
    eventually("recovery logged", Duration::from_secs(10), || async {
        logs.count("recovered connection to vigil server") >= 1
    })
    .await;
    let text = logs.text();
    assert_eq!(logs.count("lost connection to vigil server"), 1, "{text}");
    assert_eq!(
        logs.count("recovered connection to vigil server"),
        1,
        "{text}"
    );
    for id in handle.service_ids() {
        assert_eq!(server.service(id.unwrap()).await["state"], "up");
    }
    handle.shutdown().await;
}
