//! `os-services`: list, and the `PUT` actions. Thin: parse, call [`App`], answer in Cinder's
//! shape (`cinder/api/contrib/services.py`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Admin, Reader};
use super::body::Body;
use super::fault::Fault;
use super::version::Microversion;
use crate::api::list_body;
use crate::api::service_json;
use crate::app::{App, AppError};
use crate::auth::Caller;
use crate::registry::{ListFilter, Registry, Slot};
use crate::store::AdminChange;

/// Microversion that added `cluster` to each row.
const CLUSTER_SUPPORT: u32 = 7;
/// Microversion that added `backend_state` to `cinder-volume` rows.
const BACKEND_STATE_REPORT: u32 = 49;
/// The binary whose rows carry replication fields (Cinder's `constants.VOLUME_BINARY`).
const VOLUME_BINARY: &str = "cinder-volume";

/// `{"services":[`, then each row, then `]}`.
const OPEN: &[u8] = br#"{"services":["#;

/// Appends one row of `GET os-services` to `out`: the service in `slot` as Cinder shows it at
/// `version`, in the shape of `cinder/api/contrib/services.py`, keys in alphabetical order
/// (as the `serde_json::Value` this once went through wrote them). Fields a microversion or a
/// binary does not have are left out; a field that exists without a value is `null`, as
/// Cinder sends it. Written straight from the slot, as `/v1/services` is (no `Service` view,
/// no `String` per name or time): at 100,000 services the view, the rows and a JSON value of
/// the whole list were most of the list's time.
fn write_row(
    out: &mut Vec<u8>,
    registry: &Registry,
    slot: &Slot,
    now: DateTime<Utc>,
    version: Microversion,
) {
    let record = &slot.record;
    let volume = record.binary == VOLUME_BINARY;
    let state = cinder_state(registry.judge(slot, now).state());
    out.push(b'{');
    if volume {
        out.extend_from_slice(br#""active_backend_id":null,"#);
    }
    if volume && version.at_least(BACKEND_STATE_REPORT) {
        out.extend_from_slice(br#""backend_state":"#);
        service_json::string(out, state);
        out.push(b',');
    }
    out.extend_from_slice(br#""binary":"#);
    service_json::string(out, &record.binary);
    if version.at_least(CLUSTER_SUPPORT) {
        out.extend_from_slice(br#","cluster":null"#);
    }
    out.extend_from_slice(br#","disabled_reason":"#);
    match record.disabled_reason() {
        Some(reason) => service_json::string(out, reason),
        None => out.extend_from_slice(b"null"),
    }
    if volume {
        out.extend_from_slice(br#","frozen":"#);
        service_json::boolean(out, record.frozen);
    }
    out.extend_from_slice(br#","host":"#);
    service_json::string(out, &record.host);
    if volume {
        out.extend_from_slice(br#","replication_status":"disabled""#);
    }
    out.extend_from_slice(br#","state":"#);
    service_json::string(out, state);
    out.extend_from_slice(if record.disabled {
        br#","status":"disabled""#
    } else {
        br#","status":"enabled""#
    });
    out.extend_from_slice(br#","updated_at":"#);
    // Cinder shows the later of the newest heartbeat and the last admin change, so an
    // operator sees that their `service-disable` took effect.
    match record.updated_at.max(record.modified_at()) {
        Some(at) => service_json::naive_time(out, &at),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","zone":"#);
    service_json::string(out, &record.zone);
    out.push(b'}');
}

/// Cinder knows up and down only: a watched service whose database cannot be read
/// (`unknown`) is not shown up, nor one that stopped cleanly (`stopped`), nor one held
/// `unreachable` by the partition guard (Cinder itself would show it down by now): none takes
/// work.
fn cinder_state(state: vigil_proto::State) -> &'static str {
    match state {
        vigil_proto::State::Up => "up",
        vigil_proto::State::Down
        | vigil_proto::State::Unknown
        | vigil_proto::State::Stopped
        | vigil_proto::State::Unreachable => "down",
    }
}

/// `GET /v3[/{project_id}]/os-services[?host=H][&binary=B]`. Other parameters are ignored,
/// as Cinder does; an empty value filters for the empty string (no rows). The answer is sent a
/// piece at a time, as `GET /v1/services` is.
pub async fn list(
    State(app): State<Arc<App>>,
    _reader: Reader,
    Extension(version): Extension<Microversion>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
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
    // Other replicas' changes first, so a change acknowledged anywhere shows here at once.
    app.sync_for_read().await;
    Ok(list_body::stream(
        app,
        filter,
        OPEN,
        Box::new(move |out, registry, slot, now| write_row(out, registry, slot, now, version)),
    ))
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

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde::Serialize;
    use vigil_proto::Service;

    use super::*;
    use crate::liveness::Liveness;
    use crate::registry::{Beat, Watched};
    use crate::store::ServiceRecord;
    use crate::watch::{OpenstackState, WatchKind};

    /// The row as the list built it before it was written straight from the slot: a view,
    /// this struct, a `serde_json::Value` of the whole list. The reference of the test below.
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
            let state = cinder_state(service.state);
            Row {
                updated_at: service
                    .updated_at
                    .max(service.modified_at)
                    .map(|at| at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
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

    fn record(id: i64, host: &str, binary: &str) -> ServiceRecord {
        ServiceRecord {
            zone: "az-1".into(),
            ..ServiceRecord::example(
                id,
                host,
                binary,
                10.0,
                DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap(),
            )
        }
    }

    /// Whatever the slot holds and whichever microversion is asked for, the bytes are those
    /// the list wrote through serde: every key, its order, escapes, times, null and absent.
    #[test]
    fn writes_what_serializing_the_rows_wrote() {
        let t0 = DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        let mut odd = record(2, "h\"ö\\\n\u{7f}✓", "cinder-volume");
        odd.zone = "z\u{1}\"".into();
        odd.disabled = true;
        odd.set_disabled_reason(Some("disk \"sdb\"\tfailed".into()));
        odd.frozen = true;
        odd.updated_at = Some(t0 + TimeDelta::microseconds(999_999));
        odd.set_modified_at(Some(DateTime::from_timestamp(0, 0).unwrap()));
        let mut changed = record(3, "changed", "cinder-scheduler");
        changed.updated_at = Some(t0);
        changed.set_modified_at(Some(t0 + TimeDelta::seconds(5)));
        changed.forced_down = true;
        let mut far = record(4, "far", "cinder-volume");
        far.updated_at = Some(DateTime::from_timestamp(300_000_000_000, 0).unwrap());
        let registry = Registry::new(
            vec![
                record(1, "plain", "cinder-backup"),
                odd,
                changed,
                far,
                record(5, "beats", "cinder-volume"),
                record(6, "stopped", "cinder-volume"),
            ],
            Liveness::new(60.0, 8.0),
        );
        for i in 1..=3 {
            registry.heartbeat(5, &Beat::default(), t0 + TimeDelta::milliseconds(1000 * i));
        }
        registry.heartbeat(6, &Beat::default(), t0);
        registry
            .get(6)
            .unwrap()
            .lock()
            .record
            .set_stopped_at(Some(t0 + TimeDelta::seconds(1)));
        let watched = Watched {
            source: "cinder/eu".into(),
            kind: WatchKind::Cinder,
            openstack_id: 7,
            openstack_state: OpenstackState::Up,
            unreachable: true,
            cadence_from: None,
        };
        registry
            .insert_watched(record((1 << 52) | 7, "stor-1", "cinder-volume"), watched)
            .unwrap();
        let now = t0 + TimeDelta::seconds(4);
        let entries = registry.candidates(&ListFilter::default());
        assert_eq!(entries.len(), 7);
        for minor in [0, 6, 7, 48, 49, 71] {
            let version = Microversion { minor };
            let rows: Vec<Row> = entries
                .iter()
                .map(|entry| Row::new(registry.view(&entry.lock(), now), version))
                .collect();
            let expected = serde_json::to_vec(&json!({ "services": rows })).unwrap();
            let text = String::from_utf8_lossy(&expected);
            assert!(text.contains(r#""state":"up""#) && text.contains(r#""state":"down""#));
            let mut written = OPEN.to_vec();
            for (i, entry) in entries.iter().enumerate() {
                if i > 0 {
                    written.push(b',');
                }
                write_row(&mut written, &registry, &entry.lock(), now, version);
            }
            written.extend_from_slice(b"]}");
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected),
                "3.{minor}"
            );
        }
    }
}
