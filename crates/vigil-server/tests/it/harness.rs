//! Starts the real server on 127.0.0.1:0 with a real database, and talks to it over HTTP.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vigil_server::Config;

pub const TOKEN: &str = "test-admin-token";
/// The agent token (any host) of every test server, sent by [`TestServer::post`].
pub const AGENT_TOKEN: &str = "test-agent-token";

/// The PostgreSQL the suite uses: trust auth, a database `test`. Each test gets its own schema.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Which database a test runs against.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// `url` selects `schema`, the test's own, through the connection's `search_path`.
    Postgres {
        url: String,
        schema: String,
    },
}

impl Backend {
    /// A fresh, empty schema in [`POSTGRES_URL`], or `None` (test skipped) when PostgreSQL is
    /// not running. Under CI (`CI` set) an unreachable PostgreSQL fails the test instead, so a
    /// broken CI database cannot pass as skipped tests.
    pub async fn postgres() -> Option<Backend> {
        use sqlx::Connection;
        let mut conn = match sqlx::PgConnection::connect(POSTGRES_URL).await {
            Ok(conn) => conn,
            Err(err) if under_ci() => {
                panic!("PostgreSQL at {POSTGRES_URL} is required under CI: {err}")
            }
            Err(err) => {
                // Straight to the stderr stream: the test harness swallows `eprintln!` of
                // passing tests, and a skip must be seen.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping a PostgreSQL test: {POSTGRES_URL} is not reachable: {err}"
                );
                return None;
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        drop_old_schemas(&mut conn, now).await;
        let schema = format!("vigil_test_{now}_{:08x}", rand::random::<u32>());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create a test schema");
        let _ = conn.close().await;
        Some(Backend::Postgres {
            url: format!("{POSTGRES_URL}?options=-c%20search_path%3D{schema}"),
            schema,
        })
    }

    /// Drops a PostgreSQL test's schema. Called only after the test passed, so that a failed
    /// test's data stays for a look (until [`drop_old_schemas`] takes it).
    pub async fn drop_schema(&self) {
        use sqlx::Connection;
        if let Backend::Postgres { schema, .. } = self {
            // Best effort: a schema left behind goes with the next run's `drop_old_schemas`.
            if let Ok(mut conn) = sqlx::PgConnection::connect(POSTGRES_URL).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }

    /// A configuration with small times for this backend, storing in `dir`.
    pub fn config(&self, dir: &std::path::Path) -> Config {
        Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.to_path_buf(),
            service_down_time: 1.0,
            flush_interval: 0.1,
            admin_token: Some(TOKEN.into()),
            agent_token: Some(AGENT_TOKEN.into()),
            // Tests of other matters register and beat without a token, as the reporters of
            // a trusted network may; `trust.rs` tests the default, closed registration.
            auth: vigil_server::AuthConfig {
                open_registration: true,
                ..vigil_server::AuthConfig::default()
            },
            // Tests register thousands of services at once; `trust.rs` tests the limits.
            limits: vigil_server::LimitsConfig {
                writes_per_second: 0.0,
                ..vigil_server::LimitsConfig::default()
            },
            database: match self {
                Backend::Sqlite => None,
                Backend::Postgres { url, .. } => Some(url.clone()),
            },
            ..Config::default()
        }
    }
}

/// Whether this is a CI run (`CI` set, as CI services do, and not to `false` or `0`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Drops test schemas more than an hour old: those of failed tests, and of tests that did not
/// drop theirs. An hour is longer than any run of the suite, so no running test loses its own.
async fn drop_old_schemas(conn: &mut sqlx::PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        r"SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'vigil\_test\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|created| created + 3600 < now) {
            // Another test run may be dropping it too; either way it goes.
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// A running server; dropping it stops it.
pub struct TestServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub config: Config,
    /// Base URL of the Cinder-compatible API, when started with [`TestServer::start_with_cinder`].
    pub cinder_url: Option<String>,
    /// Base URL of the metrics listener, when started with one by [`TestServer::start_tls`].
    pub metrics_url: Option<String>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), vigil_server::ServerError>>>,
}

impl TestServer {
    /// Starts a server with `config`; listens on `config.listen` (use port 0 for any).
    pub async fn start(config: Config) -> TestServer {
        TestServer::launch(config, None).await
    }

    /// Starts a server that also serves the Cinder-compatible API on a free port of 127.0.0.1.
    pub async fn start_with_cinder(config: Config) -> TestServer {
        let cinder = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test port for the cinder api");
        TestServer::launch(config, Some(cinder)).await
    }

    /// Starts a server that also serves `/metrics` on a listener of its own (a free port of
    /// 127.0.0.1); returns it with that listener's base URL.
    pub async fn start_with_metrics(config: Config) -> (TestServer, String) {
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test port for metrics");
        let url = format!("http://{}", metrics.local_addr().unwrap());
        (
            TestServer::launch_all(config, None, Some(metrics)).await,
            url,
        )
    }

    async fn launch(config: Config, cinder: Option<tokio::net::TcpListener>) -> TestServer {
        TestServer::launch_all(config, cinder, None).await
    }

