//! The history: every transition and admin change is an event in the database.
//!
//! Admin changes write their events in the same transaction as the change. Transitions found
//! on the hot path or by the detector are queued here and written in batches by the detector
//! under its lease (see [`crate::detector`]), so a heartbeat never waits for the database.
//!
//! Watchers (SSE streams) share one reader of the database, the feed
//! ([`crate::tasks::feed`]): it reads
//! the events newer than its cursor whenever events may have been written here, and once a
//! second besides (another replica's events wake nobody here), and keeps the latest
//! [`FEED_KEEP`] in memory. A stream takes what passes its filter from there, by event id; one
//! whose cursor is older than what the feed holds (a reconnect with an old `Last-Event-ID`)
//! reads the database until it catches up. So every stream is resumable by event id, and many
//! watchers cost one query a second, not one each.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::model::Event;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use crate::store::{EventFilter, NewEvent};

/// Events the feed keeps in memory for streams.
pub const FEED_KEEP: usize = 4096;

/// Events read per query, by the feed and by a stream catching up.
pub const READ_PAGE: i64 = 500;

/// The latest events, as the feed read them.
#[derive(Default)]
struct Recent {
    /// Every event with an id above this, up to the newest read, is in `events`. `None` until
    /// the feed first read the database.
    covered_from: Option<i64>,
    /// The id of the newest event read (or the starting point).
    newest: i64,
    events: VecDeque<Arc<Event>>,
}

/// Queue and notifier of the history.
pub struct EventLog {
    queue: mpsc::UnboundedSender<NewEvent>,
    changed: watch::Sender<u64>,
    /// Set when the server shuts down, so that live streams end and the drain can finish.
    closed: watch::Sender<bool>,
    recent: RwLock<Recent>,
    /// Changes whenever the feed took in new events.
    fed: watch::Sender<u64>,
}

impl EventLog {
    pub fn new() -> (EventLog, mpsc::UnboundedReceiver<NewEvent>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let (changed, _) = watch::channel(0);
        let (closed, _) = watch::channel(false);
        let (fed, _) = watch::channel(0);
        (
            EventLog {
                queue,
                changed,
                closed,
                recent: RwLock::default(),
                fed,
            },
            receiver,
        )
    }

    /// Queues a transition for the detector to write.
    pub fn emit(&self, event: NewEvent) {
        // The receiver lives as long as the server; a send after shutdown has nowhere to go.
        let _ = self.queue.send(event);
    }

    /// Wakes watchers after events were written (by the detector or in an admin transaction).
    pub fn notify(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// A receiver that changes whenever events may have been written here.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A receiver that changes whenever the feed took in new events.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.fed.subscribe()
    }

    /// The events after `cursor` that pass `filter`, oldest first, from the feed's memory, and
    /// the newest id looked at (where to continue from). `Err(Some(from))` when the feed does
    /// not hold everything after `cursor` but only what is after `from`, `Err(None)` before the
    /// feed first read: the caller reads the database instead.
    pub fn recent_after(
        &self,
        cursor: i64,
        filter: &EventFilter,
    ) -> Result<(Vec<Event>, i64), Option<i64>> {
        let recent = self.recent.read();
        match recent.covered_from {
            Some(from) if from <= cursor => {}
            other => return Err(other),
        }
        // At most a page at a time, as from the database: a burst must not make every stream
        // copy the whole memory at once, nor hold up a shutdown.
        let start = recent.events.partition_point(|e| e.id <= cursor);
        let mut events = Vec::new();
        for event in recent.events.range(start..).filter(|e| passes(filter, e)) {
            events.push(Event::clone(event));
            if events.len() as i64 == READ_PAGE {
                return Ok((events, event.id));
            }
        }
        Ok((events, recent.newest.max(cursor)))
    }

