//! `GET /metrics`: the exposition parsed (families, labels, one series per service, OpenMetrics
//! negotiation, per-service off, the token), a real Prometheus scraping a real server and
//! seeing a service go down, and the shipped rules through `promtool`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{eventually, temp_dir, under_ci, Backend, TestServer, TOKEN};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a text exposition (Prometheus 0.0.4 or OpenMetrics), with the `# TYPE` of
/// each family.
fn parse(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let mut end = after.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    value.push(if escaped == 'n' { '\n' } else { escaped });
                                }
                            }
                            '"' => {
                                end = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    labels.insert(key.to_string(), value);
                    rest = after[end..].trim_start_matches(',');
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (samples, types)
}

async fn scrape(
    url: &str,
    accept: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

fn labels_of(sample: &Sample) -> BTreeSet<&str> {
    sample.labels.keys().map(String::as_str).collect()
}

const PER_SERVICE: [&str; 6] = [
    "vigil_service_up",
    "vigil_service_flapping",
    "vigil_service_last_heartbeat_timestamp_seconds",
    "vigil_service_report_count",
    "vigil_service_clock_offset_seconds",
    "vigil_service_suspicion_phi",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_fleet_and_the_server() {
    let dir = temp_dir();
    let config = Backend::Sqlite.config(dir.path());
    let (server, metrics_url) = TestServer::start_with_metrics(config).await;
    let mut ids = Vec::new();
    for (host, binary) in [
        ("node-1", "cinder-volume"),
        ("node-1", "cinder-backup"),
        ("node-2", "cinder-volume"),
    ] {
        ids.push(server.register(host, binary).await);
    }
    // node-1's cinder-volume beats, with sent_at, enough for a clock offset and suspicion.
    for _ in 0..5 {
        let sent_at = vigil_proto::ts::format(&chrono::Utc::now());
        let (status, _) = server
            .post(
                &format!("/v1/services/{}/heartbeat", ids[0]),
                json!({"sent_at": sent_at}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.beat(999_999).await.0, StatusCode::NOT_FOUND);
    let (status, _) = server
        .post(
            &format!("/v1/services/{}/heartbeat", ids[0]),
            json!({"zone": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Let them all go down (service_down_time 1 s), then revive node-1's cinder-volume.
    eventually(
        "three down events written",
        Duration::from_secs(10),
        || async {
            let (_, _, text) = scrape(&server.url, None, None).await;
            parse(&text).0.iter().any(|s| {
                s.name == "vigil_events_written_total"
                    && s.labels["kind"] == "down"
                    && s.value == 3.0
            })
        },
    )
    .await;
    server.beat(ids[0]).await;

    let (status, content_type, text) = scrape(&server.url, None, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let (samples, types) = parse(&text);
    let family = |name: &str| {
        samples
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };

    for name in [
        "vigil_services",
        "vigil_service_up",
        "vigil_service_down_time_seconds",
        "vigil_detection_leader",
        "vigil_sse_streams",
        "vigil_heartbeat_lateness_seconds",
        "vigil_flush_duration_seconds",
        "vigil_detection_lag_seconds",
        "vigil_http_request_duration_seconds",
        "vigil_heartbeats_received",
        "vigil_flush_rows",
        "vigil_flush_failures",
        "vigil_events_written",
        "vigil_http_requests",
        "vigil_http_requests_by_protocol",
        "vigil_database_errors",
    ] {
        // Counters' families are named with `_total` in the Prometheus format only.
        assert!(
            types.contains_key(name) || types.contains_key(&format!("{name}_total")),
            "no family {name} in\n{text}"
        );
    }
    // Every per-service family: labels host, binary, zone, source and nothing else (no id).
    let service_labels: BTreeSet<&str> = ["host", "binary", "zone", "source"].into();
    for name in PER_SERVICE {
        let series = family(name);
        assert!(!series.is_empty(), "no {name} series");
        for sample in &series {
            assert_eq!(labels_of(sample), service_labels, "{sample:?}");
            assert_eq!(sample.labels["source"], "vigil");
        }
    }
    let up = family("vigil_service_up");
    assert_eq!(up.len(), 3, "one series per service: {up:?}");
    let up_of = |host: &str, binary: &str| {
        up.iter()
            .find(|s| s.labels["host"] == host && s.labels["binary"] == binary)
            .unwrap_or_else(|| panic!("no vigil_service_up of {host} {binary}"))
            .value
    };
    assert_eq!(up_of("node-1", "cinder-volume"), 1.0);
    assert_eq!(up_of("node-1", "cinder-backup"), 0.0);
    assert_eq!(up_of("node-2", "cinder-volume"), 0.0);
    let count = family("vigil_service_report_count");
    assert_eq!(count.len(), 3);
    let beating = count
        .iter()
        .find(|s| s.labels["host"] == "node-1" && s.labels["binary"] == "cinder-volume")
        .unwrap();
    assert_eq!(beating.value, 6.0);
    // Only the service that beat has a heartbeat time and a clock offset, within a second.
    let stamps = family("vigil_service_last_heartbeat_timestamp_seconds");
    assert_eq!(stamps.len(), 1);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((stamps[0].value - now).abs() < 30.0, "{stamps:?}");
    let offsets = family("vigil_service_clock_offset_seconds");
    assert_eq!(offsets.len(), 1);
    assert!(offsets[0].value.abs() < 1.0, "{offsets:?}");
    assert!(!text.contains("id=\""), "an id label:\n{text}");

    // Fleet counts: one up, two down, all enabled, in zone nova.
    let fleet = family("vigil_services");
    let count_of = |state: &str, status: &str| {
        fleet
            .iter()
            .filter(|s| s.labels["state"] == state && s.labels["status"] == status)
            .map(|s| s.value)
            .sum::<f64>()
    };
    assert_eq!(count_of("up", "enabled"), 1.0);
    assert_eq!(count_of("down", "enabled"), 2.0);
    assert_eq!(
        count_of("up", "disabled") + count_of("down", "disabled"),
        0.0
    );
    for sample in &fleet {
        assert_eq!(
            labels_of(sample),
            ["source", "state", "status", "zone"].into()
        );
    }

    // The server's own.
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum::<f64>()
    };
    assert_eq!(
        value("vigil_heartbeats_received_total", &[("outcome", "ok")]),
        6.0
    );
    assert_eq!(
        value(
            "vigil_heartbeats_received_total",
            &[("outcome", "not_found")]
        ),
        1.0
    );
    assert_eq!(
        value("vigil_heartbeats_received_total", &[("outcome", "invalid")]),
        1.0
    );
    assert_eq!(value("vigil_heartbeat_lateness_seconds_count", &[]), 5.0);
    assert_eq!(
        value("vigil_events_written_total", &[("kind", "registered")]),
        3.0
    );
    // All three went down during the sleep (node-1's cinder-volume too, revived since).
    assert_eq!(
        value("vigil_events_written_total", &[("kind", "down")]),
        3.0
    );
    assert_eq!(value("vigil_detection_lag_seconds_count", &[]), 3.0);
    assert!(value("vigil_flush_rows_total", &[]) >= 1.0);
    assert_eq!(value("vigil_detection_leader", &[]), 1.0);
    assert_eq!(value("vigil_service_down_time_seconds", &[]), 1.0);
    assert_eq!(value("vigil_build_info", &[]), 1.0);
    assert_eq!(
        value(
            "vigil_http_requests_total",
            &[
                ("route", "/v1/services/{id}/heartbeat"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        6.0
    );
    // Route templates only: no raw path with an id.
    for sample in samples.iter().filter(|s| s.labels.contains_key("route")) {
        let route = &sample.labels["route"];
        assert!(
            !route
                .split('/')
                .any(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit())),
            "raw path as route: {sample:?}"
        );
    }

    // OpenMetrics when asked; the same families.
    let (status, content_type, open) = scrape(
        &server.url,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open.ends_with("# EOF\n"));
    let (open_samples, _) = parse(&open);
    assert_eq!(
        open_samples
            .iter()
            .filter(|s| s.name == "vigil_service_up")
            .count(),
        3
    );

    // The listener of its own serves the same, and nothing else.
    let (status, _, own) = scrape(&metrics_url, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        parse(&own)
            .0
            .iter()
            .filter(|s| s.name == "vigil_service_up")
            .count(),
        3
    );
    let response = reqwest::get(format!("{metrics_url}/v1/services"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let response = reqwest::Client::new()
        .post(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

/// The value of an unlabelled sample of `name` in a scrape of `url`.
async fn scraped(url: &str, name: &str) -> Option<f64> {
    let (_, _, text) = scrape(url, None, None).await;
    parse(&text)
        .0
        .into_iter()
        .find(|s| s.name == name && s.labels.is_empty())
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_event_streams_are_counted() {
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    assert_eq!(scraped(&server.url, "vigil_sse_streams").await, Some(0.0));
    let first = crate::harness::EventStream::connect(&server, "", None).await;
    let second = crate::harness::EventStream::connect(&server, "?kind=down", None).await;
    eventually("two streams counted", Duration::from_secs(5), || async {
        scraped(&server.url, "vigil_sse_streams").await == Some(2.0)
    })
    .await;
    drop(first);
    drop(second);
    eventually(
        "closed streams no longer counted",
        Duration::from_secs(5),
        || async { scraped(&server.url, "vigil_sse_streams").await == Some(0.0) },
    )
    .await;
}

/// Two replicas on one PostgreSQL schema: exactly one exports `vigil_detection_leader 1`,
/// and both export the service registered and beaten through one of them (so `max by`
/// across replicas, as the rules take it, is right).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_export_one_leader_and_the_same_fleet() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let dirs = [temp_dir(), temp_dir()];
    let mut a = TestServer::start(backend.config(dirs[0].path())).await;
    let mut b = TestServer::start(backend.config(dirs[1].path())).await;
    eventually(
        "one leader among two replicas",
        Duration::from_secs(10),
        || async {
            let leaders = (
                scraped(&a.url, "vigil_detection_leader").await,
                scraped(&b.url, "vigil_detection_leader").await,
            );
            matches!(leaders, (Some(x), Some(y)) if x + y == 1.0)
        },
    )
    .await;
    let id = a.register("node-9", "cinder-volume").await;
    let up_on = |server: &TestServer| {
        let url = server.url.clone();
        async move {
            let (_, _, text) = scrape(&url, None, None).await;
            parse(&text)
                .0
                .into_iter()
                .find(|s| s.name == "vigil_service_up" && s.labels["host"] == "node-9")
                .map(|s| s.value)
        }
    };
    eventually(
        "both replicas export the service up",
        Duration::from_secs(10),
        || async {
            b.beat(id).await;
            up_on(&a).await == Some(1.0) && up_on(&b).await == Some(1.0)
        },
    )
    .await;
    b.stop().await;
    a.stop().await;
    backend.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_service_metrics_can_be_turned_off_and_a_token_required() {
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.metrics.per_service = false;
    config.metrics.require_token = true;
    let server = TestServer::start(config).await;
    server.register("node-1", "cinder-volume").await;
    let (status, _, body) = scrape(&server.url, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    let (status, _, _) = scrape(&server.url, None, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, text) = scrape(&server.url, None, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let (samples, types) = parse(&text);
    for name in PER_SERVICE {
        assert!(!types.contains_key(name), "{name} with per_service off");
    }
    let fleet: f64 = samples
        .iter()
        .filter(|s| s.name == "vigil_services")
        .map(|s| s.value)
        .sum();
    assert_eq!(fleet, 1.0);
}

/// A tool of the Prometheus package, or `None` (test skipped, said so) when it is not
/// installed; under CI a missing tool fails the test, as `Backend::postgres` does.
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    match found {
        Some(path) => Some(path),
        None if under_ci() => {
            panic!("{name} is required under CI (scripts/test installs the prometheus package)")
        }
        None => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping a Prometheus test: {name} is not installed (apt-get install prometheus)"
            );
            None
        }
    }
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus")
}

#[test]
fn the_shipped_rules_pass_promtool() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let dir = rules_dir();
    for args in [
        vec!["check", "rules", "vigil.rules.yml"],
        vec!["test", "rules", "vigil.rules.test.yml"],
    ] {
        let output = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            output.status.success(),
            "promtool {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Prometheus's own linter (`promtool check metrics`) finds nothing in a scrape but the one
/// name kept on purpose: `vigil_service_report_count` is Cinder's column's name, a gauge whose
/// `_count` suffix the linter reserves for histograms and summaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_lint() {
    let Some(promtool) = prometheus_tool("promtool") else {
        return;
    };
    let dir = temp_dir();
    let server = TestServer::start(Backend::Sqlite.config(dir.path())).await;
    let id = server.register("node-1", "cinder-volume").await;
    for _ in 0..4 {
        server.beat(id).await;
    }
    let (_, _, text) = scrape(&server.url, None, None).await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let findings: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("vigil_service_report_count "))
        .map(str::to_string)
        .collect();
    assert!(
        findings.is_empty(),
        "promtool check metrics: {findings:?}\n{text}"
    );
}

/// A Prometheus process, killed when dropped (a failed assertion too).
struct PrometheusGuard {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for PrometheusGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusGuard {
    /// Starts Prometheus scraping `target` (host:port) every second.
    fn start(binary: &Path, target: &str) -> PrometheusGuard {
        let dir = temp_dir();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        PrometheusGuard {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query's only sample, if it has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        let result = body["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }
}

/// A real Prometheus scrapes a real server: a heartbeating service shows up 1, and 0 once its
/// heartbeats stop for longer than service_down_time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_a_service_go_down() {
    let Some(binary) = prometheus_tool("prometheus") else {
        return;
    };
    let dir = temp_dir();
    let mut config = Backend::Sqlite.config(dir.path());
    config.service_down_time = 2.0;
    let server = TestServer::start(config).await;
    let (status, body) = server
        .post(
            "/v1/services",
            json!({"host": "prom-node", "binary": "cinder-volume", "report_interval": 1.0}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let id = body["id"].as_i64().unwrap();
    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let beats = {
        let beating = beating.clone();
        let url = format!("{}/v1/services/{id}/heartbeat", server.url);
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while beating.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http.post(&url).json(&json!({})).send().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let prometheus = PrometheusGuard::start(&binary, &server.addr.to_string());
    let query = r#"vigil_service_up{host="prom-node",binary="cinder-volume"}"#;
    let started = Instant::now();
    let limit = Duration::from_secs(30);
    loop {
        if prometheus.query(query).await == Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "prometheus never showed the service up within {limit:?}; its log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(prometheus.query(r#"up{job="vigil"}"#).await, Some(1.0));
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    beats.await.unwrap();
    let stopped = Instant::now();
    eventually(
        "prometheus shows the service down",
        Duration::from_secs(20),
        || async { prometheus.query(query).await == Some(0.0) },
    )
    .await;
    // Down after service_down_time (2 s) and within a few scrapes of it.
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(
        prometheus
            .query(r#"sum(vigil_services{state="down",zone="nova"})"#)
            .await,
        Some(1.0)
    );
    drop(prometheus);
}
