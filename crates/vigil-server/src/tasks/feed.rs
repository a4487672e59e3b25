//! The event feed (one reader of the history for every event stream; see [`crate::events`])
//! and the pruning of events older than the retention.

use std::sync::Arc;
use std::time::Duration;

use super::{Stop, Trouble};
use crate::app::App;
use crate::events::READ_PAGE;
use crate::store::EventFilter;

/// The feed: reads new events from the database when woken and once a second, into the
/// event log's memory, until stopped.
pub async fn run_feed(app: Arc<App>, mut stop: Stop) {
    /// However the feed ends (even by a panic), streams must not wait on its memory.
    struct Stopped(Arc<App>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.events.stop_feed();
        }
    }
    let _stopped = Stopped(app.clone());
    let mut changed = app.events.written();
    let mut trouble = Trouble::new(
        "event feed cannot read the history; retrying",
        "event feed reads the history again",
    );
    loop {
        changed.mark_unchanged();
        trouble.report(read_feed(&app).await);
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.stopped() => return,
        }
    }
}

async fn read_feed(app: &App) -> crate::store::StoreResult<()> {
    let log = &app.events;
    let Some(mut cursor) = log.feed_cursor() else {
        let newest = EventFilter {
            limit: 1,
            ..EventFilter::default()
        };
        let events = app.store.list_events(&newest).await?;
        log.start_feed(events.first().map_or(0, |e| e.id));
        return Ok(());
    };
    loop {
        let filter = EventFilter {
            after: Some(cursor),
            limit: READ_PAGE,
            ..EventFilter::default()
        };
        let events = app.store.list_events(&filter).await?;
        let full = events.len() as i64 == READ_PAGE;
        let Some(last) = events.last() else {
            return Ok(());
        };
        cursor = last.id;
        log.take_in(events);
        if !full {
            return Ok(());
        }
    }
}

/// Deletes events older than the retention, at start and then every `every`, until
/// stopped.
pub async fn run_pruner(app: Arc<App>, every: Duration, mut stop: Stop) {
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
            _ = stop.stopped() => return,
        }
    }
}