    /// Takes in events read from the database after the feed's cursor, oldest first.
    pub fn take_in(&self, events: Vec<Event>) {
        let mut recent = self.recent.write();
        for event in events {
            recent.newest = recent.newest.max(event.id);
            recent.events.push_back(Arc::new(event));
            if recent.events.len() > FEED_KEEP {
                if let Some(old) = recent.events.pop_front() {
                    recent.covered_from = Some(old.id);
                }
            }
        }
        drop(recent);
        self.fed.send_modify(|generation| *generation += 1);
    }

    /// Where the feed starts: after `newest`, everything is to be read.
    pub fn start_feed(&self, newest: i64) {
        let mut recent = self.recent.write();
        recent.covered_from = Some(newest);
        recent.newest = newest;
        drop(recent);
        self.fed.send_modify(|generation| *generation += 1);
    }

    /// The feed stopped: streams read the database again.
    pub fn stop_feed(&self) {
        self.recent.write().covered_from = None;
        self.fed.send_modify(|generation| *generation += 1);
    }

    pub fn feed_cursor(&self) -> Option<i64> {
        let recent = self.recent.read();
        recent.covered_from.map(|_| recent.newest)
    }

    /// Ends every live stream (the server is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// A receiver that turns `true` when the server shuts down.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }
}

/// Whether `event` passes a stream's filter (service, host, binary, kind).
pub fn passes(filter: &EventFilter, event: &Event) -> bool {
    filter.service_id.is_none_or(|id| id == event.service_id)
        && filter.host.as_ref().is_none_or(|h| *h == event.host)
        && filter.binary.as_ref().is_none_or(|b| *b == event.binary)
        && filter.kind.is_none_or(|k| k == event.kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    fn event(id: i64) -> Event {
        Event {
            id,
            service_id: id % 3,
            host: format!("h{}", id % 3),
            binary: "b".into(),
            kind: if id % 2 == 0 {
                EventKind::Down
            } else {
                EventKind::Up
            },
            at: chrono::DateTime::from_timestamp(1_700_000_000 + id, 0).unwrap(),
            reason: None,
            last_seen: None,
            threshold_s: None,
            actor: None,
            address: None,
        }
    }

    fn ids(found: Result<(Vec<Event>, i64), Option<i64>>) -> (Vec<i64>, i64) {
        let (events, scanned) = found.expect("in memory");
        (events.iter().map(|e| e.id).collect(), scanned)
    }

    #[test]
    fn the_feed_serves_what_it_holds_and_sends_the_rest_to_the_database() {
        let (log, _queue) = EventLog::new();
        let all = EventFilter::default();
        assert_eq!(log.recent_after(0, &all).unwrap_err(), None, "not started");
        log.start_feed(10);
        assert_eq!(log.recent_after(9, &all).unwrap_err(), Some(10));
        assert_eq!(ids(log.recent_after(10, &all)), (vec![], 10));
        log.take_in((11..=15).map(event).collect());
        assert_eq!(ids(log.recent_after(12, &all)), (vec![13, 14, 15], 15));
        let down_of_h0 = EventFilter {
            kind: Some(EventKind::Down),
            host: Some("h0".into()),
            ..EventFilter::default()
        };
        assert_eq!(ids(log.recent_after(10, &down_of_h0)), (vec![12], 15));
        assert_eq!(
            ids(log.recent_after(99, &all)),
            (vec![], 99),
            "ahead of the feed"
        );

        let last = 15 + FEED_KEEP as i64 + 5;
        log.take_in((16..=last).map(event).collect());
        assert_eq!(
            log.recent_after(15, &all).unwrap_err(),
            Some(20),
            "the oldest ten left memory"
        );
        let (found, scanned) = ids(log.recent_after(20, &all));
        assert_eq!(found.len(), READ_PAGE as usize, "a page at a time");
        assert_eq!((found[0], scanned), (21, 20 + READ_PAGE));
        let (found, scanned) = ids(log.recent_after(last - 3, &all));
        assert_eq!((found, scanned), (vec![last - 2, last - 1, last], last));
        log.stop_feed();
        assert_eq!(log.recent_after(last, &all).unwrap_err(), None);
    }
}
