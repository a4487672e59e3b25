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

use super::auth::{Admin, Caller};
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
    service_down_time: Option<f64>,
}

#[utoipa::path(
    post,
    path = "/v1/services",
    tag = "services",
    operation_id = "register",
    security((), ("token" = [])),
    request_body(content = vigil_proto::RegisterRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "A new service, registered", body = vigil_proto::Service),
        (status = 200, description = "The service (host, binary) already existed: it as it is (get-or-create, as Cinder's `Service.start()`)", body = vigil_proto::Service),
        (status = 400, description = "`invalid_host`, `invalid_binary` (missing, empty, over 255 characters or with control characters), `invalid_topic`, `invalid_zone`, `invalid_version`, `invalid_report_interval` (outside 0.1-3600 s), `invalid_service_down_time` (outside the server's `service_down_time_min`-`service_down_time_max`, or less than twice `report_interval`), `invalid_json`, `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token (unless `auth.open_registration`), or one that is not valid (unknown, revoked, expired)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a reader token; `host_not_allowed`: an agent token whose host patterns do not match the service's host", body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 64 KiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
        (status = 409, description = "`too_many_services`: the server keeps `limits.max_services` services already; a new one is refused (an existing one registers again)", body = vigil_proto::ErrorBody),
        (status = 429, description = "`rate_limited`: this caller (its token, or its address) wrote faster than `limits.writes_per_second` after its `limits.write_burst`; nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: the database is unavailable (down, its disk full, its file read-only): nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn register(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(body): Json<RegisterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (service, created) = app
        .register(
            Registration {
                host: body.host,
                binary: body.binary,
                topic: body.topic,
                zone: body.zone,
                report_interval: body.report_interval,
                version: body.version,
                service_down_time: body.service_down_time,
            },
            &caller,
        )
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
        health: body.health.map(|h| match h {
            vigil_proto::HealthStatus::Ok => crate::model::Health::Ok,
            vigil_proto::HealthStatus::Warning => crate::model::Health::Warning,
            vigil_proto::HealthStatus::Failing => crate::model::Health::Failing,
        }),
        message: body.message,
    }
}

#[utoipa::path(
    post,
    path = "/v1/services/{id}/heartbeat",
    tag = "services",
    operation_id = "heartbeat",
    security((), ("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
    ),
    request_body(content = vigil_proto::HeartbeatRequest, content_type = "application/json", description = "Every field is optional: `{}` or an empty body is a beat"),
    responses(
        (status = 200, description = "The beat is taken (in memory; flushed every `flush_interval`)", body = vigil_proto::HeartbeatResponse),
        (status = 400, description = "`invalid_id`, `invalid_zone`, `invalid_last_error` (over 4096 characters), `invalid_message` (over 1024 characters), `invalid_json`, `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token (unless `auth.open_registration`), or one that is not valid (unknown, revoked, expired)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a reader token; `host_not_allowed`: an agent token whose host patterns do not match the service's host", body = vigil_proto::ErrorBody),
        (status = 404, description = "`service_not_found`: no service has this id (or it was deleted): register again, then beat", body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 64 KiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: a service this server does not know, during a database outage", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    caller: Caller,
    ServiceId(id): ServiceId,
    Json(body): Json<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatResponse>, ApiError> {
    Ok(axum::Json(app.heartbeat(id, beat(body), &caller).await?))
}

/// `POST /v1/heartbeats`: many beats, one result each, in order. A malformed body or more than
/// [`MAX_BATCH_BEATS`] beats is refused whole; a bad beat only gets its own error.
#[utoipa::path(
    post,
    path = "/v1/heartbeats",
    tag = "services",
    operation_id = "heartbeat_batch",
    security((), ("token" = [])),
    request_body(content = vigil_proto::BatchHeartbeatRequest, content_type = "application/json", description = "At most 10,000 beats, at most 8 MiB; each beat is a single heartbeat's body plus the service's `id`"),
    responses(
        (status = 200, description = "One result per beat, in the order of the request: its `report_count`, or the `error` the single heartbeat would have answered (`service_not_found`, `host_not_allowed`, `invalid_zone`, `invalid_last_error`, `invalid_message`, `database_unavailable`)", body = vigil_proto::BatchHeartbeatResponse),
        (status = 400, description = "`invalid_json` (not a batch: not JSON, no `beats`, an item without an integer `id`, a field of the wrong type), `batch_too_large` (more than 10,000 beats: nothing applied), `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token (unless `auth.open_registration`), or one that is not valid (unknown, revoked, expired)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a reader token; `host_not_allowed`: an agent token whose host patterns do not match the service's host", body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 8 MiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
    )
)]
pub async fn heartbeat_batch(
    State(app): State<Arc<App>>,
    caller: Caller,
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
        .heartbeat_batch(beats, &caller)
        .await?
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

/// Filters of the list; a service is listed when it passes every one given.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Services of this host only.
    host: Option<String>,
    /// Services of this binary only (`cinder-volume`).
    binary: Option<String>,
    /// Services in this availability zone only.
    zone: Option<String>,
    /// `up`, `down` or `unknown` (a watched service whose database cannot be read).
    #[param(value_type = Option<vigil_proto::State>)]
    state: Option<String>,
    /// `enabled` or `disabled`.
    #[param(value_type = Option<vigil_proto::Status>)]
    status: Option<String>,
    /// `vigil`, or a watch's name.
    source: Option<String>,
    /// Services whose host, binary, zone, topic, version or disabled reason contains this
    /// text (ASCII letters in either case).
    q: Option<String>,
    /// Order by this field (`id`, `host`, `binary`, `topic`, `zone`, `status`, `state`,
    /// `updated_at`, `last_heartbeat_age_s`, `report_count`, `report_interval`, `suspicion`,
    /// `source`, `disabled_reason`, `forced_down`, `version`), descending after a `-`; ties in
    /// id order. Default: id order.
    sort: Option<String>,
    /// Skip this many services of the (sorted) list.
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// Most services in the answer. With `sort`, `offset` or `limit`, the answer carries the
    /// number of services that pass the filters in `X-Total-Count`.
    #[param(minimum = 0)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/services",
    tag = "services",
    operation_id = "list_services",
    security((), ("token" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "The services that pass every filter given, in id order (or `sort`'s), from `offset`, at most `limit`", body = vigil_proto::ServiceList,
            headers(("X-Total-Count" = u64, description = "with `sort`, `offset` or `limit`: how many services pass the filters"))),
        (status = 400, description = "`invalid_state`, `invalid_status`, `invalid_sort`, `invalid_query` (an `offset` or `limit` that is not a whole number)", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid (unknown, revoked, expired), or none on a server whose reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, which may not read, on a server whose reads need a token", body = vigil_proto::ErrorBody),
    )
)]
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
        text: params.q.filter(|q| !q.is_empty()),
    };
    let sort = match params.sort.as_deref() {
        Some(text) => Some(
            text.parse::<super::list_body::Sort>()
                .map_err(|m| ApiError::bad_request("invalid_sort", m))?,
        ),
        None => None,
    };
    // Other replicas' changes first, so a change acknowledged anywhere shows here at once.
    app.sync_for_read().await;
    if sort.is_some() || params.offset.is_some() || params.limit.is_some() {
        return Ok(super::list_body::page(
            &app,
            &filter,
            sort.unwrap_or_default(),
            params.offset.unwrap_or(0),
            params.limit.unwrap_or(usize::MAX),
        ));
    }
    Ok(super::list_body::services(app, filter))
}

