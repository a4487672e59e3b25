//! The body of `GET /v1/services`, written a piece at a time.
//!
//! The JSON is the same as serializing a [`vigil_proto::ServiceList`], but it is produced in
//! pieces of about [`PIECE`] bytes while it is sent, instead of as one `Vec<Service>` and one
//! buffer of the whole answer. At 100,000 services the whole answer is 42 MB; building it at
//! once spent a third of the list's time growing and page-faulting those two buffers, and at
//! a million services would double the server's memory for the length of the request. Each
//! piece locks one entry at a time, so heartbeats go on while a long list is sent.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::stream;

use crate::app::App;
use crate::registry::{Entry, ListFilter, Registry, Slot};

/// Size of one piece of the answer: large enough that the per-piece cost vanishes, small
/// enough to stay in the allocator's reused heap rather than a fresh mapping each time.
const PIECE: usize = 64 * 1024;

/// Lists of at most this many candidates are answered in one piece.
const SMALL: usize = 16;

const OPEN: &[u8] = br#"{"services":["#;
const CLOSE: &[u8] = b"]}";

/// Writes one service's JSON from its slot at `now` (`/v1/services`' or Cinder's shape).
pub(crate) type WriteService =
    Box<dyn Fn(&mut Vec<u8>, &Registry, &Slot, DateTime<Utc>) + Send + 'static>;

/// Where a list's body is.
struct Cursor {
    app: Arc<App>,
    filter: ListFilter,
    now: DateTime<Utc>,
    entries: std::vec::IntoIter<Arc<Entry>>,
    open: &'static [u8],
    write: WriteService,
    first: bool,
    done: bool,
}

impl Cursor {
    /// The next piece: the opening, then whole services until the piece is full, then the
    /// closing after the last one. `None` after the closing.
    fn next_piece(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut piece = Vec::with_capacity(PIECE + PIECE / 4);
        if self.first {
            piece.extend_from_slice(self.open);
        }
        while piece.len() < PIECE {
            let Some(entry) = self.entries.next() else {
                piece.extend_from_slice(CLOSE);
                self.done = true;
                break;
            };
            let slot = entry.lock();
            if !self.app.registry.passes(&slot, &self.filter, self.now) {
                continue;
            }
            if !std::mem::take(&mut self.first) {
                piece.push(b',');
            }
            (self.write)(&mut piece, &self.app.registry, &slot, self.now);
        }
        Some(Bytes::from(piece))
    }
}

/// The answer to a list with `filter`, as seen at one moment (`now`) for every service.
pub fn services(app: Arc<App>, filter: ListFilter) -> Response {
    stream(app, filter, OPEN, Box::new(super::service_json::write))
}

/// `{"<name>":[` (`open`), each service that passes `filter` as `write` writes it, `]}`: sent
/// a piece at a time, each service's entry locked only while it is written.
pub(crate) fn stream(
    app: Arc<App>,
    filter: ListFilter,
    open: &'static [u8],
    write: WriteService,
) -> Response {
    let now = app.clock.now();
    let entries = app.registry.candidates(&filter).into_iter();
    let mut cursor = Cursor {
        app,
        filter,
        now,
        entries,
        open,
        write,
        first: true,
        done: false,
    };
    if cursor.entries.len() <= SMALL {
        // A host's services: one piece, sent with its length.
        let mut body = Vec::new();
        while let Some(piece) = cursor.next_piece() {
            body.extend_from_slice(&piece);
        }
        return ([(CONTENT_TYPE, "application/json")], body).into_response();
    }
    let pieces = std::iter::from_fn(move || cursor.next_piece()).map(Ok::<Bytes, Infallible>);
    let body = Body::from_stream(stream::iter(pieces));
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// The field a sorted list is ordered by, and which way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sort {
    field: Field,
    descending: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Field {
    #[default]
    Id,
    Host,
    Binary,
    Topic,
    Zone,
    Status,
    State,
    UpdatedAt,
    Age,
    ReportCount,
    ReportInterval,
    Suspicion,
    Source,
    DisabledReason,
    ForcedDown,
    Version,
}

const FIELDS: [(&str, Field); 16] = [
    ("id", Field::Id),
    ("host", Field::Host),
    ("binary", Field::Binary),
    ("topic", Field::Topic),
    ("zone", Field::Zone),
    ("status", Field::Status),
    ("state", Field::State),
    ("updated_at", Field::UpdatedAt),
    ("last_heartbeat_age_s", Field::Age),
    ("report_count", Field::ReportCount),
    ("report_interval", Field::ReportInterval),
    ("suspicion", Field::Suspicion),
    ("source", Field::Source),
    ("disabled_reason", Field::DisabledReason),
    ("forced_down", Field::ForcedDown),
    ("version", Field::Version),
];

impl std::str::FromStr for Sort {
    type Err = String;

    fn from_str(text: &str) -> Result<Sort, String> {
        let (descending, name) = match text.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, text),
        };
        FIELDS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, field)| Sort {
                field: *field,
                descending,
            })
            .ok_or_else(|| {
                let known: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
                format!(
                    "sort must be one of {} (descending after a -), not {text:?}",
                    known.join(", ")
                )
            })
    }
}

