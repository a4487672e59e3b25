//! Drives the detector ([`crate::detector`]): takes the detection lease whenever it can,
//! starts from the history, ticks every [`TICK`] while the lease holds, and writes the queued
//! transitions through the lease; a timer-only task watches for stalls of the process.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Stop;
use crate::app::App;
use crate::detector::TICK;
use crate::model::{EventKind, NewEvent};

/// Starts detection where the history left each service (see
/// [`crate::detector::Detector::start_from`]).
async fn prime(app: &Arc<App>) -> crate::store::StoreResult<()> {
    let down: std::collections::HashSet<i64> = app
        .store
        .last_transitions()
        .await?
        .into_iter()
        .filter(|(_, kind)| *kind == EventKind::Down)
        .map(|(id, _)| id)
        .collect();
    // Every service is looked at: off the runtime's threads (seconds at ten million).
    super::off_runtime(app, move |app| {
        app.detector
            .start_from(&app.registry, &down, app.clock.now())
    })
    .await;
    Ok(())
}

/// Notices this process's stalls (a stopped VM, SIGSTOP, a starved runtime) and the local
/// clock jumping forward, and opens a grace period for each (see [`crate::liveness`]).
///
/// A task of its own that waits on nothing but a timer: the detector's loop also waits for the
/// database, and a slow database is not a stalled process (that mistake opened a grace period
/// after every outage and delayed real downs). Both the monotonic clock (which runs through a
/// SIGSTOP) and the local wall clock (which also runs through a suspended machine) are watched.
pub async fn watch_pauses(app: Arc<App>, mut stop: Stop) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.stopped() => return,
        }
        app.detector
            .stalls
            .check(&app.clock, &app.registry.liveness);
    }
}

/// How often a follower tries to take over detection, and a leader checks its lease.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// Leads detection whenever this server can: takes the lease (at once, alone on a database;
/// among replicas, when no other holds it), starts from the history, and runs [`tick`] every
/// [`TICK`] while the lease holds, until stopped.
pub async fn run(
    app: Arc<App>,
    mut queue: mpsc::UnboundedReceiver<NewEvent>,
    retry: Duration,
    mut stop: Stop,
) {
    let mut warned = false;
    loop {
        // Nothing queued while not leading is ours to write.
        while queue.try_recv().is_ok() {}
        let lease = match app.store.try_lead().await {
            Ok(Some(lease)) => Some(lease),
            Ok(None) => None,
            Err(err) => {
                if !warned {
                    tracing::warn!(error = %err, "cannot reach the database to lead detection");
                    warned = true;
                }
                None
            }
        };
        let Some(mut lease) = lease else {
            tokio::select! {
                _ = tokio::time::sleep(retry.min(LEASE_CHECK)) => continue,
                _ = stop.stopped() => return,
            }
        };
        warned = false;
        app.detector.set_leader(true);
        if let Err(err) = prime(&app).await {
            app.detector.set_leader(false);
            tracing::warn!(error = %err, "cannot read the history to start detection");
            tokio::select! {
                _ = tokio::time::sleep(retry) => continue,
                _ = stop.stopped() => return,
            }
        }
        if app.store.shared() {
            tracing::info!("this replica leads detection");
        }
        let stopped = lead(&app, lease.as_mut(), &mut queue, &mut stop).await;
        app.detector.set_leader(false);
        super::off_runtime(&app, |app| app.detector.clear(&app.registry)).await;
        if stopped {
            return;
        }
        tracing::warn!("lost the lead of detection; another replica takes over");
    }
}

/// Ticks while the lease holds, writing the transitions found; `true` when stopped by
/// the stop signal (after writing what is queued).
async fn lead(
    app: &Arc<App>,
    lease: &mut dyn crate::store::Lease,
    queue: &mut mpsc::UnboundedReceiver<NewEvent>,
    stop: &mut Stop,
) -> bool {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checked = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.stopped() => {
                // As long as one transaction was given before slices: the stop waits no longer.
                let deadline = tokio::time::Instant::now() + WRITE_LIMIT;
                write_queued(app, lease, queue, Some(deadline)).await;
                return true;
            }
        }
        app.detector
            .stalls
            .check(&app.clock, &app.registry.liveness);
        // Off the runtime's threads: a tick is short, but one that finds millions of services
        // due at once (a grace period ending at ten million) takes seconds, and a runtime
        // thread held that long starves the stall watch, which would take it for a pause of
        // the process and open a grace period of its own.
        let lags = super::off_runtime(app, |app| {
            app.detector
                .tick(&app.registry, &app.events, app.clock.now())
        })
        .await;
        for lag in lags {
            app.metrics.detected(lag);
        }
        if !write_queued(app, lease, queue, None).await {
            return false;
        }
        if checked.elapsed() >= LEASE_CHECK {
            if !lease.holds().await {
                return false;
            }
            checked = std::time::Instant::now();
        }
    }
}

