//! The history: every transition and admin change is an event in the database.
//!
//! Admin changes write their events in the same transaction as the change. Transitions found
//! on the hot path or by the detector are queued here and written in batches by the detector
//! under its lease (see [`crate::detector`]), so a heartbeat never waits for the database.
//! Watchers (SSE streams) are woken through a generation counter and read the database from
//! their cursor, which makes every stream resumable by event id.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::store::NewEvent;

/// Queue and notifier of the history.
pub struct EventLog {
    queue: mpsc::UnboundedSender<NewEvent>,
    changed: watch::Sender<u64>,
    /// Set when the server shuts down, so that live streams end and the drain can finish.
    closed: watch::Sender<bool>,
}

impl EventLog {
    pub fn new() -> (EventLog, mpsc::UnboundedReceiver<NewEvent>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let (changed, _) = watch::channel(0);
        let (closed, _) = watch::channel(false);
        (
            EventLog {
                queue,
                changed,
                closed,
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

    /// A receiver that changes whenever events may have been written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
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

/// Deletes events older than the retention, at start and then every `every`, until
/// `shutdown`.
pub async fn run_pruner(
    app: Arc<crate::app::App>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let retention =
        chrono::TimeDelta::microseconds((app.config.event_retention_days * 86_400e6) as i64);
    loop {
        match app.store.prune_events(app.clock.now() - retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned events older than the retention"),
            Err(err) => tracing::warn!(error = %err, "cannot prune old events; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
