//! One loop per watched OpenStack database: polls its `services` table every
//! `poll_interval` ([`crate::watch::Watcher`]) and hands each poll to
//! [`App::apply_watch`]. A database that cannot be read is said once in the log (and again
//! when it can be), shown in `/readyz`, and makes its services `unknown`; the loop never
//! stops the server and keeps trying.

use std::sync::Arc;

use super::{Stop, Trouble};
use crate::app::watch::WatchState;
use crate::app::App;
use crate::watch::{WatchReader, Watcher};

pub async fn run(app: Arc<App>, watch: Arc<WatchState>, mut stop: Stop) {
    let reader = match WatchReader::new(watch.config.clone()) {
        Ok(reader) => reader,
        Err(err) => {
            tracing::error!(watch = %watch.name, error = %err, "cannot watch this database");
            app.watch_failed(&watch, err.to_string());
            return;
        }
    };
    tracing::info!(watch = %watch.name, url = %watch.config.redacted_url(), kind = %watch.config.kind, "watching an OpenStack services table, read-only");
    let mut watcher = Watcher::new(reader);
    let mut ticker = tokio::time::interval(watch.config.poll_every());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trouble = Trouble::new(
        "cannot read a watched OpenStack database; its services are unknown until it can",
        "reading a watched OpenStack database again",
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.stopped() => break,
        }
        match watcher.step().await {
            Ok(step) => {
                app.apply_watch(&watch, &step);
                trouble.report::<String>(Ok(()));
            }
            Err(err) => {
                app.watch_failed(&watch, err.to_string());
                trouble.report(Err(err));
            }
        }
    }
    watcher.reader().close().await;
}
