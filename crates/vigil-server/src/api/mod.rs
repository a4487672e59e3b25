//! The Vigil HTTP API (`/v1`, `/healthz`, `/readyz`), described by `/openapi.json`, and the
//! dashboard ([`ui`], `/` and `/ui/`).
//!
//! Every route below is in the OpenAPI document ([`openapi`]): a test reads these `.route(`
//! calls and fails on one the document lacks.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use vigil_proto::Health;

use crate::app::App;

mod auth;
#[cfg(feature = "bench")]
mod bench;
mod doctor;
mod error;
mod events;
mod extract;
mod guard;
mod layer;
pub(crate) mod list_body;
mod maintenance;
pub(crate) mod metrics;
mod openapi;
pub(crate) mod service_json;
mod services;
mod stop;
mod tokens;
mod ui;

pub use error::{ApiError, RETRY_AFTER_S};

/// Largest request body accepted, but by `POST /v1/heartbeats`
/// ([`vigil_proto::MAX_BATCH_BODY`]).
pub const BODY_LIMIT: usize = 64 * 1024;

/// The router of the Vigil API over `app`.
pub fn router(app: Arc<App>) -> Router {
    let document = openapi::Document::new(&app.config.auth);
    let router = Router::new();
    #[cfg(feature = "bench")]
    let router = if app.config.bench_reference {
        router.route(
            "/v1/bench/reference/{id}/heartbeat",
            post(bench::reference_heartbeat),
        )
    } else {
        router
    };
    // The dashboard's pages (not in the document: they are not part of the API).
    let router = router
        .merge(ui::router())
        .route("/v1/services", post(services::register).get(services::list))
        .route(
            "/v1/services/{id}",
            get(services::show)
                .patch(services::update)
                .delete(services::delete),
        )
        .route("/v1/services/{id}/heartbeat", post(services::heartbeat))
        .route("/v1/services/{id}/stop", post(stop::stop))
        .route(
            "/v1/heartbeats",
            post(services::heartbeat_batch)
                .layer(DefaultBodyLimit::max(vigil_proto::MAX_BATCH_BODY)),
        )
        .route("/v1/services/{id}/events", get(events::for_service))
        .route("/v1/events", get(events::list))
        .route("/v1/events/stream", get(events::stream))
        .route("/v1/services/{id}/diagnosis", get(doctor::diagnosis))
        .route("/v1/confirm-down", post(guard::confirm_down))
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{name}", delete(tokens::revoke))
        .route(
            "/v1/maintenance",
            post(maintenance::start).get(maintenance::list),
        )
        .route("/v1/maintenance/{id}", delete(maintenance::end))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::handler))
        .route(
            "/openapi.json",
            get(move || openapi::document(document.clone())),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(layer::ApiLayer::new(app.clone()));
    // Added after the layers, so none of Vigil's middleware (metrics, NUL check, token
    // check of reads) runs for it: the "bare axum endpoint".
    #[cfg(feature = "bench")]
    let router = if app.config.bench_reference {
        router.route("/v1/bench/bare/{id}/heartbeat", post(bench::bare_heartbeat))
    } else {
        router
    };
    router.with_state(app)
}

/// Whether a request's URI carries an encoded NUL, which no field may hold and PostgreSQL
/// refuses in text (it would be a 500 there).
pub(crate) fn has_nul(uri: &axum::http::Uri) -> bool {
    uri.path_and_query()
        .is_some_and(|pq| pq.as_str().contains("%00"))
}

/// Why Vigil's middleware refuses a request before its route runs, if it does: its URI holds
/// an encoded NUL, or it is a read without the token reads need ([`auth::check_read`]).
pub(crate) fn refused(app: &App, request: &axum::extract::Request) -> Option<ApiError> {
    if has_nul(request.uri()) {
        return Some(ApiError::bad_request(
            "invalid_query",
            "the request URI contains a NUL character (%00), which no field may hold",
        ));
    }
    auth::check_read(app, request).err()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    let path = uri.path();
    if path == "/v3" || path.starts_with("/v3/") || path == "/v2" || path.starts_with("/v2/") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint: this is Vigil's own API; the Cinder-compatible API (Block Storage v3 os-services) is served on its own listener, set with --cinder-listen or cinder_api.listen",
        );
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The process is alive and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    security(()),
    responses(
        (status = 200, description = "The process serves; `role` tells whether it leads detection", body = vigil_proto::Health),
    )
)]
async fn healthz(State(app): State<Arc<App>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        reason: None,
        role: Some(role(&app)),
        watches: Vec::new(),
        mass_failure: None,
    })
}

fn role(app: &App) -> String {
    if app.is_leader() {
        "leader"
    } else {
        "follower"
    }
    .into()
}

/// Each watch and whether it can read its database.
fn watches(app: &App) -> Vec<vigil_proto::WatchHealth> {
    app.watch_status()
        .into_iter()
        .map(|watch| vigil_proto::WatchHealth {
            name: watch.name,
            kind: watch.kind.as_str().into(),
            status: if watch.problem.is_some() {
                "unreachable"
            } else {
                "ok"
            }
            .into(),
            reason: watch.problem,
            services: watch.services,
        })
        .collect()
}

/// A write can commit: 200 (`degraded` when a watch cannot read its database), or 503 with
/// the reason. Answered from memory when a write's
/// outcome is less than a second old, else by committing a probe. Heartbeats are still accepted while it
/// is away (held in memory), but admin changes are refused, so a load balancer should prefer
/// ready replicas.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "A write can commit (`status` `ok`, or `degraded` with a `reason` when a watch cannot read its database or a mass failure holds services `unreachable`: `mass_failure`)", body = vigil_proto::Health),
        (status = 503, description = "A write cannot commit: `status` `unavailable` and the `reason`", body = vigil_proto::Health,
            example = json!({"status": "unavailable", "reason": "database unavailable: connection refused", "role": "leader"})),
    )
)]
async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let problem = app.readiness().await;
    let watches = watches(&app);
    let mass_failure = app.mass_failure().map(|episode| vigil_proto::MassFailure {
        since: episode.since,
        unreachable: episode.unreachable as u64,
        silent: episode.silence.silent as u64,
        total: episode.silence.total as u64,
        message: format!(
            "{} of {} services went silent together: Vigil may be the one cut off. {} are held unreachable, not down; check this server's network, then `vigil confirm-down` if they are really down",
            episode.silence.silent, episode.silence.total, episode.unreachable
        ),
    });
    match problem {
        None => {
            let failing: Vec<&str> = watches
                .iter()
                .filter(|w| w.reason.is_some())
                .map(|w| w.name.as_str())
                .collect();
            let mut reasons = Vec::new();
            if let Some(mass) = &mass_failure {
                reasons.push(mass.message.clone());
            }
            if !failing.is_empty() {
                reasons.push(format!(
                    "cannot read watched database(s) {}: their services are unknown",
                    failing.join(", ")
                ));
            }
            let status = if reasons.is_empty() { "ok" } else { "degraded" };
            (
                StatusCode::OK,
                Json(Health {
                    status: status.into(),
                    reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
                    role: Some(role(&app)),
                    watches,
                    mass_failure,
                }),
            )
        }
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                reason: Some(reason),
                role: Some(role(&app)),
                watches,
                mass_failure,
            }),
        ),
    }
}
