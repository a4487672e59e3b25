//! `/v1/events`: the history, paged, and as a live Server-Sent Events stream.
//!
//! The stream follows a cursor (the last event id sent) through the event feed's memory, or
//! the database when the cursor is older than that (see [`crate::events`]). So a watcher that
//! reconnects with `Last-Event-ID` misses and repeats nothing that is still retained.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures_util::stream::{Stream, StreamExt};
use serde::Deserialize;
use vigil_proto::EventList;

use super::error::ApiError;
use super::extract::{Query, ServiceId};
use crate::app::App;
use crate::model::Event;
use crate::store::{EventFilter, EventKind};

/// How often an open stream checks that its token is still valid.
const RECHECK: Duration = Duration::from_secs(1);

/// Most events one page holds.
pub const MAX_LIMIT: i64 = 1000;

/// Query of the list and the stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Events of this service id only.
    service: Option<i64>,
    /// Events of services of this host only.
    host: Option<String>,
    /// Events of services of this binary only.
    binary: Option<String>,
    /// Events of this kind only.
    #[param(schema_with = kind_schema)]
    kind: Option<String>,
    /// Events at or after this time (RFC 3339, `2026-01-02T03:04:05Z`).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Most events in the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Older than this id (the previous page's `next_before`).
    before: Option<i64>,
    /// Newer than this id, oldest first (for the stream: where to resume).
    after: Option<i64>,
}

/// The `kind` filter's schema: the names of [`EventKind::ALL`].
fn kind_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("Events of this kind only"))
        .enum_values(Some(EventKind::ALL.iter().map(|k| k.as_str())))
        .build()
}

impl EventParams {
    fn filter(self, service: Option<i64>) -> Result<EventFilter, ApiError> {
        let kind = match self.kind {
            Some(kind) => Some(EventKind::parse(&kind).ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::bad_request(
                    "invalid_kind",
                    format!("kind must be one of {}, not {kind:?}", known.join(", ")),
                )
            })?),
            None => None,
        };
        let since = match self.since {
            Some(text) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        ApiError::bad_request(
                            "invalid_since",
                            format!(
                                "since must be an RFC 3339 time such as 2026-01-02T03:04:05Z: {e}"
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}, not {limit}"),
            ));
        }
        Ok(EventFilter {
            service_id: service.or(self.service),
            host: self.host,
            binary: self.binary,
            kind,
            since,
            before: self.before,
            after: self.after,
            limit,
        })
    }
}

