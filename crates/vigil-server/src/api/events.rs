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

/// Most events one page holds.
pub const MAX_LIMIT: i64 = 1000;

/// Query of the list and the stream.
#[derive(Debug, Default, Deserialize)]
pub struct EventParams {
    service: Option<i64>,
    host: Option<String>,
    binary: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    limit: Option<i64>,
    /// Older than this id (the previous page's `next_before`).
    before: Option<i64>,
    /// Newer than this id, oldest first (for the stream: where to resume).
    after: Option<i64>,
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
    }
}

pub async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<EventParams>,
) -> Result<axum::Json<EventList>, ApiError> {
    Ok(axum::Json(page(&app, params.filter(None)?).await?))
}

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
    let events = app.follow(filter, cursor).map(move |event| {
        let _open = &open;
        Ok(SseEvent::default()
            .id(event.id.to_string())
            .event(event.kind.as_str())
            .json_data(event_json(event))
            .unwrap_or_else(|_| SseEvent::default().comment("unserializable event")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
