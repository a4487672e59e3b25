//! Active detection, history, the live stream, forced down, suspicion.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vigil_reporter::Reporter;

use crate::harness::{eventually, temp_dir, Backend, EventStream, TestServer};

crate::each_backend!(
    down_is_detected_without_a_list_and_up_on_revival,
    history_filters_and_paging,
    the_stream_resumes_without_loss_or_repeat,
    a_stream_from_before_the_start_reads_the_history_then_follows,
    forced_down_and_unset,
    a_restart_with_live_reporters_declares_nobody_down,
    suspicion_rises_before_the_deadline,
    old_events_are_pruned,
);

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .unwrap()
        .with_timezone(&Utc)
}

async fn events(server: &TestServer, query: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/events{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn down_is_detected_without_a_list_and_up_on_revival(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let mut stream = EventStream::connect(&server, "", None).await;
    let id = server.register("node-1", "cinder-volume").await;
    server.beat(id).await;
    let seen = stream.until("down", Duration::from_secs(10)).await;
    assert_eq!(
        seen.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["registered", "down"]
    );
    let down = &seen[1].data;
    assert_eq!(down["service_id"], id);
    assert_eq!(down["threshold_s"], 1.0);
    let deadline = time(&down["last_seen"]) + chrono::TimeDelta::seconds(1);
    let delay = (time(&down["at"]) - deadline).num_milliseconds();
    assert!(
        (0..1000).contains(&delay),
        "down declared {delay} ms after its deadline"
    );
    server.beat(id).await;
    let seen = stream.until("up", Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(server.service(id).await["state"], "up");
}

async fn history_filters_and_paging(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let a = server.register("host-a", "vol").await;
    let b = server.register("host-b", "sch").await;
    for _ in 0..3 {
        server.register("host-a", "vol").await;
    }
    let patch = |id: i64, body: Value| {
        let server = &server;
        async move {
            let (status, body) = server
                .admin(Method::PATCH, &format!("/v1/services/{id}"), Some(body))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    patch(a, json!({"disabled": true, "disabled_reason": "swap"})).await;
    patch(a, json!({"disabled": false})).await;
    patch(b, json!({"forced_down": true})).await;

    let all = events(&server, "").await;
    assert_eq!(
        kinds(&all),
        [
            "forced_down",
            "enabled",
            "disabled",
            "registered",
            "registered",
            "registered",
            "registered",
            "registered"
        ],
        "newest first"
    );
    assert_eq!(all[2]["reason"], "swap");
    assert_eq!(
        kinds(&events(&server, "?kind=registered&host=host-a").await).len(),
        4
    );
    assert_eq!(
        kinds(&events(&server, "?binary=sch").await),
        ["forced_down", "registered"]
    );
    assert_eq!(
        kinds(&events(&server, &format!("?service={b}")).await),
        ["forced_down", "registered"]
    );
    let (_, own) = server
        .get(&format!("/v1/services/{a}/events?kind=disabled"))
        .await;
    assert_eq!(own["events"].as_array().unwrap().len(), 1);
    let since = all[1]["at"].as_str().unwrap().replace('+', "%2B");
    assert_eq!(
        kinds(&events(&server, &format!("?since={since}")).await),
        ["forced_down", "enabled"]
    );

    let mut paged = Vec::new();
    let mut query = "?limit=3".to_string();
    loop {
        let (_, body) = server.get(&format!("/v1/events{query}")).await;
        paged.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_before"].as_i64() {
            Some(before) => query = format!("?limit=3&before={before}"),
            None => break,
        }
    }
    assert_eq!(paged, all, "pages add up to the whole history");
    let (_, oldest_first) = server
        .get(&format!("/v1/events?after={}&limit=2", all[7]["id"]))
        .await;
    assert_eq!(oldest_first["events"][0]["id"], all[6]["id"]);

    for (query, code) in [
        ("?kind=exploded", "invalid_kind"),
        ("?since=yesterday", "invalid_since"),
        ("?limit=0", "invalid_limit"),
        ("?limit=5000", "invalid_limit"),
        ("?service=x", "invalid_query"),
    ] {
        let (status, body) = server.get(&format!("/v1/events{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
}

async fn the_stream_resumes_without_loss_or_repeat(backend: Backend) {
    let dir = temp_dir();
    let server = TestServer::start(backend.config(dir.path())).await;
    let mut stream = EventStream::connect(&server, "?kind=registered", None).await;
    for i in 0..5 {
        server.register(&format!("h{i}"), "b").await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            stream
                .next(Duration::from_secs(10))
                .await
                .expect("an event"),
        );
    }
    drop(stream);
    for i in 5..10 {
        server.register(&format!("h{i}"), "b").await;
    }
    let mut stream =
        EventStream::connect(&server, "?kind=registered", Some(got.last().unwrap().id)).await;
    for _ in 3..10 {
        got.push(
            stream
                .next(Duration::from_secs(10))
                .await
                .expect("an event"),
        );
    }
    assert!(
        stream.next(Duration::from_millis(300)).await.is_none(),
        "nothing extra"
    );
    let hosts: Vec<String> = got
        .iter()
        .map(|e| e.data["host"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    assert_eq!(hosts, want, "every event once, in order");
}

/// Events from before this server started are not in the feed's memory: a stream that asks
/// for them reads the database, then follows the feed, missing and repeating nothing; a
/// filtered stream with nothing to send there moves on to the feed too.
async fn a_stream_from_before_the_start_reads_the_history_then_follows(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    for i in 0..4 {
        server.register(&format!("h{i}"), "b").await;
    }
    server.restart().await;
    let mut all = EventStream::connect(&server, "?kind=registered&after=0", None).await;
    let mut disabled = EventStream::connect(&server, "?kind=disabled&after=0", None).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            all.next(Duration::from_secs(10))
                .await
                .expect("an old event"),
        );
    }
    let id = server.register("h4", "b").await;
    got.push(
        all.next(Duration::from_secs(10))
            .await
            .expect("a new event"),
    );
    assert!(
        all.next(Duration::from_millis(300)).await.is_none(),
        "nothing extra"
    );
    let hosts: Vec<&str> = got
        .iter()
        .map(|e| e.data["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        ["h0", "h1", "h2", "h3", "h4"],
        "every event once, in order"
    );
    let (status, _) = server
        .patch(
            id,
            json!({"disabled": true, "disabled_reason": "maintenance"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let event = disabled
        .next(Duration::from_secs(10))
        .await
        .expect("the disable");
    assert_eq!(event.data["host"], "h4");
    assert!(disabled.next(Duration::from_millis(300)).await.is_none());
}

async fn forced_down_and_unset(backend: Backend) {
    let dir = temp_dir();
    let mut config = backend.config(dir.path());
    config.service_down_time = 30.0;
    let server = TestServer::start(config).await;
    let id = server.register("node-f", "cinder-volume").await;
    server.beat(id).await;
    let (status, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"forced_down": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "down");
    assert_eq!(body["forced_down"], true);
    let (_, beat) = server.beat(id).await;
    assert_eq!(beat["report_count"], 2, "beats still count");
    assert_eq!(
        server.service(id).await["state"],
        "down",
        "heartbeats do not lift forced down"
    );
    let (_, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"forced_down": false})),
        )
        .await;
    assert_eq!(body["state"], "up");
    assert_eq!(
        kinds(&events(&server, &format!("?service={id}")).await),
        ["unforced", "forced_down", "registered"]
    );
}

async fn a_restart_with_live_reporters_declares_nobody_down(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let handles: Vec<_> = (0..3)
        .map(|i| {
            Reporter::builder(&server.url, format!("live-{i}"), "cinder-volume")
                .report_interval(Duration::from_millis(200))
                .start()
                .unwrap()
        })
        .collect();
    eventually("all beating", Duration::from_secs(10), || async {
        handles.iter().all(|h| h.report_count() >= 2)
    })
    .await;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut config = server.config.clone();
    config.listen = server.addr.to_string();
    let server = TestServer::start(config).await;
    let counts: Vec<i64> = handles.iter().map(|h| h.report_count()).collect();
    eventually("beating again", Duration::from_secs(10), || async {
        handles
            .iter()
            .zip(&counts)
            .all(|(h, c)| h.report_count() > *c + 3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        events(&server, "?kind=down").await.is_empty(),
        "no false down after a restart"
    );
    for handle in handles {
        handle.shutdown().await;
    }
}

async fn suspicion_rises_before_the_deadline(backend: Backend) {
    let dir = temp_dir();
    let mut config = backend.config(dir.path());
    config.service_down_time = 4.0;
    let server = TestServer::start(config).await;
    let handle = Reporter::builder(&server.url, "node-s", "cinder-volume")
        .report_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    eventually(
        "enough beats for suspicion",
        Duration::from_secs(10),
        || async { handle.report_count() >= 12 },
    )
    .await;
    let id = handle.service_id().unwrap();
    let detail = server.service(id).await;
    assert!(
        detail["suspicion"].as_f64().expect("a suspicion level") < 8.0,
        "{detail}"
    );
    assert_eq!(detail["suspect"], false);
    let mut stream = EventStream::connect(&server, &format!("?service={id}"), None).await;
    handle.stop_silently();
    handle.shutdown().await;
    let seen = stream.until("down", Duration::from_secs(10)).await;
    assert_eq!(
        seen.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["suspect", "down"]
    );
    let suspect_at = time(&seen[0].data["at"]);
    let down_at = time(&seen[1].data["at"]);
    assert!(
        down_at - suspect_at > chrono::TimeDelta::seconds(2),
        "suspicion came well before the deadline"
    );
}

async fn old_events_are_pruned(backend: Backend) {
    let dir = temp_dir();
    let mut server = TestServer::start(backend.config(dir.path())).await;
    let id = server.register("old", "b").await;
    eventually("down", Duration::from_secs(10), || async {
        kinds(&events(&server, "").await) == ["down", "registered"]
    })
    .await;
    server.stop().await;
    let mut config = server.config.clone();
    config.event_retention_days = 0.1 / 86_400.0;
    let server = TestServer::start(config).await;
    eventually("pruned at start", Duration::from_secs(10), || async {
        events(&server, "").await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let left = events(&server, "").await;
    assert_eq!(
        kinds(&left),
        ["down"],
        "the latest transition stays, and is not repeated"
    );
    assert_eq!(left[0]["service_id"], id);
}
