//! The doctor: each known cause of "down" is produced for real and must be named, with the right
//! severity and remedy, by `GET /v1/services/{id}/diagnosis`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vigil_reporter::{OffsetClock, Reporter, ReporterHandle};

use crate::harness::{eventually, temp_dir, Backend, TestServer};

crate::each_backend!(
    a_healthy_service_is_all_ok,
    an_interval_not_shorter_than_service_down_time_is_an_error,
    an_interval_close_to_service_down_time_is_a_warning,
    a_skewed_reporter_clock_is_judged_against_cinders_tolerance,
    late_beats_from_an_overrunning_reporter_are_a_warning,
    a_failing_health_check_is_alive_but_failing_not_late,
    stopped_beats_are_an_error_apart_from_late_ones,
    a_service_that_never_beat_is_named,
    disabled_names_when_and_why,
    forced_down_is_an_error_with_its_remedy,
    a_crash_loop_is_an_error_and_one_restart_is_not,
    interleaved_sent_at_means_two_processes,
    two_real_reporters_as_one_service_are_flagged,
    an_unknown_service_has_no_diagnosis,
);

const CHECKS: [&str; 12] = [
    "interval",
    "clock",
    "punctuality",
    "heartbeat",
    "health",
    "flapping",
    "reach",
    "maintenance",
    "forced_down",
    "disabled",
    "restarts",
    "duplicate",
];

async fn start(backend: &Backend, dir: &std::path::Path, service_down_time: f64) -> TestServer {
    let mut config = backend.config(dir);
    config.service_down_time = service_down_time;
    TestServer::start(config).await
}

