//! `GET /v1/services/{id}/diagnosis`: the doctor's findings for one service. Thin: the checks
//! are in [`crate::doctor`].

use std::sync::Arc;

use axum::extract::State;
use vigil_proto::Diagnosis;

use super::error::ApiError;
use super::extract::ServiceId;
use crate::app::App;

pub async fn diagnosis(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
) -> Result<axum::Json<Diagnosis>, ApiError> {
    Ok(axum::Json(app.diagnose(id).await?))
}
