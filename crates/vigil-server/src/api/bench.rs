//! The reference endpoints of `vigil bench`: what a heartbeat costs in this binary with this
//! runtime when the registry is left out, and when Vigil's own layers are left out too.
//!
//! - [`reference_heartbeat`] takes the same path and body through the same middleware and
//!   extractors as the real heartbeat and answers the same shape, so `vigil bench` can report
//!   the registry's own share of a heartbeat's cost as a ratio against it.
//! - [`bare_heartbeat`] is mounted outside every middleware of the router (metrics, the NUL
//!   check, the read-token check) and parses with axum's own extractors: the "bare axum
//!   endpoint" of issue #18, against which single heartbeats are judged (target >= 0.9 x).
//!   It still goes through the listener (`http.rs`: connection cap, timeouts), as every
//!   request does.
//!
//! Both measured in the same run on the same machine as the heartbeats they are compared with.

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

pub async fn bare_heartbeat(
    State(app): State<Arc<App>>,
    axum::extract::Path(id): axum::extract::Path<i64>,
    axum::Json(body): axum::Json<HeartbeatRequest>,
) -> axum::Json<HeartbeatResponse> {
    let fields = std::hint::black_box((id, body));
    axum::Json(HeartbeatResponse {
        report_count: fields.0,
        service_down_time: app.registry.liveness.service_down_time_s(),
    })
}