/// Longest wait for one transaction of transitions to be written.
const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Transitions per transaction. A mass silence queues hundreds of thousands at once (every
/// service of a fleet that stops beating turns `suspect` in the same tick); written in one
/// transaction they outran [`WRITE_LIMIT`] and the lead was given up for a database that was
/// merely busy. In slices, each has its own limit, and readers see the first ones sooner.
const WRITE_SLICE: usize = if cfg!(test) { 2 } else { 10_000 };

/// Writes the queued transitions through the lease, about [`WRITE_SLICE`] to a transaction
/// (a slice never splits the events one service queued one after the other, such as a `down`
/// and its `flapping`), until `deadline` if there is one. `false` when a write failed or the
/// deadline passed: the lease can no longer be trusted (or the server is stopping), so what is
/// left is dropped and the lead given up. The slices before stay written; whoever leads next
/// starts from them as from any history and derives the rest from the history and the table:
/// a service past its deadline whose latest event is not `down` gets its `down`, and one whose
/// latest is `down` gets its `up` at its next beat. (`suspect`s are not in that history: one
/// written before a change of lead can be written again after it.)
async fn write_queued(
    app: &App,
    lease: &mut dyn crate::store::Lease,
    queue: &mut mpsc::UnboundedReceiver<NewEvent>,
    deadline: Option<tokio::time::Instant>,
) -> bool {
    let mut batch = Vec::new();
    while let Ok(event) = queue.try_recv() {
        batch.push(event);
    }
    let mut written = 0;
    while written < batch.len() {
        let mut end = (written + WRITE_SLICE).min(batch.len());
        while end < batch.len() && batch[end].service_id == batch[end - 1].service_id {
            end += 1;
        }
        let slice = &batch[written..end];
        let limit = match deadline {
            Some(at) => WRITE_LIMIT.min(at.saturating_duration_since(tokio::time::Instant::now())),
            None => WRITE_LIMIT,
        };
        let failure = match tokio::time::timeout(limit, lease.append_events(slice)).await {
            Ok(Ok(())) => {
                written = end;
                app.metrics.written(slice.iter().map(|e| e.kind));
                app.events.notify();
                continue;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {limit:?}"),
        };
        tracing::warn!(
            error = %failure,
            written,
            dropped = batch.len() - written,
            "cannot write transitions under the detection lease; giving up the lead to start again from the history"
        );
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::write_queued;
    use crate::model::{EventKind, NewEvent};
    use crate::store::sqlite_testing as db;
    use crate::store::EventFilter;

    /// Transitions are written a slice at a time (two under `cfg(test)`, longer rather than
    /// split between one service's events): when one slice
    /// fails, the slices before it stay written and only the rest is dropped, and the lead is
    /// given up; a write that succeeds writes every slice.
    #[tokio::test]
    async fn transitions_are_written_a_slice_at_a_time() {
        let super::super::testing::Fixture {
            _dir,
            url,
            app,
            services,
            ..
        } = super::super::testing::fixture(5).await;
        let now = chrono::Utc::now();
        let event = |i: usize, kind| NewEvent {
            service_id: services[i].id,
            host: services[i].host.clone(),
            binary: services[i].binary.clone(),
            kind,
            at: now,
            reason: None,
            last_seen: None,
            threshold_s: None,
            actor: None,
            address: None,
        };
        let queue_all = |tx: &tokio::sync::mpsc::UnboundedSender<NewEvent>| {
            for i in 0..services.len() {
                tx.send(event(i, EventKind::Suspect)).unwrap();
            }
        };
        let suspects = |app: std::sync::Arc<crate::app::App>| async move {
            let filter = EventFilter {
                kind: Some(EventKind::Suspect),
                limit: 100,
                ..EventFilter::default()
            };
            let mut ids: Vec<i64> = app
                .store
                .list_events(&filter)
                .await
                .unwrap()
                .iter()
                .map(|e| e.service_id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let ids: Vec<i64> = services.iter().map(|s| s.id).collect();
        let mut lease = app.store.try_lead().await.unwrap().unwrap();
        let (tx, mut queue) = tokio::sync::mpsc::unbounded_channel();

        // A fault from the database itself on the third service's transition: the second
        // slice fails.
        let mut conn = db::connect(&url).await;
        db::break_event_inserts(&mut conn, ids[2], "suspect").await;
        queue_all(&tx);
        assert!(!write_queued(&app, lease.as_mut(), &mut queue, None).await);
        assert_eq!(suspects(app.clone()).await, ids[..2]);

        db::mend_event_inserts(&mut conn).await;
        queue_all(&tx);
        assert!(write_queued(&app, lease.as_mut(), &mut queue, None).await);
        let mut expected = ids[..2].to_vec();
        expected.extend(&ids);
        expected.sort_unstable();
        assert_eq!(suspects(app.clone()).await, expected);

        // One service's events queued together stay in one slice: the second service's
        // `down` follows its `suspect` into the first slice, written before the fault.
        db::break_event_inserts(&mut conn, ids[2], "suspect").await;
        for e in [
            event(0, EventKind::Suspect),
            event(1, EventKind::Suspect),
            event(1, EventKind::Down),
            event(2, EventKind::Suspect),
        ] {
            tx.send(e).unwrap();
        }
        assert!(!write_queued(&app, lease.as_mut(), &mut queue, None).await);
        let downs = app
            .store
            .list_events(&EventFilter {
                kind: Some(EventKind::Down),
                limit: 10,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(downs.len(), 1);
        assert_eq!(downs[0].service_id, ids[1]);
    }
}
