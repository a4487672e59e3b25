//! Writes heartbeats from memory to the database in batches: at most one flush per
//! `flush_interval` (in transactions of a bounded size), and a last one on shutdown. A failed
//! flush keeps the batch in memory and tries again, so a database outage loses no acknowledged
//! heartbeat that the process outlives.

use std::sync::Arc;
use std::time::Duration;

use super::Stop;
use crate::app::App;
use crate::store::LAST_ALIVE;

/// One flush: every dirty service, in transactions of the store's
/// [`crate::store::Store::flush_transaction_rows`], then the liveness stamp. A failed
/// transaction puts its services and every later one back.
pub async fn flush_once(app: &Arc<App>) -> Result<usize, crate::store::StoreError> {
    let mut batch = super::off_runtime(app, |app| app.registry.take_dirty()).await;
    let count = batch.len();
    let mut written = 0;
    while written < count {
        let end = count.min(written.saturating_add(app.store.flush_transaction_rows()));
        if let Err(err) = app.store.flush_beats(&batch[written..end]).await {
            batch.drain(..written);
            super::off_runtime(app, move |app| app.registry.restore_dirty(batch)).await;
            return Err(err);
        }
        app.metrics.rows_flushed(end - written);
        written = end;
    }
    let now = vigil_proto::ts::format(&app.clock.now());
    app.store.set_meta(LAST_ALIVE, &now).await?;
    Ok(count)
}

/// Attempts of the last flush at shutdown, with a doubling pause from [`FINAL_RETRY`] between
/// them: a database that just came back often fails the first statement on a connection it
/// closed, and a stopping server gets no later tick to try again.
const FINAL_ATTEMPTS: u32 = 5;
const FINAL_RETRY: Duration = Duration::from_millis(100);

/// The last flush, given the first attempt's result: tried again while it fails (about 1.5 s
/// in all), then said if it never succeeded.
async fn final_flush(app: &Arc<App>, mut result: Result<usize, crate::store::StoreError>) {
    let mut pause = FINAL_RETRY;
    for _ in 1..FINAL_ATTEMPTS {
        if result.is_ok() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        result = flush_once(app).await;
        app.database.record(&result);
    }
    if let Err(err) = result {
        tracing::error!(error = %err, "final flush failed; recent heartbeats were not written");
    }
}

/// Flushes every `interval` until `shutdown`, then once more.
pub async fn run(app: Arc<App>, interval: Duration, mut stop: Stop) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.stopped() => true,
        };
        let started = std::time::Instant::now();
        let flushed = flush_once(&app).await;
        app.metrics.flushed(&flushed, started.elapsed());
        app.database.record(&flushed);
        if let Err(crate::store::StoreError::Other(err)) = &flushed {
            tracing::error!(error = %err, "cannot write heartbeats; holding them in memory");
        }
        if stopping {
            final_flush(&app, flushed).await;
            return;
        }
        if stop.is_stopped() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::flush_once;
    use crate::model::Beat;
    use crate::store::sqlite_testing as db;

    /// A transaction that fails part-way through a flush puts back its services and every
    /// later one, and only those: once the fault clears, the next flush writes each beat once.
    /// (Under `cfg(test)` SQLite's transactions hold two services, so five make three.)
    #[tokio::test]
    async fn a_failed_transaction_puts_back_only_what_was_not_written() {
        let super::super::testing::Fixture {
            _dir,
            url,
            app,
            caller,
            services,
        } = super::super::testing::fixture(5).await;
        assert_eq!(app.store.flush_transaction_rows(), 2);
        let ids: Vec<i64> = services.iter().map(|s| s.id).collect();
        for id in &ids {
            app.heartbeat(*id, Beat::default(), &caller).await.unwrap();
        }
        // A fault in the third service's row, from the database itself: every transaction
        // that writes it fails.
        let mut conn = db::connect(&url).await;
        db::break_heartbeat_row(&mut conn, ids[2]).await;
        assert!(flush_once(&app).await.is_err());
        assert_eq!(db::stored_counts(&mut conn, &ids).await, [1, 1, 0, 0, 0]);
        assert_eq!(app.metrics.flushed_rows(), 2, "the rows written count");
        db::mend_heartbeat_row(&mut conn).await;
        assert_eq!(flush_once(&app).await.unwrap(), 3, "only what was put back");
        assert_eq!(db::stored_counts(&mut conn, &ids).await, [1, 1, 1, 1, 1]);
        assert_eq!(app.metrics.flushed_rows(), 5, "each row once");
        assert_eq!(flush_once(&app).await.unwrap(), 0);
    }
}
