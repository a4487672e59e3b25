//! The Cinder-compatible API: the `os-services` subset of the Block Storage API v3, served on
//! its own listener (`[cinder_api] listen`) over the same [`App`] as the Vigil API, so
//! `cinder service-list` and `cinder service-disable` work against Vigil unchanged.
//!
//! - [`version`]: discovery documents and `OpenStack-API-Version` microversions (3.0–3.71).
//! - [`services`]: `GET os-services`, `PUT os-services/{action}`.
//! - [`auth`]: `X-Auth-Token` against the admin token.
//! - [`fault`]: Cinder's error bodies.
//!
//! Every route exists with and without the `{project_id}` segment: clients built from a
//! Keystone catalog put it in the URL, and the `noauth` plugin always does.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::HeaderValue;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;

use crate::api::BODY_LIMIT;
use crate::app::App;

mod auth;
mod body;
mod fault;
mod services;
mod version;

use fault::Fault;

/// The router of the Cinder-compatible API over `app`.
pub fn router(app: Arc<App>) -> Router {
    let versioned = Router::new()
        .route("/v3/os-services", get(services::list))
        .route("/v3/{project_id}/os-services", get(services::list))
        .route("/v3/os-services/{action}", put(services::action))
        .route(
            "/v3/{project_id}/os-services/{action}",
            put(services::action),
        )
        .route_layer(middleware::from_fn(version::negotiate));
    Router::new()
        .route("/", get(version::root))
        .route("/v3", get(version::v3))
        .route("/v3/", get(version::v3))
        .merge(versioned)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(reject_nul))
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::api::metrics::track,
        ))
        .with_state(app)
}

async fn not_found() -> Fault {
    Fault::new(StatusCode::NOT_FOUND, "The resource could not be found.")
}

async fn method_not_allowed() -> Fault {
    Fault::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "The method specified is not allowed for this resource.",
    )
}

/// Tags every answer with a fresh `req-<uuid>` under both names OpenStack clients log
/// (cinderclient reads `x-openstack-request-id`; older tools `x-compute-request-id`), so a
/// client-side error can be matched to a server log line.
async fn request_id(request: Request, next: Next) -> Response {
    let id = new_request_id();
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        let headers = response.headers_mut();
        headers.insert("x-openstack-request-id", value.clone());
        headers.insert("x-compute-request-id", value);
    }
    response
}

/// `req-` and a random (version 4) UUID, as oslo.middleware makes them.
fn new_request_id() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "req-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// An encoded NUL in the URI is a 400 here too (PostgreSQL refuses NUL in text).
async fn reject_nul(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::api::has_nul(request.uri()) {
        return fault::Fault::bad_request("The request URI contains a NUL character (%00).")
            .into_response();
    }
    next.run(request).await
}