/// A service's place in a sorted list: numbers, or text (absent text and numbers first).
#[derive(Debug, PartialEq, PartialOrd)]
enum Key {
    Number(f64),
    Text(Option<crate::model::Name>),
}

impl Key {
    fn of(field: Field, app: &App, slot: &crate::registry::Slot, now: DateTime<Utc>) -> Key {
        let record = &slot.record;
        let text = |name: &str| Key::Text(Some(name.into()));
        match field {
            Field::Id => Key::Number(0.0),
            Field::Host => text(&record.host),
            Field::Binary => text(&record.binary),
            Field::Topic => Key::Text(record.topic.as_deref().map(Into::into)),
            Field::Zone => text(&record.zone),
            Field::Status => Key::Number(f64::from(u8::from(record.disabled))),
            Field::State => Key::Text(Some(app.registry.judge(slot, now).state().as_str().into())),
            Field::UpdatedAt | Field::Age => {
                let age = app.registry.judge(slot, now).age_s();
                Key::Number(if field == Field::Age { age } else { -age })
            }
            Field::ReportCount => Key::Number(record.report_count as f64),
            Field::ReportInterval => Key::Number(record.report_interval),
            Field::Suspicion => Key::Number(
                app.registry
                    .judge(slot, now)
                    .suspicion_shown()
                    .unwrap_or(-1.0),
            ),
            Field::Source => Key::Text(Some(crate::registry::source(slot).into())),
            Field::DisabledReason => Key::Text(record.disabled_reason().map(Into::into)),
            Field::ForcedDown => Key::Number(f64::from(u8::from(record.forced_down))),
            Field::Version => Key::Text(record.version.as_deref().map(Into::into)),
        }
    }
}

/// A page of the list with `filter`, ordered by `sort`: `limit` services from `offset`, with
/// how many pass the filter in `X-Total-Count`. Every service that passes is judged once to
/// be sorted, then only the page's are written, so a page of a large fleet is quick.
pub fn page(app: &App, filter: &ListFilter, sort: Sort, offset: usize, limit: usize) -> Response {
    let now = app.clock.now();
    let mut rows: Vec<(Key, i64, Arc<Entry>)> = Vec::new();
    for entry in app.registry.candidates(filter) {
        let slot = entry.lock();
        if !app.registry.passes(&slot, filter, now) {
            continue;
        }
        let key = Key::of(sort.field, app, &slot, now);
        let id = slot.record.id;
        drop(slot);
        rows.push((key, id, entry));
    }
    match (sort.field, sort.descending) {
        // The candidates come in id order.
        (Field::Id, false) => {}
        (Field::Id, true) => rows.reverse(),
        _ => rows.sort_by(|a, b| {
            let order = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
            let order = if sort.descending {
                order.reverse()
            } else {
                order
            };
            order.then(a.1.cmp(&b.1))
        }),
    }
    let total = rows.len();
    let mut body = Vec::with_capacity(PIECE);
    body.extend_from_slice(OPEN);
    for (i, (_, _, entry)) in rows.iter().skip(offset).take(limit).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let slot = entry.lock();
        super::service_json::write(&mut body, &app.registry, &slot, now);
    }
    body.extend_from_slice(CLOSE);
    (
        [
            (CONTENT_TYPE, "application/json".to_string()),
            (
                axum::http::HeaderName::from_static("x-total-count"),
                total.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}
