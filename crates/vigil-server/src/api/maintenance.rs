//! `/v1/maintenance`: start, list and end maintenance windows (admin; reads like every read).
//! Thin: parse, call [`App`], answer.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::Deserialize;
use vigil_proto::{Maintenance, MaintenanceList, MaintenanceRequest};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{Json, Query};
use crate::app::{App, NewMaintenance};
use crate::model::MaintenanceWindow;

fn window_json(window: MaintenanceWindow, now: chrono::DateTime<chrono::Utc>) -> Maintenance {
    Maintenance {
        active: window.active(now),
        id: window.id,
        host: window.host,
        binary: window.binary,
        reason: window.reason,
        starts_at: window.starts_at,
        ends_at: window.ends_at,
        created_by: window.created_by,
        address: window.address,
        ended_at: window.ended_at,
        ended_by: window.ended_by,
    }
}

const UNAUTHORIZED: &str = "`unauthorized`: no token, or one that is not valid";
const FORBIDDEN: &str = "`forbidden`: a token whose role is not admin";
const RATE_LIMITED: &str = "`rate_limited`: this caller (its token, or its address) wrote faster than `limits.writes_per_second` after its `limits.write_burst`; nothing was changed; try again after `Retry-After`";

#[utoipa::path(
    post,
    path = "/v1/maintenance",
    tag = "maintenance",
    operation_id = "start_maintenance",
    security(("token" = [])),
    request_body(content = MaintenanceRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The window, started now: the services of the host (or of the binary on it) show `in_maintenance` with its reason until it ends, by itself at `ends_at` or through `DELETE /v1/maintenance/{id}`. Written to the database before this answer", body = Maintenance),
        (status = 400, description = "`invalid_host`, `invalid_binary`, `invalid_reason` (required, non-empty, at most 255 characters without control characters), `invalid_duration` (`duration_s` above 0 and at most 30 days; one of `duration_s` and `ends_at`), `invalid_ends_at` (in the future, at most 30 days away), `invalid_json`, `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = vigil_proto::ErrorBody),
        (status = 403, description = FORBIDDEN, body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 64 KiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
        (status = 429, description = RATE_LIMITED, body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: no window was started; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn start(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    Json(body): Json<MaintenanceRequest>,
) -> Result<(StatusCode, axum::Json<Maintenance>), ApiError> {
    let new = NewMaintenance {
        host: body.host,
        binary: body.binary,
        duration_s: body.duration_s,
        ends_at: body.ends_at,
        reason: body.reason,
    };
    let window = app.start_maintenance(new, &caller).await?;
    let now = app.clock.now();
    Ok((StatusCode::CREATED, axum::Json(window_json(window, now))))
}

/// Query of `GET /v1/maintenance`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `true`: every window kept, ended ones included; default: the windows that hold now.
    #[serde(default)]
    #[param(required = false)]
    all: bool,
}

#[utoipa::path(
    get,
    path = "/v1/maintenance",
    tag = "maintenance",
    operation_id = "list_maintenance",
    security((), ("token" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The windows that hold now (with `all=true`, every window kept, ended ones too), in id order", body = MaintenanceList),
        (status = 400, description = "`invalid_query`: `all` not `true` or `false`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid, or none when the server's reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token (reads need a reader or admin token)", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<MaintenanceList>, ApiError> {
    let windows = app.list_maintenance(query.all).await?;
    let now = app.clock.now();
    Ok(axum::Json(MaintenanceList {
        windows: windows.into_iter().map(|w| window_json(w, now)).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/maintenance/{id}",
    tag = "maintenance",
    operation_id = "end_maintenance",
    security(("token" = [])),
    params(
        ("id" = i64, Path, description = "the window's id", example = 3),
    ),
    responses(
        (status = 200, description = "The window, ended now (`ended_at`, `ended_by`): here at once, on every replica within `flush_interval`. Written to the database before this answer", body = Maintenance),
        (status = 400, description = "`invalid_id`: not an integer", body = vigil_proto::ErrorBody),
        (status = 401, description = UNAUTHORIZED, body = vigil_proto::ErrorBody),
        (status = 403, description = FORBIDDEN, body = vigil_proto::ErrorBody),
        (status = 404, description = "`maintenance_not_found`: no window has this id, or it has ended already (early, or by itself)", body = vigil_proto::ErrorBody),
        (status = 429, description = RATE_LIMITED, body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: the window was not ended; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn end(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    WindowId(id): WindowId,
) -> Result<axum::Json<Maintenance>, ApiError> {
    let window = app.end_maintenance(id, &caller).await?;
    let now = app.clock.now();
    Ok(axum::Json(window_json(window, now)))
}

/// A window's id in the path; anything but an integer is 400 `invalid_id`.
pub struct WindowId(i64);

impl<S: Send + Sync> FromRequestParts<S> for WindowId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        super::extract::path_id(parts, state, "a maintenance window's")
            .await
            .map(WindowId)
    }
}
