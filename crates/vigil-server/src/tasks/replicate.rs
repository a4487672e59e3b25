//! Several servers on one database: each keeps its own in-memory table and learns what the
//! others wrote by reading the database from cursors (see [`crate::app::sync`]):
//! registrations, admin changes and deletions every `flush_interval` and before every read;
//! flushed heartbeats and tokens every `flush_interval`.
//!
//! A heartbeat received by one replica is seen by the others after at most one flush and one
//! poll, that is `2 x flush_interval`. Admin changes are read through: a list or a detail
//! read by any replica after the change was acknowledged shows it.
//!
//! Every replica also corrects its clock towards the database's, so a replica whose clock is
//! wrong stamps heartbeats with the same time as the others (**one clock**).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Stop, Trouble};
use crate::app::App;

/// How often the clock is corrected towards the database's.
const CALIBRATE_EVERY: Duration = Duration::from_secs(10);

/// Reads other replicas' changes every `interval`, and corrects the clock now and then, until
/// `shutdown`. Does nothing on an unshared database.
pub async fn run(app: Arc<App>, interval: Duration, mut stop: Stop) {
    if !app.store.shared() {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calibrated = Instant::now();
    let mut trouble = Trouble::new(
        "cannot read other replicas' changes",
        "reading other replicas' changes again",
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.stopped() => return,
        }
        // The heartbeats' log is read even when the read of admin changes failed: the log is
        // pruned after 30 s, and a replica that falls behind it reads every service's
        // heartbeats again. Tokens and maintenance windows (one made or revoked, started or
        // ended, through another replica counts here within an interval) only after both
        // succeeded: a database that hangs costs one wait per read, and a pass ends with the
        // server rather than being waited out.
        let pass = async {
            let changes = app.sync_from_database().await;
            let beats = app.sync_beats().await;
            changes.and(beats)?;
            app.refresh_tokens().await?;
            app.refresh_maintenance().await
        };
        let synced = tokio::select! {
            synced = pass => synced,
            _ = stop.stopped() => return,
        };
        trouble.report(synced);
        if calibrated.elapsed() >= CALIBRATE_EVERY {
            app.calibrate(false).await;
            calibrated = Instant::now();
        }
    }
}
