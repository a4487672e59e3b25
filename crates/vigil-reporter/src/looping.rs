//! A fixed-interval loop: the seed's `FixedIntervalLoopingCall`.
//!
//! The loop runs an async task every `interval`, measured from the *start* of each run, so the
//! task's own duration does not stretch the period. A run that outlasts its interval is logged
//! and the next one starts at once, but the loop never tries to catch up the missed ticks with a
//! burst of back-to-back runs: a heartbeat that bursts after a stall proves nothing and only
//! loads the server.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

/// What the loop tells a task about the previous run when it starts the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tick {
    /// How long the previous run outlasted the interval; zero when it finished in time (and for
    /// the first run). The reporter sends it as `overrun_s` so the server can tell a slow
    /// reporter from a slow network.
    pub overrun: Duration,
}

impl Tick {
    /// [`Tick::overrun`] in seconds.
    pub fn overrun_s(&self) -> f64 {
        self.overrun.as_secs_f64()
    }
}

/// Runs an async task at a fixed interval on a tokio runtime.
///
/// This is a namespace for [`FixedIntervalLoop::start`] and [`FixedIntervalLoop::start_on`];
/// the running loop is controlled through the returned [`LoopHandle`].
#[derive(Debug)]
pub struct FixedIntervalLoop {
    _private: (),
}

impl FixedIntervalLoop {
    /// Starts the loop on the current tokio runtime.
    ///
    /// The first run happens after `initial_delay` plus a random extra delay of at most `fuzzy`
    /// (the seed's `periodic_fuzzy_delay`, which keeps many services restarted together from
    /// beating in lockstep); later runs start every `interval`. Each run receives a [`Tick`]
    /// describing the previous run's overrun.
    ///
    /// # Panics
    ///
    /// Like [`tokio::spawn`], panics when called outside a tokio runtime; use
    /// [`FixedIntervalLoop::start_on`] to pick the runtime explicitly.
    pub fn start<F, Fut>(
        interval: Duration,
        initial_delay: Duration,
        fuzzy: Option<Duration>,
        task: F,
    ) -> LoopHandle
    where
        F: FnMut(Tick) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::start_on(&Handle::current(), interval, initial_delay, fuzzy, task)
    }

    /// Starts the loop on the runtime behind `runtime`; otherwise as [`FixedIntervalLoop::start`].
    pub fn start_on<F, Fut>(
        runtime: &Handle,
        interval: Duration,
        initial_delay: Duration,
        fuzzy: Option<Duration>,
        task: F,
    ) -> LoopHandle
    where
        F: FnMut(Tick) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let delay = initial_delay + fuzzy.map_or(Duration::ZERO, random_up_to);
        // The loop logs in the caller's span and to the caller's subscriber, as if it were
        // still part of the code that started it.
        let run = run(interval, delay, stopped, task)
            .in_current_span()
            .with_current_subscriber();
        let join = runtime.spawn(run);
        LoopHandle { stop, join }
    }
}

/// Controls a loop started by [`FixedIntervalLoop::start`].
///
/// Dropping the handle stops the loop (without waiting for it), so a loop never outlives the
/// code that owns it by accident.
#[derive(Debug)]
pub struct LoopHandle {
    stop: watch::Sender<bool>,
    join: JoinHandle<()>,
}

impl LoopHandle {
    /// Asks the loop to stop. A run in progress is cancelled at its next `.await`, and no further
    /// run starts. Calling it again does nothing.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// Waits until the loop has ended. The loop only ends once stopped, so call
    /// [`LoopHandle::stop`] first.
    pub async fn wait(self) {
        let LoopHandle { stop, join } = self;
        // A task that panicked has already been reported by tokio's panic hook; the loop is over
        // either way, which is all the caller waits for.
        let _ = join.await;
        drop(stop);
    }
}

/// A uniformly random duration in `[0, bound]`.
fn random_up_to(bound: Duration) -> Duration {
    bound.mul_f64(rand::random_range(0.0..=1.0))
}

/// Resolves once a stop was asked for, or once every [`LoopHandle`] is gone.
pub(crate) async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped, which counts as a stop.
    let _ = stopped.wait_for(|&stop| stop).await;
}

