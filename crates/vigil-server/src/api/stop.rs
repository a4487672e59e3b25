//! `POST /v1/services/{id}/stop`: a service says it exits cleanly. Thin: parse, call
//! [`App::stop`], answer.

use std::sync::Arc;

use axum::extract::State;
use vigil_proto::Service;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::ServiceId;
use crate::app::App;

#[utoipa::path(
    post,
    path = "/v1/services/{id}/stop",
    tag = "services",
    operation_id = "stop",
    security((), ("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
    ),
    responses(
        (status = 200, description = "The service is `stopped` (written, with its `stopped` event, before this answer); its next heartbeat makes it `up` again. A service already stopped is answered as it is", body = vigil_proto::Service),
        (status = 400, description = "`invalid_id`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token (unless `auth.open_registration`), or one that is not valid (unknown, revoked, expired)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a reader token; `host_not_allowed`: an agent token whose host patterns do not match the service's host", body = vigil_proto::ErrorBody),
        (status = 404, description = "`service_not_found`: no service has this id (or it was deleted)", body = vigil_proto::ErrorBody),
        (status = 409, description = "`read_only_source`: a service of a watched OpenStack database", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn stop(
    State(app): State<Arc<App>>,
    caller: Caller,
    ServiceId(id): ServiceId,
) -> Result<axum::Json<Service>, ApiError> {
    Ok(axum::Json(app.stop(id, &caller).await?))
}
