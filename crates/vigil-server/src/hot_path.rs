//! The request path of a heartbeat inside one process, without sockets: what
//! `cargo bench -p vigil-server --bench hot_path` runs under callgrind, so that a change to the
//! path is judged by the instructions it costs rather than timed on a noisy machine. Feature
//! `bench` only.
//!
//! A [`HotPath`] is a server as `vigil server` builds it (the same [`crate::app::build`], the
//! same router with its middleware, a SQLite database in a directory of its own) holding
//! `services` services of the bench's fleet, with none of its background loops running: no
//! flusher, no detector, so that what is counted is the request alone. Requests go to the
//! router as `hyper` would hand them over, on a current-thread runtime.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use tower::ServiceExt;

use crate::app::App;
use crate::store::NewService;
use crate::Config;

/// The agent token a [`HotPath`]'s heartbeats carry, as a fleet's would.
const AGENT_TOKEN: &str = "hot-path-agent-token";

/// A built server and requests to send it; see the module's documentation.
pub struct HotPath {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    app: Arc<App>,
    dir: PathBuf,
    /// Kept open: the event log's queue, which the writer that is not running would read.
    _events: tokio::sync::mpsc::UnboundedReceiver<crate::store::NewEvent>,
}

impl HotPath {
    /// A server holding services `1..=services`, four to a host, each beaten once already
    /// (so a beat measured is an ordinary one, not a first).
    pub fn new(services: usize) -> HotPath {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = std::env::temp_dir().join(format!("vigil-hot-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the database");
        let config = Config {
            database: Some(format!("sqlite://{}", dir.join("vigil.db").display())),
            data_dir: dir.clone(),
            admin_token: Some("hot-path-admin-token".into()),
            agent_token: Some(AGENT_TOKEN.into()),
            bench_reference: true,
            ..Config::default()
        };
        let (app, events) = runtime.block_on(async {
            let store = crate::open_store(&config).await.expect("the database");
            let fleet: Vec<NewService> = (0..services).map(service).collect();
            store
                .bulk_insert_services(&fleet, chrono::Utc::now())
                .await
                .expect("the services inserted");
            drop(store);
            crate::app::build(config).await.expect("the server built")
        });
        let router = crate::api::router(app.clone());
        let hot = HotPath {
            runtime,
            router,
            app,
            dir,
            _events: events,
        };
        // Every service beaten once, and every kind of request answered once: what is lazily
        // set up on a first request (metric series, the token's cache) is not counted.
        for first in (1..=services as i64).collect::<Vec<_>>().chunks(1000) {
            assert_eq!(hot.batch(first), StatusCode::OK);
        }
        assert_eq!(hot.single(1), StatusCode::OK);
        assert_eq!(hot.bare(1), StatusCode::OK);
        hot
    }

    /// `POST /v1/services/{id}/heartbeat`, with the body the bench's fleet sends.
    pub fn single(&self, id: i64) -> StatusCode {
        self.send(single_request(id))
    }

    /// `POST /v1/heartbeats` carrying one such beat for each of `ids`.
    pub fn batch(&self, ids: &[i64]) -> StatusCode {
        self.send(batch_request(ids))
    }

    /// The bench's bare axum endpoint (no middleware, no registry), with the same body as
    /// [`HotPath::single`]: what a heartbeat is compared with.
    pub fn bare(&self, id: i64) -> StatusCode {
        self.send(bare_request(id))
    }

    /// Answers `request` as the server would, reading the answer's body to its end.
    pub fn send(&self, request: Request<Body>) -> StatusCode {
        self.runtime.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("routers do not fail");
            let status = response.status();
            // Read to the end, as hyper would to send it.
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
            status
        })
    }

    /// Services this server holds.
    pub fn services(&self) -> usize {
        self.app.registry.len()
    }
}

impl Drop for HotPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A single heartbeat of service `id`, as [`HotPath::single`] sends it.
pub fn single_request(id: i64) -> Request<Body> {
    request(&format!("/v1/services/{id}/heartbeat"), beat_body(None))
}

/// A batch of one beat for each of `ids`, as [`HotPath::batch`] sends it.
pub fn batch_request(ids: &[i64]) -> Request<Body> {
    let beats: Vec<String> = ids.iter().map(|id| beat_body(Some(*id))).collect();
    request(
        "/v1/heartbeats",
        format!(r#"{{"beats":[{}]}}"#, beats.join(",")),
    )
}

/// A beat for the bare endpoint, as [`HotPath::bare`] sends it.
pub fn bare_request(id: i64) -> Request<Body> {
    request(&format!("/v1/bench/bare/{id}/heartbeat"), beat_body(None))
}

/// A beat for the reference endpoint (Vigil's middleware and extractors, no registry).
pub fn reference_request(id: i64) -> Request<Body> {
    request(
        &format!("/v1/bench/reference/{id}/heartbeat"),
        beat_body(None),
    )
}

fn request(path: &str, body: String) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {AGENT_TOKEN}"))
        .body(Body::from(body))
        .expect("a request")
}

/// Service number `i` of the bench's fleet (its id is `i + 1`): four binaries a host.
fn service(i: usize) -> NewService {
    let binary = [
        "cinder-volume",
        "cinder-scheduler",
        "cinder-backup",
        "nova-compute",
    ][i % 4];
    NewService {
        host: format!("node-{:07}.example.net", i / 4),
        binary: binary.into(),
        topic: Some(binary.into()),
        zone: "nova".into(),
        report_interval: vigil_proto::DEFAULT_REPORT_INTERVAL,
        version: Some("2025.1".into()),
        service_down_time: None,
    }
}

/// A beat as the bench's fleet sends it (with `"id"` inside a batch).
fn beat_body(id: Option<i64>) -> String {
    let id = id.map(|id| format!(r#""id":{id},"#)).unwrap_or_default();
    format!(
        r#"{{{id}"zone":"nova","sent_at":"{}","last_rtt_s":0.0012,"overrun_s":0.0}}"#,
        vigil_proto::ts::format(&chrono::Utc::now())
    )
}
