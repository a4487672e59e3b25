//! `/v1/services`: register, heartbeat, list, show, change, delete. Thin: parse, call [`App`],
//! answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use vigil_proto::{
    BatchHeartbeatRequest, BatchHeartbeatResponse, BatchResult, ErrorDetail, HeartbeatRequest,
    HeartbeatResponse, Service, MAX_BATCH_BEATS,
};

use super::auth::Admin;
use super::error::ApiError;
use super::extract::{Json, Query, ServiceId};
use crate::app::{App, AppError, Registration};
use crate::registry::{Beat, ListFilter};
use crate::store::AdminChange;

/// Register body as received: every field optional so that a missing one gets a code that
/// names it, rather than a generic JSON error.
#[derive(Debug, Deserialize)]
pub struct RegisterBody {
    host: Option<String>,
    binary: Option<String>,
    topic: Option<String>,
    zone: Option<String>,
    report_interval: Option<f64>,
    version: Option<String>,
}

pub async fn register(
    State(app): State<Arc<App>>,
    Json(body): Json<RegisterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (service, created) = app
        .register(Registration {
            host: body.host,
            binary: body.binary,
            topic: body.topic,
            zone: body.zone,
            report_interval: body.report_interval,
            version: body.version,
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(service)))
}

fn beat(body: HeartbeatRequest) -> Beat {
    Beat {
        zone: body.zone,
        sent_at: body.sent_at,
        last_rtt_s: body.last_rtt_s,
        overrun_s: body.overrun_s,
        last_error: body.last_error,
    }
}

pub async fn heartbeat(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
    Json(body): Json<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatResponse>, ApiError> {
    Ok(axum::Json(app.heartbeat(id, beat(body)).await?))
}

/// `POST /v1/heartbeats`: many beats, one result each, in order. A malformed body or more than
/// [`MAX_BATCH_BEATS`] beats is refused whole; a bad beat only gets its own error.
pub async fn heartbeat_batch(
    State(app): State<Arc<App>>,
    Json(body): Json<BatchHeartbeatRequest>,
) -> Result<axum::Json<BatchHeartbeatResponse>, ApiError> {
    if body.beats.len() > MAX_BATCH_BEATS {
        return Err(ApiError::bad_request(
            "batch_too_large",
            format!(
                "a batch carries at most {MAX_BATCH_BEATS} beats, not {}; send several",
                body.beats.len()
            ),
        ));
    }
    let beats = body
        .beats
        .into_iter()
        .map(|item| (item.id, beat(item.beat)))
        .collect();
    let mut unavailable = 0usize;
    let results = app
        .heartbeat_batch(beats)
        .await
        .into_iter()
        .map(|(id, result)| match result {
            Ok(answer) => BatchResult {
                id,
                report_count: Some(answer.report_count),
                error: None,
            },
            Err(err) => {
                if let AppError::Internal(reason) = &err {
                    tracing::error!(%reason, service_id = id, "internal error in a batch");
                }
                let err = ApiError::unlogged(err);
                unavailable += usize::from(err.code == "database_unavailable");
                BatchResult {
                    id,
                    report_count: None,
                    error: Some(ErrorDetail {
                        code: err.code,
                        message: err.message,
                    }),
                }
            }
        })
        .collect();
    if unavailable > 0 {
        tracing::warn!(
            beats = unavailable,
            "refused beats of services unknown here: database unavailable"
        );
    }
    Ok(axum::Json(BatchHeartbeatResponse {
        results,
        service_down_time: app.registry.liveness.service_down_time_s(),
    }))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    host: Option<String>,
    binary: Option<String>,
    zone: Option<String>,
    state: Option<String>,
    status: Option<String>,
    /// `vigil`, or a watch's name.
    source: Option<String>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<ListParams>,
) -> Result<axum::response::Response, ApiError> {
    let state = match params.state {
        Some(v) => Some(
            v.parse()
                .map_err(|m| ApiError::bad_request("invalid_state", m))?,
        ),
        None => None,
    };
    let status = match params.status {
        Some(v) => Some(
            v.parse()
                .map_err(|m| ApiError::bad_request("invalid_status", m))?,
        ),
        None => None,
    };
    let filter = ListFilter {
        host: params.host,
        binary: params.binary,
        zone: params.zone,
        state,
        status,
        source: params.source,
    };
    // Other replicas' changes first, so a change acknowledged anywhere shows here at once.
    app.sync_for_read().await;
    Ok(super::list_body::services(app, filter))
}

pub async fn show(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
) -> Result<axum::Json<Service>, ApiError> {
    Ok(axum::Json(app.get(id).await?))
}

/// `PATCH` body: unknown fields are refused so that a typo is not silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    disabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    disabled_reason: Option<Option<String>>,
    forced_down: Option<bool>,
}

/// Tells `"disabled_reason": null` (clear it) from an absent field (leave it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

pub async fn update(
    State(app): State<Arc<App>>,
    _admin: Admin,
    ServiceId(id): ServiceId,
    Json(body): Json<UpdateBody>,
) -> Result<axum::Json<Service>, ApiError> {
    if body.disabled.is_none() && body.disabled_reason.is_none() && body.forced_down.is_none() {
        return Err(ApiError::bad_request(
            "empty_change",
            "nothing to change: give disabled, disabled_reason or forced_down",
        ));
    }
    let change = AdminChange {
        disabled: body.disabled,
        disabled_reason: body.disabled_reason,
        forced_down: body.forced_down,
        frozen: None,
    };
    Ok(axum::Json(app.update(id, change).await?))
}

#[derive(Debug, Deserialize)]
pub struct DeleteParams {
    #[serde(default)]
    force: bool,
}

pub async fn delete(
    State(app): State<Arc<App>>,
    _admin: Admin,
    ServiceId(id): ServiceId,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    app.delete(id, params.force).await?;
    Ok(StatusCode::NO_CONTENT)
}
