//! `GET /v1/services/{id}/diagnosis`: the doctor's findings for one service. Thin: the checks
//! are in [`crate::doctor`].

use std::sync::Arc;

use axum::extract::State;
use vigil_proto::Diagnosis;

use super::error::ApiError;
use super::extract::ServiceId;
use crate::app::App;

#[utoipa::path(
    get,
    path = "/v1/services/{id}/diagnosis",
    tag = "services",
    operation_id = "diagnose_service",
    security((), ("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
    ),
    responses(
        (status = 200, description = "The doctor's findings for this service, worst first", body = vigil_proto::Diagnosis),
        (status = 400, description = "`invalid_id`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid (unknown, revoked, expired), or none on a server whose reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, which may not read, on a server whose reads need a token", body = vigil_proto::ErrorBody),
        (status = 404, description = "`service_not_found`: no service has this id (or it was deleted)", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: the service's history cannot be read", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn diagnosis(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
) -> Result<axum::Json<Diagnosis>, ApiError> {
    Ok(axum::Json(app.diagnose(id).await?))
}
