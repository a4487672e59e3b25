//! The dashboard: `GET /` and `/ui/...`, pages and assets built into the binary
//! (`crates/vigil-server/ui/`), and two reads of its own under `/ui/api/`.
//!
//! The pages hold no data: one HTML shell per page, whose script reads the Vigil API (the list
//! of services sorted and paged by the server, the history, the live stream, the doctor) with
//! the admin token the browser keeps in `sessionStorage` when one was entered. So the pages
//! need no token even when reads do (`auth.anonymous_read = false`); `/ui/api/` does, like
//! every read. The dashboard is not part of the API's document (`/openapi.json`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::error::ApiError;
use super::extract::ServiceId;
use crate::app::App;

const SHELL: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");
const ICON: &str = include_str!("../../ui/icon.svg");

/// What the pages may load: only this server's own script, style and pictures.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes, merged into the API's router (behind its middleware).
pub(crate) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { page("overview", "Overview") }))
        .route("/ui", get(|| async { page("overview", "Overview") }))
        .route("/ui/", get(|| async { page("overview", "Overview") }))
        .route("/ui/events", get(|| async { page("events", "Events") }))
        .route("/ui/services/{id}", get(service_page))
        .route(
            "/ui/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/assets/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .route("/ui/api/overview", get(overview))
        .route("/ui/api/services/{id}/beats", get(beats))
}

/// Whether `path` is one of the dashboard's pages or assets, which hold no data and so need no
/// token even when reads do (the browser cannot send one when it opens a page).
pub(crate) fn holds_no_data(path: &str) -> bool {
    path == "/" || path == "/ui" || (path.starts_with("/ui/") && !path.starts_with("/ui/api/"))
}

fn page(name: &str, title: &str) -> Response {
    let html = SHELL.replace("{{page}}", name).replace("{{title}}", title);
    let mut response = ([(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A service's page; the id must be an integer (else 400 `invalid_id`), the service is read by
/// the page's script (a missing one is shown as the API words it).
async fn service_page(ServiceId(_): ServiceId) -> Response {
    page("service", "Service")
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Counts of one group of services (all, a zone, a source).
#[derive(Debug, Default, Serialize)]
struct Counts {
    total: u64,
    up: u64,
    down: u64,
    unknown: u64,
    stopped: u64,
    unreachable: u64,
    suspect: u64,
    disabled: u64,
    forced_down: u64,
}

#[derive(Debug, Serialize)]
struct Overview {
    all: Counts,
    zones: BTreeMap<String, Counts>,
    sources: BTreeMap<String, Counts>,
    service_down_time: f64,
    /// A mass failure in progress, in words: the banner "Vigil may be the one cut off".
    mass_failure: Option<String>,
}

/// `GET /ui/api/overview`: how many services are up, down, suspect, disabled and forced down,
/// in all and by zone and by source, at one instant.
async fn overview(State(app): State<Arc<App>>) -> axum::Json<Overview> {
    app.sync_for_read().await;
    let now = app.clock.now();
    let mut overview = Overview {
        all: Counts::default(),
        zones: BTreeMap::new(),
        sources: BTreeMap::new(),
        service_down_time: app.registry.liveness.service_down_time_s(),
        mass_failure: app.mass_failure().map(|episode| {
            format!(
                "Vigil may be the one cut off: {} of {} services went silent together at {}. {} are held unreachable, not down, until they beat again or an admin confirms them down.",
                episode.silence.silent,
                episode.silence.total,
                episode.since.format("%H:%M:%S UTC"),
                episode.unreachable
            )
        }),
    };
    for entry in app.registry.entries() {
        let slot = entry.lock();
        let judgement = app.registry.judge(&slot, now);
        let record = &slot.record;
        let add = |counts: &mut Counts| {
            counts.total += 1;
            match judgement.state() {
                vigil_proto::State::Up => counts.up += 1,
                vigil_proto::State::Down => counts.down += 1,
                vigil_proto::State::Unknown => counts.unknown += 1,
                vigil_proto::State::Stopped => counts.stopped += 1,
                vigil_proto::State::Unreachable => counts.unreachable += 1,
            }
            counts.suspect += u64::from(judgement.suspect);
            counts.disabled += u64::from(record.disabled);
            counts.forced_down += u64::from(record.forced_down);
        };
        add(&mut overview.all);
        match overview.zones.get_mut(record.zone.as_str()) {
            Some(counts) => add(counts),
            None => add(overview.zones.entry(record.zone.to_string()).or_default()),
        }
        let source = crate::registry::source(&slot);
        match overview.sources.get_mut(source) {
            Some(counts) => add(counts),
            None => add(overview.sources.entry(source.to_string()).or_default()),
        }
    }
    axum::Json(overview)
}

#[derive(Debug, Serialize)]
struct Beats {
    /// The recent gaps between heartbeats, oldest first, seconds.
    gaps: Vec<f64>,
    report_interval: f64,
    service_down_time: f64,
    /// The reporter's clock minus the server's, seconds, when its beats carry `sent_at`.
    clock_offset_s: Option<f64>,
    clock_offset_error_s: Option<f64>,
}

/// `GET /ui/api/services/{id}/beats`: the recent heartbeat gaps of a service, for the chart
/// that tells late from dead.
async fn beats(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
) -> Result<axum::Json<Beats>, ApiError> {
    let entry = app.entry(id).await?;
    let slot = entry.lock();
    Ok(axum::Json(Beats {
        gaps: slot.stats.gaps(),
        report_interval: slot.record.report_interval,
        service_down_time: app.registry.liveness.service_down_time_s(),
        clock_offset_s: slot.stats.clock_offset_s(),
        clock_offset_error_s: slot.stats.clock_offset_error_s(),
    }))
}