async fn diagnosis(server: &TestServer, id: i64) -> Value {
    let (status, body) = server.get(&format!("/v1/services/{id}/diagnosis")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The finding of `check`; every diagnosis has exactly one per check.
fn finding(diagnosis: &Value, check: &str) -> Value {
    let findings = diagnosis["findings"].as_array().expect("findings");
    let names: Vec<&str> = findings
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert_eq!(names, CHECKS, "one finding per check, in order");
    findings
        .iter()
        .find(|f| f["check"] == check)
        .cloned()
        .unwrap()
}

async fn severity_of(server: &TestServer, id: i64, check: &str) -> String {
    finding(&diagnosis(server, id).await, check)["severity"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until `check` has `severity`; returns that finding.
async fn wait_for(server: &TestServer, id: i64, check: &str, severity: &str) -> Value {
    eventually(
        &format!("{check} is {severity}"),
        Duration::from_secs(10),
        || async { severity_of(server, id, check).await == severity },
    )
    .await;
    finding(&diagnosis(server, id).await, check)
}

fn text(finding: &Value, field: &str) -> String {
    finding[field].as_str().unwrap_or_default().to_owned()
}

async fn register(server: &TestServer, host: &str, binary: &str, interval: f64) -> i64 {
    let (status, body) = server
        .post(
            "/v1/services",
            json!({"host": host, "binary": binary, "report_interval": interval}),
        )
        .await;
    assert!(status.is_success(), "register: {status} {body}");
    body["id"].as_i64().unwrap()
}

async fn beat(server: &TestServer, id: i64, body: Value) {
    let (status, answer) = server
        .post(&format!("/v1/services/{id}/heartbeat"), body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

fn reporter(server: &TestServer, interval_ms: u64) -> vigil_reporter::ReporterBuilder {
    Reporter::builder(&server.url, "node-1", "cinder-volume")
        .report_interval(Duration::from_millis(interval_ms))
}

async fn started(handle: &ReporterHandle, beats: i64) -> i64 {
    eventually("reporter beating", Duration::from_secs(10), || async {
        handle.report_count() >= beats
    })
    .await;
    handle.service_id().unwrap()
}

async fn a_healthy_service_is_all_ok(backend: Backend) {
    let dir = temp_dir();
    // Wide margins (0.25 s before a beat counts as late) so a loaded machine does not fail it.
    let server = start(&backend, dir.path(), 2.0).await;
    let handle = reporter(&server, 500).start().unwrap();
    let id = started(&handle, 3).await;
    let body = diagnosis(&server, id).await;
    assert_eq!(body["service"]["state"], "up");
    for check in CHECKS {
        let found = finding(&body, check);
        assert_eq!(found["severity"], "ok", "{found}");
    }
    handle.shutdown().await;
}

async fn an_interval_not_shorter_than_service_down_time_is_an_error(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let id = register(&server, "node-1", "cinder-volume", 1.5).await;
    let found = finding(&diagnosis(&server, id).await, "interval");
    assert_eq!(found["severity"], "error", "{found}");
    assert!(
        text(&found, "summary").contains("can never stay up"),
        "{found}"
    );
    assert!(text(&found, "detail").contains("2.5 x"), "{found}");
    assert!(
        text(&found, "remedy").contains("at most 0.33 s")
            && text(&found, "remedy").contains("at least 4.5 s"),
        "{found}"
    );
}

async fn an_interval_close_to_service_down_time_is_a_warning(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let id = register(&server, "node-1", "cinder-volume", 0.5).await;
    let found = finding(&diagnosis(&server, id).await, "interval");
    assert_eq!(found["severity"], "warning", "{found}");
    assert!(
        text(&found, "summary").contains("one late or lost heartbeat flips it down"),
        "{found}"
    );
    assert!(text(&found, "remedy").contains("service_down_time"));
}

/// Cinder tolerates `service_down_time - report_interval` of skew (the seed's step 2): 59.8 s
/// here with 60 s, so 90 s either way is an error; with 120 s it is within tolerance but still
/// more than a second, a warning. Either way Vigil shows the service up.
async fn a_skewed_reporter_clock_is_judged_against_cinders_tolerance(backend: Backend) {
    for (offset_s, service_down_time, severity, words) in [
        (90, 60.0, "error", "90 s ahead of"),
        (-90, 60.0, "error", "90 s behind"),
        (90, 120.0, "warning", "90 s ahead of"),
        (-90, 120.0, "warning", "90 s behind"),
    ] {
        let dir = temp_dir();
        let server = start(&backend, dir.path(), service_down_time).await;
        let clock = OffsetClock(TimeDelta::seconds(offset_s));
        // Its own host: on PostgreSQL the four cases share one schema.
        let host = format!("node-{offset_s}-{service_down_time}");
        let handle = Reporter::builder(&server.url, host, "cinder-volume")
            .report_interval(Duration::from_millis(200))
            .clock(Arc::new(clock))
            .start()
            .unwrap();
        let id = started(&handle, 2).await;
        let body = diagnosis(&server, id).await;
        let found = finding(&body, "clock");
        assert_eq!(found["severity"], severity, "{offset_s} s: {found}");
        assert!(text(&found, "summary").contains(words), "{found}");
        if severity == "error" {
            assert!(
                text(&found, "summary")
                    .contains("under Cinder's rule this service would be shown down"),
                "{found}"
            );
        }
        assert!(text(&found, "detail").contains("unaffected"), "{found}");
        assert!(text(&found, "remedy").contains("NTP"), "{found}");
        assert_eq!(
            body["service"]["state"], "up",
            "liveness uses the server's clock"
        );
        handle.shutdown().await;
    }
}

/// A scripted reporter declaring 0.1 s but beating every 0.25 s and saying its loop overran.
async fn late_beats_from_an_overrunning_reporter_are_a_warning(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let id = register(&server, "node-1", "cinder-volume", 0.1).await;
    for _ in 0..4 {
        beat(&server, id, json!({"overrun_s": 0.15})).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    beat(&server, id, json!({"overrun_s": 0.15})).await;
    let body = diagnosis(&server, id).await;
    let late = finding(&body, "punctuality");
    assert_eq!(late["severity"], "warning", "{late}");
    let summary = text(&late, "summary");
    assert!(
        summary.starts_with("beats arrive but late: gaps p99 0.2"),
        "{summary}"
    );
    assert!(summary.contains("for report_interval 0.1 s"), "{summary}");
    assert!(summary.contains("agent overloaded or blocked"), "{summary}");
    assert!(text(&late, "detail").contains("outlasted report_interval by 0.15 s"));
    assert!(
        text(&late, "remedy").contains("blocks or starves"),
        "{late}"
    );
    assert_eq!(finding(&body, "heartbeat")["severity"], "ok");
}

/// The real reporter with a failing health check: it sends every beat with `health: failing`
/// and the reason instead of skipping it, so the service is up, on time, and alive but failing;
/// when the check passes again, the health is ok again. Each change is an event.
async fn a_failing_health_check_is_alive_but_failing_not_late(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let check = healthy.clone();
    let handle = reporter(&server, 200)
        .health_check(move || {
            if check.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("volume backend not responding".into())
            }
        })
        .start()
        .unwrap();
    let id = started(&handle, 4).await;
    let body = diagnosis(&server, id).await;
    let failing = finding(&body, "health");
    assert_eq!(failing["severity"], "error", "{failing}");
    assert_eq!(
        text(&failing, "summary"),
        "alive but failing: volume backend not responding"
    );
    assert_eq!(body["service"]["state"], "up");
    assert_eq!(body["service"]["health"], "failing");
    assert_eq!(finding(&body, "heartbeat")["severity"], "ok");
    assert_eq!(finding(&body, "punctuality")["severity"], "ok");
    healthy.store(true, Ordering::Relaxed);
    wait_for(&server, id, "health", "ok").await;
    let reasons = || async {
        let (_, events) = server
            .get(&format!("/v1/services/{id}/events?kind=health"))
            .await;
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
            "failing: volume backend not responding (first reported)",
            "ok (was failing)"
        ]
    );
    handle.shutdown().await;
}

async fn stopped_beats_are_an_error_apart_from_late_ones(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let handle = reporter(&server, 200).start().unwrap();
    let id = started(&handle, 4).await;
    handle.stop_silently();
    handle.shutdown().await;
    let silent = wait_for(&server, id, "heartbeat", "error").await;
    let summary = text(&silent, "summary");
    assert!(summary.starts_with("no heartbeat for "), "{summary}");
    assert!(
        summary.ends_with("process stopped, host down or network cut"),
        "{summary}"
    );
    assert!(text(&silent, "remedy").contains("node-1"), "{silent}");
    let body = diagnosis(&server, id).await;
    assert_eq!(body["service"]["state"], "down");
    assert_ne!(
        finding(&body, "punctuality")["severity"],
        "error",
        "a stop is not lateness"
    );
}

async fn a_service_that_never_beat_is_named(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let id = register(&server, "node-1", "cinder-volume", 0.2).await;
    assert_eq!(severity_of(&server, id, "heartbeat").await, "ok");
    let silent = wait_for(&server, id, "heartbeat", "error").await;
    assert!(
        text(&silent, "summary").starts_with("never heartbeated since registration"),
        "{silent}"
    );
}

async fn disabled_names_when_and_why(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 60.0).await;
    let id = register(&server, "node-1", "cinder-volume", 0.2).await;
    assert_eq!(severity_of(&server, id, "disabled").await, "ok");
    let (status, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"disabled": true, "disabled_reason": "disk swap"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = finding(&diagnosis(&server, id).await, "disabled");
    assert_eq!(found["severity"], "warning", "{found}");
    let summary = text(&found, "summary");
    let year = Utc::now().format(" at %Y-").to_string();
    assert!(summary.starts_with("disabled by an admin"), "{summary}");
    assert!(summary.contains(&year), "names when: {summary}");
    assert!(summary.contains("reason: disk swap"), "{summary}");
    assert_eq!(
        text(&found, "remedy"),
        "when the reason no longer holds: vigil service enable node-1 cinder-volume"
    );
}

async fn forced_down_is_an_error_with_its_remedy(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 60.0).await;
    let id = register(&server, "node-1", "cinder-volume", 0.2).await;
    beat(&server, id, json!({})).await;
    let (status, body) = server
        .admin(
            Method::PATCH,
            &format!("/v1/services/{id}"),
            Some(json!({"forced_down": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = diagnosis(&server, id).await;
    assert_eq!(body["service"]["state"], "down");
    let found = finding(&body, "forced_down");
    assert_eq!(found["severity"], "error", "{found}");
    assert!(
        text(&found, "summary").contains("shown down whatever its heartbeats say"),
        "{found}"
    );
    assert!(
        text(&found, "summary").contains(" at "),
        "names when: {found}"
    );
    assert_eq!(
        text(&found, "remedy"),
        "once the host is fenced and repaired: vigil service force-down node-1 cinder-volume --unset"
    );
    assert_eq!(finding(&body, "heartbeat")["severity"], "ok");
}

async fn a_crash_loop_is_an_error_and_one_restart_is_not(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 60.0).await;
    let looping = register(&server, "node-1", "cinder-volume", 0.2).await;
    for _ in 0..4 {
        assert_eq!(
            register(&server, "node-1", "cinder-volume", 0.2).await,
            looping
        );
    }
    let restarted = register(&server, "node-2", "cinder-volume", 0.2).await;
    register(&server, "node-2", "cinder-volume", 0.2).await;

    let found = finding(&diagnosis(&server, looping).await, "restarts");
    assert_eq!(found["severity"], "error", "{found}");
    assert!(
        text(&found, "summary").starts_with(
            "registered again 4 times in the last 15 min: the process is in a crash loop"
        ),
        "{found}"
    );
    assert!(text(&found, "remedy").contains("log of cinder-volume on node-1"));
    let found = finding(&diagnosis(&server, restarted).await, "restarts");
    assert_eq!(found["severity"], "ok", "{found}");
    assert_eq!(
        text(&found, "summary"),
        "started again once in the last 15 min"
    );
}

/// Two processes with different clocks beating as one service: `sent_at` goes back and forth.
async fn interleaved_sent_at_means_two_processes(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 60.0).await;
    let id = register(&server, "node-1", "cinder-volume", 0.2).await;
    for i in 0..6 {
        let skew = if i % 2 == 0 { 0 } else { -5 };
        let sent_at =
            (Utc::now() + TimeDelta::seconds(skew)).to_rfc3339_opts(SecondsFormat::Micros, true);
        beat(&server, id, json!({"sent_at": sent_at})).await;
    }
    let found = finding(&diagnosis(&server, id).await, "duplicate");
    assert_eq!(found["severity"], "error", "{found}");
    assert_eq!(
        text(&found, "summary"),
        "two processes report as cinder-volume on node-1: their sent_at series interleave"
    );
    assert!(
        text(&found, "detail").contains("went backwards 3 times"),
        "{found}"
    );
    assert!(text(&found, "remedy").contains("stop it"), "{found}");
}

/// Two real reporters on one machine share a clock, so their `sent_at` rarely goes back; the
/// rate gives them away: beats arrive twice as often as declared.
async fn two_real_reporters_as_one_service_are_flagged(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 2.0).await;
    let first = reporter(&server, 200).start().unwrap();
    let id = started(&first, 1).await;
    let second = reporter(&server, 200).start().unwrap();
    assert_eq!(started(&second, 1).await, id);
    eventually("duplicate flagged", Duration::from_secs(10), || async {
        severity_of(&server, id, "duplicate").await != "ok"
    })
    .await;
    let found = finding(&diagnosis(&server, id).await, "duplicate");
    assert!(
        text(&found, "summary").contains("two processes report as cinder-volume on node-1"),
        "{found}"
    );
    first.shutdown().await;
    second.shutdown().await;
}

async fn an_unknown_service_has_no_diagnosis(backend: Backend) {
    let dir = temp_dir();
    let server = start(&backend, dir.path(), 1.0).await;
    let (status, body) = server.get("/v1/services/999/diagnosis").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "service_not_found");
    let (status, body) = server.get("/v1/services/x/diagnosis").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_id");
}
