//! The history as the API reads it: pages of events, and a live stream that follows a cursor
//! (the last event id sent) through the event feed's memory, or the database when the cursor
//! is older than that (see [`crate::events`]). So a watcher that reconnects with its last id
//! misses and repeats nothing that is still retained. Handlers read the history only here.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream};

use super::{App, AppError};
use crate::model::Event;
use crate::store::EventFilter;

/// One stream's place: `cursor` is the last event sent (or looked past), `floor` where it may
/// move on to once `buffered` is sent.
struct Streaming {
    app: Arc<App>,
    filter: EventFilter,
    cursor: i64,
    floor: i64,
    fed: tokio::sync::watch::Receiver<u64>,
    closed: tokio::sync::watch::Receiver<bool>,
    buffered: std::vec::IntoIter<Event>,
}

impl App {
    /// One page of the history, newest first (oldest first with `filter.after`).
    pub async fn events_page(&self, filter: &EventFilter) -> Result<Vec<Event>, AppError> {
        Ok(self.store.list_events(filter).await?)
    }

    /// The id of the newest event (0 when there is none).
    pub async fn newest_event_id(&self) -> Result<i64, AppError> {
        let newest = EventFilter {
            limit: 1,
            ..EventFilter::default()
        };
        let events = self.store.list_events(&newest).await?;
        Ok(events.first().map_or(0, |e| e.id))
    }

    /// Every event after `cursor` that passes `filter` (service, host, binary, kind; its
    /// `limit` is the page read at a time), oldest first, then each new one as it is
    /// written, until the server shuts down.
    pub fn follow(self: Arc<Self>, filter: EventFilter, cursor: i64) -> impl Stream<Item = Event> {
        let state = Streaming {
            fed: self.events.subscribe(),
            closed: self.events.closed(),
            app: self,
            filter,
            cursor,
            floor: cursor,
            buffered: Vec::new().into_iter(),
        };
        stream::unfold(state, |mut state| async move {
            let event = state.next().await?;
            Some((event, state))
        })
    }
}

impl Streaming {
    /// The next event to send; `None` once the server shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.buffered.next() {
                self.cursor = event.id;
                return Some(event);
            }
            if *self.closed.borrow() {
                return None;
            }
            self.cursor = self.cursor.max(self.floor);
            self.fed.mark_unchanged();
            match self.app.events.recent_after(self.cursor, &self.filter) {
                Ok((events, scanned)) if !events.is_empty() => {
                    self.floor = scanned;
                    self.buffered = events.into_iter();
                    continue;
                }
                Ok((_, scanned)) => self.cursor = scanned,
                Err(covered_from) => {
                    // Older than the feed's memory: the database, up to where it starts.
                    self.filter.after = Some(self.cursor);
                    match self.app.store.list_events(&self.filter).await {
                        Ok(events) => {
                            if let Some(from) = covered_from {
                                if (events.len() as i64) < self.filter.limit {
                                    // Every matching event up to the feed's start is here.
                                    self.floor = self.floor.max(from);
                                }
                            }
                            if !events.is_empty() || self.floor > self.cursor {
                                self.buffered = events.into_iter();
                                continue;
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "event stream cannot read the history; retrying")
                        }
                    }
                }
            }
            tokio::select! {
                result = self.fed.changed() => {
                    if result.is_err() {
                        return None;
                    }
                }
                _ = self.closed.changed() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
