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
use crate::registry::{Entry, ListFilter};

/// Size of one piece of the answer: large enough that the per-piece cost vanishes, small
/// enough to stay in the allocator's reused heap rather than a fresh mapping each time.
const PIECE: usize = 64 * 1024;

/// Lists of at most this many candidates are answered in one piece.
const SMALL: usize = 16;

const OPEN: &[u8] = br#"{"services":["#;
const CLOSE: &[u8] = b"]}";

/// Where a list's body is.
struct Cursor {
    app: Arc<App>,
    filter: ListFilter,
    now: DateTime<Utc>,
    entries: std::vec::IntoIter<Arc<Entry>>,
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
            piece.extend_from_slice(OPEN);
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
            super::service_json::write(&mut piece, &self.app.registry, &slot, self.now);
        }
        Some(Bytes::from(piece))
    }
}

/// The answer to a list with `filter`, as seen at one moment (`now`) for every service.
pub fn services(app: Arc<App>, filter: ListFilter) -> Response {
    let now = app.clock.now();
    let entries = app.registry.candidates(&filter).into_iter();
    let mut cursor = Cursor {
        app,
        filter,
        now,
        entries,
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
