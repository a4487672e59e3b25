//! `os-services`: list, and the `PUT` actions. Thin: parse, call [`App`], answer in Cinder's
//! shape (`cinder/api/contrib/services.py`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use vigil_proto::Service;

use super::auth::{Admin, Reader};
use super::body::Body;
use super::fault::Fault;
use super::version::Microversion;
use crate::app::{App, AppError};
use crate::auth::Caller;
use crate::registry::ListFilter;
use crate::store::AdminChange;

/// Microversion that added `cluster` to each row.
const CLUSTER_SUPPORT: u32 = 7;
/// Microversion that added `backend_state` to `cinder-volume` rows.
const BACKEND_STATE_REPORT: u32 = 49;
/// The binary whose rows carry replication fields (Cinder's `constants.VOLUME_BINARY`).
const VOLUME_BINARY: &str = "cinder-volume";

/// One row of `GET os-services`. Fields that are `None` are left out; `Some(None)` is a JSON
/// `null`, which is what Cinder sends for a field that exists but has no value.
#[derive(Debug, Serialize)]
struct Row {
    binary: String,
    host: String,
    zone: String,
    status: &'static str,
    state: &'static str,
    updated_at: Option<String>,
    disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_backend_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frozen: Option<bool>,
}

impl Row {
    fn new(service: Service, version: Microversion) -> Row {
        let volume = service.binary == VOLUME_BINARY;
        // Cinder knows up and down only: a watched service whose database cannot be read
        // (`unknown`) is not shown up, nor one that stopped cleanly (`stopped`), nor one held
        // `unreachable` by the partition guard (Cinder itself would show it down by now):
        // none takes work.
        let state = match service.state {
            vigil_proto::State::Up => "up",
            vigil_proto::State::Down
            | vigil_proto::State::Unknown
            | vigil_proto::State::Stopped
            | vigil_proto::State::Unreachable => "down",
        };
        Row {
            updated_at: shown_updated_at(&service).map(cinder_time),
            status: service.status.as_str(),
            state,
            cluster: version.at_least(CLUSTER_SUPPORT).then_some(None),
            backend_state: (volume && version.at_least(BACKEND_STATE_REPORT)).then_some(state),
            replication_status: volume.then_some("disabled"),
            active_backend_id: volume.then_some(None),
            frozen: volume.then_some(service.frozen),
            binary: service.binary,
            host: service.host,
            zone: service.zone,
            disabled_reason: service.disabled_reason,
        }
    }
}

/// Cinder shows the later of the newest heartbeat and the last admin change, so an operator
/// sees that their `service-disable` took effect.
fn shown_updated_at(service: &Service) -> Option<DateTime<Utc>> {
    service.updated_at.max(service.modified_at)
}

/// Cinder's JSON time: naive UTC with microseconds, no zone.
fn cinder_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// `GET /v3[/{project_id}]/os-services[?host=H][&binary=B]`. Other parameters are ignored,
/// as Cinder does; an empty value filters for the empty string (no rows).
pub async fn list(
    State(app): State<Arc<App>>,
    _reader: Reader,
    Extension(version): Extension<Microversion>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, Fault> {
    let Query(params) = query.map_err(|e| Fault::invalid_input(e.body_text()))?;
    let param = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let filter = ListFilter {
        host: param("host"),
        binary: param("binary"),
        ..ListFilter::default()
    };
    let rows: Vec<Row> = app
        .list(&filter)
        .await
        .into_iter()
        .map(|service| Row::new(service, version))
        .collect();
    Ok(Json(json!({ "services": rows })))
}

#[derive(Debug, Deserialize)]
pub struct ActionPath {
    action: String,
}

/// Body of every action; each reads the fields it needs.
#[derive(Debug, Default, Deserialize)]
pub struct ActionBody {
    host: Option<String>,
    binary: Option<String>,
    /// Cinder's deprecated name for `binary`, still honoured when `binary` is absent.
    service: Option<String>,
    disabled_reason: Option<String>,
}

impl ActionBody {
    fn host(&self) -> Result<&str, Fault> {
        self.host
            .as_deref()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Fault::invalid_input("Missing required element 'host' in request body."))
    }

    fn binary(&self) -> Result<&str, Fault> {
        [&self.binary, &self.service]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|b| !b.is_empty())
            .ok_or_else(|| {
                Fault::invalid_input("Missing required element 'binary' in request body.")
            })
    }
}

