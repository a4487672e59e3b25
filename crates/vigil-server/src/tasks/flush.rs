//! Writes heartbeats from memory to the database in batches: at most one transaction per
//! `flush_interval`, and a last one on shutdown. A failed flush keeps the batch in memory and
//! tries again, so a database outage loses no acknowledged heartbeat that the process outlives.

use std::sync::Arc;
use std::time::Duration;

use super::Stop;
use crate::app::App;
use crate::store::LAST_ALIVE;

/// One flush: every dirty service in one transaction, then the liveness stamp.
pub async fn flush_once(app: &App) -> Result<usize, crate::store::StoreError> {
    let batch = app.registry.take_dirty();
    let count = batch.len();
    if !batch.is_empty() {
        if let Err(err) = app.store.flush_beats(&batch).await {
            app.registry.restore_dirty(batch);
            return Err(err);
        }
    }
    let now = vigil_proto::ts::format(&app.clock.now());
    app.store.set_meta(LAST_ALIVE, &now).await?;
    Ok(count)
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
        match flushed {
            Ok(_) => {}
            Err(crate::store::StoreError::Other(err)) => {
                tracing::error!(error = %err, "cannot write heartbeats; holding them in memory");
            }
            Err(_) => {}
        }
        if let (true, Err(err)) = (stopping, app.database.refuse_if_down()) {
            tracing::error!(error = %err, "final flush failed; recent heartbeats were not written");
        }
        if stopping || stop.is_stopped() {
            return;
        }
    }
}