async fn run<F, Fut>(
    interval: Duration,
    initial_delay: Duration,
    mut stopped: watch::Receiver<bool>,
    mut task: F,
) where
    F: FnMut(Tick) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::select! {
        biased;
        () = stop_requested(&mut stopped) => return,
        () = tokio::time::sleep(initial_delay) => {}
    }
    let mut tick = Tick::default();
    loop {
        let restart_at = Instant::now() + interval;
        tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => return,
            () = task(tick) => {}
        }
        let now = Instant::now();
        if now > restart_at {
            // Run again at once; the next deadline is measured from that new start, so the
            // missed ticks are dropped rather than replayed.
            tick.overrun = now - restart_at;
            tracing::warn!(
                overrun_s = tick.overrun_s(),
                "task run outlasted interval by {:.2} s",
                tick.overrun_s()
            );
            continue;
        }
        tick.overrun = Duration::ZERO;
        tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => return,
            () = tokio::time::sleep_until(restart_at) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything the tasks under test saw: when each run started and the tick it was given.
    type Runs = Arc<Mutex<Vec<(Duration, Tick)>>>;

    /// Starts a loop whose task records its runs and then sleeps for `work(run_index)`.
    fn recording_loop(
        interval: Duration,
        initial_delay: Duration,
        fuzzy: Option<Duration>,
        work: fn(usize) -> Duration,
    ) -> (LoopHandle, Runs) {
        let origin = Instant::now();
        let runs = Runs::default();
        let seen = runs.clone();
        let handle = FixedIntervalLoop::start(interval, initial_delay, fuzzy, move |tick| {
            let seen = seen.clone();
            async move {
                let index = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((origin.elapsed(), tick));
                    seen.len() - 1
                };
                tokio::time::sleep(work(index)).await;
            }
        });
        (handle, runs)
    }

    fn starts(runs: &Runs) -> Vec<u64> {
        runs.lock()
            .unwrap()
            .iter()
            .map(|(at, _)| at.as_secs())
            .collect()
    }

    /// A `tracing` writer into a shared buffer, to assert on log lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test(start_paused = true)]
    async fn runs_every_interval_after_the_initial_delay() {
        let (handle, runs) = recording_loop(
            Duration::from_secs(10),
            Duration::from_secs(5),
            None,
            |_| Duration::from_secs(3),
        );
        tokio::time::sleep(Duration::from_secs(36)).await;
        assert_eq!(starts(&runs), [5, 15, 25, 35]);
        assert!(runs
            .lock()
            .unwrap()
            .iter()
            .all(|(_, tick)| tick.overrun.is_zero()));
        handle.stop();
        handle.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn fuzzy_delay_stays_within_its_bound() {
        let (handle, runs) = recording_loop(
            Duration::from_secs(100),
            Duration::from_secs(10),
            Some(Duration::from_secs(5)),
            |_| Duration::ZERO,
        );
        tokio::time::sleep(Duration::from_secs(16)).await;
        let first = runs.lock().unwrap()[0].0;
        assert!(
            (Duration::from_secs(10)..=Duration::from_secs(15)).contains(&first),
            "{first:?}"
        );
        handle.stop();
        handle.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrun_is_logged_once_and_not_caught_up() {
        let (logs, _guard) = capture_logs();
        // The second run (at 10 s) takes 15.5 s: it ends at 25.5 s, 5.5 s past its interval.
        let (handle, runs) =
            recording_loop(Duration::from_secs(10), Duration::ZERO, None, |index| {
                if index == 1 {
                    Duration::from_millis(15_500)
                } else {
                    Duration::from_secs(1)
                }
            });
        tokio::time::sleep(Duration::from_secs(46)).await;
        handle.stop();
        handle.wait().await;

        let runs = runs.lock().unwrap().clone();
        let millis: Vec<u128> = runs.iter().map(|(at, _)| at.as_millis()).collect();
        // Run again at once after the overrun, then every 10 s from there: no burst.
        assert_eq!(millis, [0, 10_000, 25_500, 35_500, 45_500]);
        assert_eq!(runs[2].1.overrun, Duration::from_millis(5_500));
        assert!(runs[3].1.overrun.is_zero());

        let text = logs.text();
        assert_eq!(
            text.matches("task run outlasted interval by 5.50 s")
                .count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("outlasted").count(), 1, "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_loop_promptly() {
        let (handle, runs) =
            recording_loop(Duration::from_secs(3600), Duration::ZERO, None, |_| {
                Duration::ZERO
            });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = Instant::now();
        handle.stop();
        handle.stop();
        handle.wait().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
        assert_eq!(starts(&runs), [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_cancels_a_run_in_progress_and_the_initial_delay() {
        let (handle, runs) = recording_loop(Duration::from_secs(10), Duration::ZERO, None, |_| {
            Duration::from_secs(3600)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        handle.stop();
        tokio::time::timeout(Duration::from_millis(1), handle.wait())
            .await
            .expect("the loop did not stop during a run");
        assert_eq!(starts(&runs), [0]);

        let (handle, runs) = recording_loop(
            Duration::from_secs(10),
            Duration::from_secs(3600),
            None,
            |_| Duration::ZERO,
        );
        handle.stop();
        tokio::time::timeout(Duration::from_millis(1), handle.wait())
            .await
            .expect("the loop did not stop during its initial delay");
        assert!(starts(&runs).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_the_loop() {
        let (handle, runs) = recording_loop(Duration::from_secs(10), Duration::ZERO, None, |_| {
            Duration::ZERO
        });
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(handle);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(starts(&runs), [0, 10]);
    }
}