/// `PUT /v3[/{project_id}]/os-services/{action}`.
pub async fn action(
    State(app): State<Arc<App>>,
    Admin(caller): Admin,
    Path(ActionPath { action }): Path<ActionPath>,
    Body(body): Body<ActionBody>,
) -> Result<Response, Fault> {
    match action.as_str() {
        "enable" => set_disabled(&app, &caller, &body, false, None).await,
        "disable" => set_disabled(&app, &caller, &body, true, None).await,
        "disable-log-reason" => {
            let reason = body
                .disabled_reason
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .ok_or_else(|| {
                    Fault::bad_request("Disabled reason contains invalid characters or is too long")
                })?;
            set_disabled(&app, &caller, &body, true, Some(reason)).await
        }
        "freeze" => set_frozen(&app, &caller, &body, true).await,
        "thaw" => set_frozen(&app, &caller, &body, false).await,
        "failover_host" | "failover" => Err(Fault::new(
            StatusCode::NOT_IMPLEMENTED,
            "Replication failover is not supported: Vigil tracks service liveness only and \
             has no volume backends to fail over.",
        )),
        "get-log" | "set-log" => Err(Fault::new(
            StatusCode::NOT_IMPLEMENTED,
            "Dynamic log levels are not supported: Vigil cannot reach the services' loggers.",
        )),
        _ => Err(Fault::invalid_input("Unknown action")),
    }
}

/// `enable`, `disable`, `disable-log-reason`. Enabling clears the reason (as both Cinder and
/// Vigil's own API do); a plain `disable` keeps whatever reason was there.
async fn set_disabled(
    app: &App,
    caller: &Caller,
    body: &ActionBody,
    disabled: bool,
    reason: Option<&str>,
) -> Result<Response, Fault> {
    let host = body.host()?;
    let binary = body.binary()?;
    let id = app
        .find(host, binary)
        .await
        .ok_or_else(|| Fault::service_not_found(host, binary))?;
    let change = AdminChange {
        disabled: Some(disabled),
        disabled_reason: reason.map(|r| Some(r.to_string())),
        ..AdminChange::default()
    };
    let service = app
        .update(id, change, caller)
        .await
        .map_err(|e| not_found_as(e, host, binary))?;
    let mut answer = json!({
        "host": host,
        "service": body.service.as_deref().unwrap_or(""),
        "binary": body.binary.as_deref().unwrap_or(""),
        "status": service.status.as_str(),
        "disabled": service.disabled,
    });
    if !disabled || reason.is_some() {
        answer["disabled_reason"] = json!(service.disabled_reason);
    }
    Ok(Json(answer).into_response())
}

/// `freeze`, `thaw`: every service of the host, each through [`App::update`] so each gets its
/// `frozen` or `thawed` event. Answers 200 with no body, as Cinder does.
async fn set_frozen(
    app: &App,
    caller: &Caller,
    body: &ActionBody,
    frozen: bool,
) -> Result<Response, Fault> {
    let host = body.host()?;
    let services = app
        .list(&ListFilter {
            host: Some(host.to_string()),
            // Watched services change in their own OpenStack only.
            source: Some(vigil_proto::VIGIL_SOURCE.into()),
            ..ListFilter::default()
        })
        .await;
    if services.is_empty() {
        return Err(Fault::invalid_input(format!(
            "No service could be found on host {host}."
        )));
    }
    for service in services {
        let change = AdminChange {
            frozen: Some(frozen),
            ..AdminChange::default()
        };
        app.update(service.id, change, caller)
            .await
            .map_err(|e| not_found_as(e, host, &service.binary))?;
    }
    Ok(StatusCode::OK.into_response())
}

/// A service deleted between the lookup and the change is reported as Cinder words it.
fn not_found_as(err: AppError, host: &str, binary: &str) -> Fault {
    match err {
        AppError::NotFound(_) => Fault::service_not_found(host, binary),
        other => other.into(),
    }
}