async fn page(app: &App, filter: EventFilter) -> Result<EventList, ApiError> {
    let events = app.events_page(&filter).await?;
    let next_before = if filter.after.is_none() && events.len() as i64 == filter.limit {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(EventList {
        events: events.into_iter().map(event_json).collect(),
        next_before,
    })
}

/// An event as the API shows it.
pub(crate) fn event_json(event: Event) -> vigil_proto::Event {
    vigil_proto::Event {
        id: event.id,
        service_id: event.service_id,
        host: event.host,
        binary: event.binary,
        kind: event.kind.as_str().into(),
        at: event.at,
        reason: event.reason,
        last_seen: event.last_seen,
        threshold_s: event.threshold_s,
        actor: event.actor,
        address: event.address,
    }
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    operation_id = "list_events",
    security((), ("token" = [])),
    params(EventParams),
    responses(
        (status = 200, description = "A page of events, newest first (oldest first with `after`); `next_before` is the next (older) page's `before`", body = vigil_proto::EventList),
        (status = 400, description = "`invalid_kind`, `invalid_since`, `invalid_limit` (outside 1-1000)", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid (unknown, revoked, expired), or none on a server whose reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, which may not read, on a server whose reads need a token", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: the history cannot be read", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<EventParams>,
) -> Result<axum::Json<EventList>, ApiError> {
    Ok(axum::Json(page(&app, params.filter(None)?).await?))
}

#[utoipa::path(
    get,
    path = "/v1/services/{id}/events",
    tag = "events",
    operation_id = "list_service_events",
    security((), ("token" = [])),
    params(
        ("id" = i64, Path, description = "the service's id", example = 1),
        EventParams,
    ),
    responses(
        (status = 200, description = "A page of this service's events (the `service` filter is the path's id), as `GET /v1/events`", body = vigil_proto::EventList),
        (status = 400, description = "`invalid_id`, `invalid_kind`, `invalid_since`, `invalid_limit` (outside 1-1000)", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid (unknown, revoked, expired), or none on a server whose reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, which may not read, on a server whose reads need a token", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: the history cannot be read", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn for_service(
    State(app): State<Arc<App>>,
    ServiceId(id): ServiceId,
    Query(params): Query<EventParams>,
) -> Result<axum::Json<EventList>, ApiError> {
    Ok(axum::Json(page(&app, params.filter(Some(id))?).await?))
}

/// Where a stream starts: `Last-Event-ID` (a reconnect), else `?after=`, else after the
/// newest event now (only what happens from now on).
async fn start_cursor(app: &App, headers: &HeaderMap, after: Option<i64>) -> Result<i64, ApiError> {
    if let Some(value) = headers.get("last-event-id") {
        return value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be an event id")
            });
    }
    if let Some(after) = after {
        return Ok(after);
    }
    Ok(app.newest_event_id().await?)
}

#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    operation_id = "stream_events",
    security((), ("token" = [])),
    params(
        EventParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "The id of the last event received, to resume after a reconnect (takes precedence over `after`)", example = 17),
    ),
    responses(
        (status = 200, description = "Server-Sent Events that never end: each event as it is written (`id` = event id, `event` = kind, `data` = the event as JSON), after the cursor (`Last-Event-ID`, else `after`, else the newest event now); a comment every 15 s keeps the connection open. `since`, `before` and `limit` are checked but not used", content_type = "text/event-stream", body = super::openapi::SseEvent),
        (status = 400, description = "`invalid_last_event_id`, `invalid_kind`, `invalid_since`, `invalid_limit` (outside 1-1000)", body = vigil_proto::ErrorBody),
        (status = 401, description = "`unauthorized`: a token that is not valid (unknown, revoked, expired), or none on a server whose reads need one (`auth.anonymous_read = false`)", body = vigil_proto::ErrorBody),
        (status = 403, description = "`forbidden`: an agent token, which may not read, on a server whose reads need a token", body = vigil_proto::ErrorBody),
        (status = 503, description = "`database_unavailable`: the history cannot be read", body = vigil_proto::ErrorBody,
            headers(("Retry-After" = String, description = "seconds to wait before trying again"))),
    )
)]
pub async fn stream(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<EventParams>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let after = params.after;
    let mut filter = params.filter(None)?;
    filter.before = None;
    filter.since = None;
    filter.limit = crate::events::READ_PAGE;
    let cursor = start_cursor(&app, &headers, after).await?;
    // Counts this stream in `vigil_sse_streams` while it is open.
    let open = app.metrics.stream();
    // A stream outlives the check of its request: it ends once its token is revoked or
    // expires, looked at before every event and every second in between.
    let secret = super::auth::bearer(&headers).map(str::to_owned);
    let checker = app.clone();
    let allowed = move || match &secret {
        None => true,
        Some(secret) => checker
            .tokens
            .identify(Some(secret), checker.clock.now())
            .is_ok_and(|grant| {
                let caller = crate::auth::Caller {
                    grant,
                    address: None,
                };
                checker
                    .tokens
                    .authorize(&caller, crate::auth::Need::Read)
                    .is_ok()
            }),
    };
    let ticks = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(RECHECK).await;
        Some((None, ()))
    });
    // The stream ends when the server stops: `select` runs until both of its streams end, and
    // the ticks never do, so the end of `follow` alone would leave the stream open and the
    // stop's drain waiting out its limit for it.
    let mut closed = app.events.closed();
    let stopping = async move {
        let _ = closed.wait_for(|closed| *closed).await;
    };
    let events = futures_util::stream::select(app.follow(filter, cursor).map(Some), ticks)
        .take_until(stopping)
        .take_while(move |_| std::future::ready(allowed()))
        .filter_map(std::future::ready)
        .map(move |event| {
            let _open = &open;
            Ok(SseEvent::default()
                .id(event.id.to_string())
                .event(event.kind.as_str())
                .json_data(event_json(event))
                .unwrap_or_else(|_| SseEvent::default().comment("unserializable event")))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