    /// Starts a server with `config.tls_cert` and `tls_key` set, reached at
    /// `https://127.0.0.1:PORT` by a client that trusts the CA certificate `ca_pem` only.
    /// The Cinder-compatible API and a metrics listener are served too, over TLS as well:
    /// `cinder_url` and `metrics_url`.
    pub async fn start_tls(config: Config, ca_pem: &str) -> TestServer {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .expect("bind a test port");
        let addr = listener.local_addr().unwrap();
        let cinder = bind().await.expect("bind a cinder port");
        let metrics = bind().await.expect("bind a metrics port");
        let cinder_url = format!("https://{}", cinder.local_addr().unwrap());
        let metrics_url = format!("https://{}", metrics.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(vigil_server::serve_listeners(
            listener,
            Some(cinder),
            Some(metrics),
            config.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let server = TestServer {
            url: format!("https://{addr}"),
            addr,
            config,
            cinder_url: Some(cinder_url),
            metrics_url: Some(metrics_url),
            http,
            stop: Some(stop),
            task: Some(task),
        };
        server
            .eventually("server ready", Duration::from_secs(10), || async {
                server.get("/healthz").await.0 == StatusCode::OK
            })
            .await;
        server
    }

    async fn launch_all(
        config: Config,
        cinder: Option<tokio::net::TcpListener>,
        metrics: Option<tokio::net::TcpListener>,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .expect("bind a test port");
        let addr = listener.local_addr().unwrap();
        let cinder_url = cinder
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().unwrap()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(vigil_server::serve_listeners(
            listener,
            cinder,
            metrics,
            config.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let server = TestServer {
            url: format!("http://{addr}"),
            addr,
            config,
            cinder_url,
            metrics_url: None,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        };
        server
            .eventually("server ready", Duration::from_secs(10), || async {
                server.get("/healthz").await.0 == StatusCode::OK
            })
            .await;
        server
    }

    /// Stops gracefully (drain, final flush) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }

    /// Stops, then starts again on the same port with the same configuration.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut config = self.config.clone();
        config.listen = self.addr.to_string();
        *self = TestServer::start(config).await;
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} answered non-JSON {status}: {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None, None).await
    }

    /// A POST with the server's agent token, as a reporter on the server's machine sends it.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body), Some(AGENT_TOKEN))
            .await
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.request(method, path, body, Some(TOKEN)).await
    }

    /// `PATCH /v1/services/{id}` with the admin token.
    pub async fn patch(&self, id: i64, body: Value) -> (StatusCode, Value) {
        self.admin(Method::PATCH, &format!("/v1/services/{id}"), Some(body))
            .await
    }

    /// Registers (host, binary) with a declared interval; returns the id.
    pub async fn register(&self, host: &str, binary: &str) -> i64 {
        let (status, body) = self
            .post(
                "/v1/services",
                serde_json::json!({"host": host, "binary": binary, "report_interval": 0.2}),
            )
            .await;
        assert!(status.is_success(), "register: {status} {body}");
        body["id"].as_i64().unwrap()
    }

    pub async fn beat(&self, id: i64) -> (StatusCode, Value) {
        self.post(
            &format!("/v1/services/{id}/heartbeat"),
            serde_json::json!({}),
        )
        .await
    }

    pub async fn service(&self, id: i64) -> Value {
        let (status, body) = self.get(&format!("/v1/services/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until `check` holds, polling; panics after `limit` naming `what`.
    pub async fn eventually<F, Fut>(&self, what: &str, limit: Duration, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        eventually(what, limit, check).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits until `check` holds, polling every 20 ms; panics after `limit` naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vigil-test-")
        .tempdir()
        .unwrap()
}

/// Log lines captured from `tracing`, for asserting what a reporter said.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Installs a capturing subscriber for this thread until the guard drops.
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Server-Sent Events client of `/v1/events/stream`.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

/// One SSE event: id, kind and the JSON event.
#[derive(Debug, Clone)]
pub struct StreamedEvent {
    pub id: i64,
    pub kind: String,
    pub data: Value,
}

impl EventStream {
    /// Connects; `last_event_id` resumes after that id.
    pub async fn connect(
        server: &TestServer,
        query: &str,
        last_event_id: Option<i64>,
    ) -> EventStream {
        let mut request = server
            .http
            .get(format!("{}/v1/events/stream{query}", server.url));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("connect to the event stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` if none arrives within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<StreamedEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if let Some(id) = id {
                    return Some(StreamedEvent {
                        id,
                        kind,
                        data: serde_json::from_str(&data).expect("event data is JSON"),
                    });
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Events until one of `kind` arrives (included); panics after `limit`.
    pub async fn until(&mut self, kind: &str, limit: Duration) -> Vec<StreamedEvent> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(event) => {
                    let done = event.kind == kind;
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                None => panic!("no {kind} event within {limit:?}; saw {seen:?}"),
            }
        }
    }
}

/// Appends one test's figures to `VIGIL_RELIABILITY_OUT`, when set (`scripts/faults` writes
/// RELIABILITY.md from them).
pub fn record(figures: Value) {
    use std::io::Write;
    if let Ok(path) = std::env::var("VIGIL_RELIABILITY_OUT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the figures file");
        writeln!(file, "{figures}").unwrap();
    }
}
