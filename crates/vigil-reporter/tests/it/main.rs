//! The reporter against a scripted HTTP stub on 127.0.0.1 (the real server is tested with the
//! reporter on the server side; the reporter must not depend on it).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil_proto::{HeartbeatRequest, RegisterRequest};
use vigil_reporter::{OffsetClock, Reporter, ReporterError};

/// One request the stub received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    authorization: Option<String>,
    body: String,
}

impl Request {
    fn is_heartbeat(&self) -> bool {
        self.path.ends_with("/heartbeat")
    }

    fn heartbeat(&self) -> HeartbeatRequest {
        serde_json::from_str(&self.body).expect("heartbeat body")
    }
}

type Handler = Arc<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

/// A minimal HTTP/1.1 server answering each request from `handler`, one request per connection.
#[derive(Clone)]
struct Stub {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Stub {
    async fn serve(listener: TcpListener, handler: Handler) -> Stub {
        let stub = Stub {
            requests: Arc::default(),
        };
        let requests = stub.requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, handler.clone(), requests.clone()));
            }
        });
        stub
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn heartbeats(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::is_heartbeat)
            .collect()
    }
}

async fn answer(mut stream: TcpStream, handler: Handler, requests: Arc<Mutex<Vec<Request>>>) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    while data.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
    let request = Request {
        path: head.split(' ').nth(1).unwrap_or_default().to_owned(),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned(),
    };
    let (status, body) = handler(&request);
    requests.lock().unwrap().push(request);
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A well-behaved server: registers every service as `id`, counts beats.
fn healthy_server(id: i64) -> Handler {
    let beats = AtomicI64::new(0);
    Arc::new(move |request| {
        if request.is_heartbeat() {
            let count = beats.fetch_add(1, Ordering::SeqCst) + 1;
            (
                200,
                format!(r#"{{"report_count":{count},"service_down_time":60.0}}"#),
            )
        } else {
            (201, format!(r#"{{"id":{id},"report_count":0}}"#))
        }
    })
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// Polls `condition` until it holds, failing the test after 10 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `tracing` writer into a shared buffer, to assert on log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn count(&self, text: &str) -> usize {
        self.text().matches(text).count()
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const FAST: Duration = Duration::from_millis(100);

#[tokio::test]
async fn registers_then_beats_with_token_and_the_reporter_clock() {
    let (listener, url) = listener().await;
    let stub = Stub::serve(listener, healthy_server(7)).await;
    let reporter = Reporter::builder(&url, "node-1", "cinder-volume")
        .topic("volume")
        .zone("az-1")
        .version("1.2.3")
        .report_interval(FAST)
        .service_down_time(Duration::from_secs(5))
        .token("s3cret")
        .clock(Arc::new(OffsetClock(chrono::Duration::seconds(90))))
        .start()
        .unwrap();
    eventually("three beats", || reporter.report_count() >= 3).await;
    assert_eq!(reporter.service_id(), Some(7));
    reporter.shutdown().await;

    let requests = stub.requests();
    let registration: RegisterRequest = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(requests[0].path, "/v1/services");
    assert_eq!(
        registration,
        RegisterRequest {
            host: "node-1".into(),
            binary: "cinder-volume".into(),
            topic: Some("volume".into()),
            zone: Some("az-1".into()),
            report_interval: Some(0.1),
            version: Some("1.2.3".into()),
            service_down_time: Some(5.0),
        }
    );
    assert!(requests
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer s3cret")));
    let beats = stub.heartbeats();
    assert!(beats.iter().all(|r| r.path == "/v1/services/7/heartbeat"));
    let (first, second) = (beats[0].heartbeat(), beats[1].heartbeat());
    let skew = first.sent_at.unwrap() - chrono::Utc::now();
    assert!(
        (80..=90).contains(&skew.num_seconds()),
        "sent_at is not 90 s ahead: {skew}"
    );
    assert_eq!(first.zone.as_deref(), Some("az-1"));
    assert_eq!(first.last_rtt_s, None);
    assert!(second.last_rtt_s.unwrap() > 0.0);
    assert!(second.overrun_s.is_some());
    assert_eq!(second.last_error, None);
}

#[tokio::test]
async fn a_deleted_service_is_registered_again() {
    let (logs, _guard) = Logs::capture();
    let (listener, url) = listener().await;
    let registrations = AtomicI64::new(0);
    let deleted_once = AtomicBool::new(false);
    let handler: Handler = Arc::new(move |request| {
        if !request.is_heartbeat() {
            let id = registrations.fetch_add(1, Ordering::SeqCst) + 1;
            return (201, format!(r#"{{"id":{id},"report_count":0}}"#));
        }
        if request.path == "/v1/services/1/heartbeat" && !deleted_once.swap(true, Ordering::SeqCst)
        {
            let body = r#"{"error":{"code":"service_not_found","message":"no service 1"}}"#;
            return (404, body.to_owned());
        }
        (
            200,
            r#"{"report_count":5,"service_down_time":60}"#.to_owned(),
        )
    });
    let stub = Stub::serve(listener, handler).await;
    let reporter = Reporter::builder(&url, "node-1", "cinder-backup")
        .report_interval(FAST)
        .start()
        .unwrap();
    eventually("registered again", || reporter.service_id() == Some(2)).await;
    eventually("beating again", || reporter.report_count() == 5).await;
    reporter.shutdown().await;

    assert_eq!(
        logs.count("service was deleted on the server, registered again"),
        1
    );
    // The beat after the new registration goes out in the same tick, to the new id.
    let paths: Vec<String> = stub.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths[..4],
        [
            "/v1/services",
            "/v1/services/1/heartbeat",
            "/v1/services",
            "/v1/services/2/heartbeat"
        ]
    );
}

#[tokio::test]
async fn an_outage_is_logged_once_and_so_is_the_recovery() {
    let (logs, _guard) = Logs::capture();
    let (listener, url) = listener().await;
    let address = listener.local_addr().unwrap();
    drop(listener);
    let reporter = Reporter::builder(&url, "node-1", "cinder-volume")
        .report_interval(FAST)
        .start()
        .unwrap();
    eventually("the outage is noticed", || {
        logs.count("lost connection to vigil server") == 1
    })
    .await;
    tokio::time::sleep(FAST * 4).await;
    assert_eq!(reporter.service_id(), None);

    let stub = Stub::serve(TcpListener::bind(address).await.unwrap(), healthy_server(3)).await;
    eventually("a beat after the outage", || reporter.report_count() >= 2).await;
    reporter.shutdown().await;

    assert_eq!(logs.count("lost connection to vigil server"), 1);
    assert_eq!(logs.count("recovered connection to vigil server"), 1);
    let first_beat = stub.heartbeats()[0].heartbeat();
    let error = first_beat.last_error.expect("the outage is reported");
    assert!(error.starts_with("registration failed: "), "{error}");
    assert_eq!(stub.heartbeats()[1].heartbeat().last_error, None);
}

#[tokio::test]
async fn a_server_that_never_answers_costs_one_log_line_and_no_overrun() {
    let (logs, _guard) = Logs::capture();
    let (listener, url) = listener().await;
    let held = Arc::new(Mutex::new(Vec::new()));
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            holder.lock().unwrap().push(stream);
        }
    });
    // A wider interval than FAST leaves the 5% slack some room on a loaded machine.
    let reporter = Reporter::builder(&url, "node-1", "cinder-volume")
        .report_interval(FAST * 2)
        .start()
        .unwrap();
    // Registration at start, then one attempt per tick, each given up before the next tick.
    eventually("five attempts", || held.lock().unwrap().len() >= 5).await;
    reporter.shutdown().await;
    assert_eq!(
        logs.count("lost connection to vigil server"),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(logs.count("no answer within the time allowed to a tick"), 1);
    assert_eq!(logs.count("outlasted"), 0, "{}", logs.text());
}

#[tokio::test]
async fn a_failing_health_check_is_sent_with_the_beats() {
    let (logs, _guard) = Logs::capture();
    let (listener, url) = listener().await;
    let stub = Stub::serve(listener, healthy_server(1)).await;
    let working = Arc::new(AtomicBool::new(false));
    let check = working.clone();
    let reporter = Reporter::builder(&url, "node-1", "cinder-volume")
        .report_interval(FAST)
        .health_check(move || {
            if check.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("backend unreachable".to_owned())
            }
        })
        .start_on(&tokio::runtime::Handle::current())
        .unwrap();
    eventually("two beats", || reporter.report_count() >= 2).await;
    working.store(true, Ordering::SeqCst);
    eventually("a healthy beat", || {
        stub.heartbeats()
            .iter()
            .any(|r| r.heartbeat().health == Some(vigil_reporter::HealthStatus::Ok))
    })
    .await;
    reporter.shutdown().await;
    let beats: Vec<_> = stub.heartbeats().iter().map(|r| r.heartbeat()).collect();
    assert_eq!(beats[0].health, Some(vigil_reporter::HealthStatus::Failing));
    assert_eq!(beats[0].message.as_deref(), Some("backend unreachable"));
    assert_eq!(beats[0].last_error, None, "a health is not an error");
    let ok = beats
        .iter()
        .find(|b| b.health == Some(vigil_reporter::HealthStatus::Ok));
    assert_eq!(ok.unwrap().message, None);
    assert_eq!(logs.count("health check fails"), 1, "{}", logs.text());
    assert_eq!(
        logs.count("health check passes again"),
        1,
        "{}",
        logs.text()
    );
}

#[test]
fn stop_and_wait_from_sync_code() {
    // Port 9 (discard) on loopback: nothing listens, the reporter just keeps trying.
    let reporter = Reporter::builder("http://127.0.0.1:9/", "node-1", "cinder-volume")
        .report_interval(FAST)
        .start()
        .unwrap();
    std::thread::sleep(FAST * 3);
    let started = std::time::Instant::now();
    reporter.stop();
    reporter.stop();
    reporter.wait();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn bad_settings_are_refused_at_start() {
    let refused = |builder: vigil_reporter::ReporterBuilder| builder.start().unwrap_err();

    let err = refused(Reporter::builder("ftp://x", "h", "b"));
    assert!(matches!(err, ReporterError::InvalidUrl { .. }));
    assert_eq!(
        err.to_string(),
        r#"invalid server url "ftp://x": scheme must be http or https, not ftp"#
    );
    let err = refused(Reporter::builder("http://x", " ", "b"));
    assert_eq!(err.to_string(), "invalid host: must not be empty");
    let err = refused(Reporter::builder("http://x", "h", "b").zone("z".repeat(256)));
    assert_eq!(
        err.to_string(),
        "invalid zone: is longer than 255 characters"
    );
    let err = refused(Reporter::builder("http://x", "h", "b").report_interval(Duration::ZERO));
    assert_eq!(
        err.to_string(),
        "report interval must be between 0.1 and 3600 seconds, not 0.000"
    );
    let err = refused(Reporter::builder("http://x", "h", "b").request_timeout(Duration::ZERO));
    assert!(matches!(err, ReporterError::ZeroTimeout));
}

#[test]
fn handles_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<vigil_reporter::ReporterHandle>();
    shareable::<vigil_reporter::LoopHandle>();
    shareable::<vigil_reporter::ReporterBuilder>();
    shareable::<vigil_reporter::ReporterGroupHandle>();
    shareable::<vigil_reporter::ReporterGroupBuilder>();
}

/// A server for groups: registers each binary under its own id (1, 2, ... in order of first
/// registration) and answers every batch with one result per beat.
fn batch_server() -> Handler {
    let ids = Mutex::new(Vec::<String>::new());
    let counts = Mutex::new(std::collections::HashMap::<i64, i64>::new());
    Arc::new(move |request| {
        if request.path == "/v1/heartbeats" {
            let batch: vigil_proto::BatchHeartbeatRequest =
                serde_json::from_str(&request.body).expect("batch body");
            let mut counts = counts.lock().unwrap();
            let results: Vec<String> = batch
                .beats
                .iter()
                .map(|beat| {
                    let count = counts.entry(beat.id).or_default();
                    *count += 1;
                    format!(r#"{{"id":{},"report_count":{count}}}"#, beat.id)
                })
                .collect();
            (
                200,
                format!(
                    r#"{{"results":[{}],"service_down_time":60.0}}"#,
                    results.join(",")
                ),
            )
        } else {
            let registration: RegisterRequest = serde_json::from_str(&request.body).unwrap();
            let mut ids = ids.lock().unwrap();
            let id = match ids.iter().position(|b| *b == registration.binary) {
                Some(at) => at + 1,
                None => {
                    ids.push(registration.binary);
                    ids.len()
                }
            };
            (201, format!(r#"{{"id":{id},"report_count":0}}"#))
        }
    })
}

/// Each tick of a group sends one batch for the services due; each keeps its own interval.
#[tokio::test]
async fn a_group_sends_one_batch_per_tick() {
    let (listener, url) = listener().await;
    let stub = Stub::serve(listener, batch_server()).await;
    let group = vigil_reporter::ReporterGroup::builder()
        .service(Reporter::builder(&url, "node-1", "a").report_interval(FAST))
        .service(Reporter::builder(&url, "node-1", "b").report_interval(FAST))
        .service(
            Reporter::builder(&url, "node-1", "c")
                .report_interval(FAST * 3)
                .token("ignored-unless-equal"),
        )
        .start();
    assert!(
        matches!(group, Err(ReporterError::GroupTokens)),
        "one server, one token: {group:?}"
    );
    let group = vigil_reporter::ReporterGroup::builder()
        .service(Reporter::builder(&url, "node-1", "a").report_interval(FAST))
        .service(Reporter::builder(&url, "node-1", "b").report_interval(FAST))
        .service(Reporter::builder(&url, "node-1", "c").report_interval(FAST * 3))
        .start()
        .unwrap();
    eventually("c beat three times", || group.report_counts()[2] >= 3).await;
    assert_eq!(group.service_ids(), [Some(1), Some(2), Some(3)]);
    group.shutdown().await;

    let requests = stub.requests();
    assert!(
        requests.iter().all(|r| !r.is_heartbeat()),
        "no single heartbeat: {requests:?}"
    );
    let batches: Vec<Vec<i64>> = requests
        .iter()
        .filter(|r| r.path == "/v1/heartbeats")
        .map(|r| {
            let batch: vigil_proto::BatchHeartbeatRequest = serde_json::from_str(&r.body).unwrap();
            batch.beats.iter().map(|beat| beat.id).collect()
        })
        .collect();
    assert!(batches.len() >= 6, "{batches:?}");
    for ids in &batches {
        assert!(
            ids == &[1, 2] || ids == &[1, 2, 3],
            "a and b share every tick, c every third: {batches:?}"
        );
    }
    let with_c = batches.iter().filter(|ids| ids.len() == 3).count();
    assert!(
        (3..=batches.len() / 2).contains(&with_c),
        "c beats at its own, longer interval: {batches:?}"
    );
    let beat: HeartbeatRequest = {
        let body: serde_json::Value = serde_json::from_str(&requests.last().unwrap().body).unwrap();
        serde_json::from_value(body["beats"][0].clone()).unwrap()
    };
    assert!(
        beat.sent_at.is_some() && beat.overrun_s.is_some(),
        "{beat:?}"
    );
}

#[test]
fn an_empty_group_is_refused() {
    let err = vigil_reporter::ReporterGroup::builder()
        .start()
        .unwrap_err();
    assert!(matches!(err, ReporterError::EmptyGroup), "{err}");
}
