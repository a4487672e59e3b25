//! `POST /v1/confirm-down`: an admin declares down the services the partition guard holds
//! `unreachable`. Thin: parse, call [`App::confirm_down`], answer.

use std::sync::Arc;

use axum::extract::State;
use vigil_proto::{ConfirmDownRequest, ConfirmDownResponse};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::Json;
use crate::app::App;

#[utoipa::path(
    post,
    path = "/v1/confirm-down",
    tag = "services",
    operation_id = "confirm_down",
    security(("token" = [])),
    request_body(content = ConfirmDownRequest, content_type = "application/json", description = "Both fields are optional: `{}` or an empty body confirms every service held"),
    responses(
        (status = 200, description = "The services held `unreachable` (of `host` and `binary` when given) are declared `down`; their `down` events name the caller", body = ConfirmDownResponse),
        (status = 400, description = "`invalid_json`, `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token, or one that is not valid", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a token whose role is not admin", body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 64 KiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
        (status = 429, description = "`rate_limited`: this caller wrote faster than `limits.writes_per_second`; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn confirm_down(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    Json(body): Json<ConfirmDownRequest>,
) -> Result<axum::Json<ConfirmDownResponse>, ApiError> {
    let done = app.confirm_down(body.host.as_deref(), body.binary.as_deref(), &caller)?;
    Ok(axum::Json(ConfirmDownResponse {
        confirmed: done.confirmed as u64,
        unreachable: done.still_unreachable as u64,
        leader: done.leader,
    }))
}