#[utoipa::path(
    get,
    path = "/v1/services/{id}",
    tag = "services",
    operation_id = "show_service",
    security((), ("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
    ),
    responses(
        (status = 200, description = "The service", body = vigil_proto::Service),
        (status = 400, description = "`invalid_id`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid (unknown, revoked, expired), or none on a server whose reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, which may not read, on a server whose reads need a token", body = vigil_proto::ErrorBody),
        (status = 404, description = "`service_not_found`: no service has this id (or it was deleted)", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: a service this server does not know, during a database outage", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
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

#[utoipa::path(
    patch,
    path = "/v1/services/{id}",
    tag = "services",
    operation_id = "update_service",
    security(("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
    ),
    request_body(content = vigil_proto::UpdateServiceRequest, content_type = "application/json", description = "Absent fields are left as they are; enabling clears the reason; `disabled_reason: null` clears it; unknown fields are refused"),
    responses(
        (status = 200, description = "The service after the change (written to the database before the answer)", body = vigil_proto::Service),
        (status = 400, description = "`empty_change` (no field given), `invalid_disabled_reason`, `invalid_id`, `invalid_json` (also an unknown field), `invalid_body`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token (`Authorization: Bearer <token>`), or one that is not valid", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a token whose role is not admin", body = vigil_proto::ErrorBody),
        (status = 404, description = "`service_not_found`: no service has this id (or it was deleted)", body = vigil_proto::ErrorBody),
        (status = 409, description = "`read_only_source`: a service of a watched OpenStack database, which Vigil never writes", body = vigil_proto::ErrorBody),
        (status = 413, description = "`payload_too_large`: a body over 64 KiB", body = vigil_proto::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = vigil_proto::ErrorBody),
        (status = 429, description = "`rate_limited`: this caller (its token, or its address) wrote faster than `limits.writes_per_second` after its `limits.write_burst`; nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: the database is unavailable (down, its disk full, its file read-only): nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn update(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
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
    Ok(axum::Json(app.update(id, change, &caller).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Delete the service even while it is up (its process would re-create it).
    #[serde(default)]
    #[param(required = false)]
    force: bool,
}

#[utoipa::path(
    delete,
    path = "/v1/services/{id}",
    tag = "services",
    operation_id = "delete_service",
    security(("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
        DeleteParams,
    ),
    responses(
        (status = 204, description = "Deleted (a `deleted` event is written)"),
        (status = 400, description = "`invalid_id`", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: no token (`Authorization: Bearer <token>`), or one that is not valid", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: a token whose role is not admin", body = vigil_proto::ErrorBody),
        (status = 404, description = "`service_not_found`: no service has this id (or it was deleted)", body = vigil_proto::ErrorBody),
        (status = 409, description = "`service_up`: the service is up and `force` is not given (its process would re-create it); `read_only_source`: a service of a watched OpenStack database", body = vigil_proto::ErrorBody),
        (status = 429, description = "`rate_limited`: this caller (its token, or its address) wrote faster than `limits.writes_per_second` after its `limits.write_burst`; nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
        (status = 503, description = "`database_unavailable`: the database is unavailable (down, its disk full, its file read-only): nothing was changed; try again after `Retry-After`", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn delete(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    ServiceId(id): ServiceId,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    app.delete(id, params.force, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
