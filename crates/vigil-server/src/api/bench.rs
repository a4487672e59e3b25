//! The reference endpoint of `vigil bench`: what a heartbeat costs in this binary with this
//! runtime when the registry is left out.
//!
//! It takes the same path and body through the same extractors as the real heartbeat and
//! answers the same shape, so `vigil bench` can report the registry's own share of a
//! heartbeat's cost as a ratio against it, measured in the same run on the same machine.

use std::sync::Arc;

use axum::extract::State;
use vigil_proto::{HeartbeatRequest, HeartbeatResponse};

use super::error::ApiError;
use super::extract::{Json, ServiceId};
use crate::app::App;

pub async fn reference_heartbeat(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
    Json(body): Json<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatResponse>, ApiError> {
    // Uses the parsed body and id, so that the compiler cannot drop the parse.
    let fields = std::hint::black_box((id, body));
    Ok(axum::Json(HeartbeatResponse {
        report_count: fields.0,
        service_down_time: app.registry.liveness.service_down_time_s(),
    }))
}
