//! The server's background loops, above [`App`]: each holds the shared state and drives one
//! part of it (the state types themselves never know `App`).
//!
//! One convention for all of them: a loop is started with [`Workers::spawn`], gets a [`Stop`]
//! to wait on, says once that it fails and once that it works again ([`Trouble`]), and is
//! awaited by [`Workers::stop`] after the stop signal, in the reverse order of starting, so
//! the flusher (started first) writes the last heartbeats after everything else ended.
//!
//! # Layout
//! - [`flush`]: heartbeats from memory to the database, one transaction per `flush_interval`.
//! - [`detect`]: leadership of detection, the detector's ticks, writing the transitions; the
//!   stall watch's timer.
//! - [`replicate`]: other replicas' changes and heartbeats, and the clock's correction.
//! - [`feed`]: one reader of the history for every event stream; retention pruning.
//! - [`watch`]: one loop per watched OpenStack database, polling its `services` table.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::app::App;

pub(crate) mod detect;
pub(crate) mod feed;
pub(crate) mod flush;
pub(crate) mod replicate;
pub(crate) mod watch;

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::app::{App, Registration};
    use crate::auth::Caller;
    use crate::config::Config;

    /// A server's state on a fresh SQLite database, none of its loops running, with `count`
    /// services registered (`host-0`..: `cinder-volume`) by its admin, `caller`.
    pub(crate) struct Fixture {
        pub(crate) _dir: tempfile::TempDir,
        pub(crate) url: String,
        pub(crate) app: Arc<App>,
        pub(crate) caller: Caller,
        pub(crate) services: Vec<vigil_proto::Service>,
    }

    pub(crate) async fn fixture(count: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("vigil.db").display());
        let config = Config {
            database: Some(url.clone()),
            data_dir: dir.path().into(),
            admin_token: Some("tasks-test-admin-token".into()),
            ..Config::default()
        };
        let (app, _events) = crate::app::build(config).await.unwrap();
        let caller = Caller {
            grant: app
                .tokens
                .identify(Some("tasks-test-admin-token"), chrono::Utc::now())
                .unwrap(),
            address: None,
        };
        let mut services = Vec::new();
        for i in 0..count {
            let registration = Registration {
                host: Some(format!("host-{i}")),
                binary: Some("cinder-volume".into()),
                ..Registration::default()
            };
            services.push(app.register(registration, &caller).await.unwrap().0);
        }
        Fixture {
            _dir: dir,
            url,
            app,
            caller,
            services,
        }
    }
}

pub(crate) use crate::trouble::Trouble;

/// Runs `work`, which walks the fleet (millions of services at the top of the range), on a
/// thread for blocking work rather than a runtime thread: for the seconds it takes, the
/// runtime's timers, the stall watch and heartbeats keep their turn.
pub(crate) async fn off_runtime<T: Send + 'static>(
    app: &Arc<App>,
    work: impl FnOnce(&App) -> T + Send + 'static,
) -> T {
    let app = app.clone();
    match tokio::task::spawn_blocking(move || work(&app)).await {
        Ok(value) => value,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down, which drops the caller as well.
            Err(err) => panic!("work for a blocking thread was cancelled: {err}"),
        },
    }
}

/// How often old events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// A loop's stop signal.
#[derive(Clone)]
pub(crate) struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Completes once the server stops (at once when it already has).
    pub async fn stopped(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// The running loops.
pub(crate) struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    pub fn new() -> Workers {
        Workers {
            stop: tokio::sync::watch::channel(false).0,
            running: Vec::new(),
        }
    }

    /// Starts the loop `work(stop)` as a task called `name`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, work: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = Stop(self.stop.subscribe());
        self.running.push((name, tokio::spawn(work(stop))));
    }

    /// Signals every loop to stop and waits for each, the last started first.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while let Some((name, handle)) = self.running.pop() {
            if let Err(err) = handle.await {
                if err.is_panic() {
                    tracing::error!(task = name, "background task panicked");
                }
            }
        }
    }
}

/// Starts every loop of a server over `app`; `queue` is what the detector writes.
pub(crate) fn start(
    app: &Arc<App>,
    queue: tokio::sync::mpsc::UnboundedReceiver<crate::model::NewEvent>,
) -> Workers {
    let flush_interval = Duration::from_secs_f64(app.config.flush_interval);
    let mut workers = Workers::new();
    let a = app.clone();
    workers.spawn("flush", move |stop| flush::run(a, flush_interval, stop));
    let a = app.clone();
    workers.spawn("pauses", move |stop| detect::watch_pauses(a, stop));
    let a = app.clone();
    workers.spawn("replicate", move |stop| {
        replicate::run(a, flush_interval, stop)
    });
    let a = app.clone();
    workers.spawn("feed", move |stop| feed::run_feed(a, stop));
    let a = app.clone();
    workers.spawn("prune", move |stop| feed::run_pruner(a, PRUNE_EVERY, stop));
    for watch in &app.watches {
        let (a, watch) = (app.clone(), watch.clone());
        workers.spawn("watch", move |stop| watch::run(a, watch, stop));
    }
    let a = app.clone();
    workers.spawn("detect", move |stop| {
        detect::run(a, queue, flush_interval, stop)
    });
    workers
}
