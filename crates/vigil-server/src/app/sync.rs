//! Reading what other replicas wrote: registrations, admin changes and deletions from the
//! `services` change feed (before every read and every `flush_interval`), flushed heartbeats
//! from `beat_log` (every `flush_interval`, apart, so reads never wait for it); and the clock's
//! correction towards the database's. The loop that calls these is
//! [`crate::tasks::replicate`].

use std::time::{Duration, Instant};

use super::App;
use crate::clock::Calibration;
use crate::store::{EventFilter, EventKind, StoreResult};

/// Rows read per query.
const PAGE: i64 = 10_000;

/// Longest wait for other replicas' changes before a read answers from memory.
const SYNC_LIMIT: Duration = Duration::from_secs(2);

/// Longest read of other replicas' heartbeats. Only the poll waits for it, and a replica that
/// fell behind the log reads every service's heartbeats at once (a million rows), which must
/// not be cut short and tried again forever.
const BEAT_SYNC_LIMIT: Duration = Duration::from_secs(60);

/// Heartbeats absorbed between two yields to the runtime (a few milliseconds of work).
const ABSORB_SLICE: usize = 10_000;

/// Where this server is in the other replicas' changes.
#[derive(Debug)]
pub struct SyncState {
    /// `row_version` of the newest service row read.
    pub row_cursor: i64,
    /// Id of the newest `deleted` event applied.
    pub event_cursor: i64,
    /// When the last successful read started: it saw everything committed before then.
    pub started: Instant,
    /// When the last failed read started: callers that waited for it share its failure
    /// instead of each trying again in turn.
    pub failed: Option<Instant>,
}

impl SyncState {
    pub fn new(row_cursor: i64, event_cursor: i64) -> SyncState {
        SyncState {
            row_cursor,
            event_cursor,
            started: Instant::now(),
            failed: None,
        }
    }
}

impl App {
    /// Reads the registrations, admin changes and deletions other replicas wrote since the last
    /// read. Concurrent callers share one read: a caller that waited while another read
    /// finished uses that read.
    pub async fn sync_from_database(&self) -> StoreResult<()> {
        if !self.store.shared() {
            return Ok(());
        }
        let asked = Instant::now();
        let mut state = self.sync.lock().await;
        if state.started > asked {
            return Ok(());
        }
        if state.failed.is_some_and(|failed| failed > asked) {
            return Err(crate::store::StoreError::Unavailable(
                "the database did not answer a moment ago".into(),
            ));
        }
        let started = Instant::now();
        // A database that stopped answering must not hold every reader: after SYNC_LIMIT the
        // read gives up and the caller answers from memory.
        let result = match tokio::time::timeout(SYNC_LIMIT, self.read_changes(&mut state)).await {
            Ok(result) => result,
            Err(_) => Err(crate::store::StoreError::Unavailable(format!(
                "no answer within {SYNC_LIMIT:?}"
            ))),
        };
        match result {
            Ok(()) => state.started = started,
            Err(_) => state.failed = Some(started),
        }
        result
    }

    async fn read_changes(&self, state: &mut SyncState) -> StoreResult<()> {
        loop {
            let (records, next) = self.store.changes_since(state.row_cursor, PAGE).await?;
            let full = records.len() as i64 == PAGE;
            for record in records {
                self.absorb(record);
            }
            state.row_cursor = next;
            if !full {
                break;
            }
        }
        loop {
            let filter = EventFilter {
                kind: Some(EventKind::Deleted),
                after: Some(state.event_cursor),
                limit: PAGE,
                ..EventFilter::default()
            };
            let deleted = self.store.list_events(&filter).await?;
            let full = deleted.len() as i64 == PAGE;
            for event in &deleted {
                self.registry.remove(event.service_id);
                state.event_cursor = event.id;
            }
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// Reads the heartbeats other replicas flushed since the last read. Apart from
    /// [`App::sync_from_database`], so that reads never wait for it: a service unknown here is
    /// skipped, and its row, read by the other sync, carries its heartbeat fields.
    pub async fn sync_beats(&self) -> StoreResult<()> {
        let mut cursor = self.beat_cursor.lock().await;
        let read = async {
            loop {
                let (beats, next, more) = self.store.beats_since(*cursor).await?;
                // A replica that fell behind the log reads every service's heartbeats (ten
                // million at the top of the range): absorbed a slice at a time, letting the
                // runtime's other tasks (timers, the stall watch, heartbeats) run between.
                for slice in beats.chunks(ABSORB_SLICE) {
                    for beat in slice {
                        self.absorb_beat(beat);
                    }
                    tokio::task::yield_now().await;
                }
                *cursor = next;
                if !more {
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(BEAT_SYNC_LIMIT, read).await {
            Ok(result) => result,
            Err(_) => Err(crate::store::StoreError::Unavailable(format!(
                "no answer within {BEAT_SYNC_LIMIT:?}"
            ))),
        }
    }

    /// [`App::sync_from_database`] before a read; on failure the read is served from memory.
    pub async fn sync_for_read(&self) {
        // Known down: answer from memory at once; the poll finds out when it is back.
        if self.database.is_down() {
            return;
        }
        if let Err(err) = self.sync_from_database().await {
            tracing::warn!(error = %err, "cannot read other replicas' changes; answering from memory");
        }
    }

    /// Corrects the clock towards the database's, when the database has a shared clock (see
    /// [`crate::clock::Clock::calibrate`]); at start-up (`initial`) at once. A clock that
    /// jumped forward later is a gap in watching, as a stall is: it opens a grace period.
    pub async fn calibrate(&self, initial: bool) -> Option<Calibration> {
        let before = self.clock.now();
        let outcome = calibrate(&self.clock, self.store.as_ref(), initial).await;
        if let (false, Some(Calibration::Stepped { .. })) = (initial, &outcome) {
            let after = self.clock.now();
            if after > before {
                self.registry.liveness.set_gap(before, after);
            }
        }
        outcome
    }
}

/// One correction of `clock` towards `store`'s clock (before an `App` exists, at start-up).
pub(crate) async fn calibrate(
    clock: &crate::clock::Clock,
    store: &dyn crate::store::Store,
    initial: bool,
) -> Option<Calibration> {
    let local = || clock.local_now();
    match store.clock_sample(&local).await {
        Ok(Some(sample)) => {
            let outcome = clock.calibrate(sample, initial);
            match outcome {
                Calibration::Ignored { round_trip } => {
                    tracing::debug!(
                        round_trip_ms = round_trip.num_milliseconds(),
                        "clock reading ignored: slow round trip"
                    );
                }
                Calibration::Stepped { by } => {
                    tracing::warn!(
                        by_s = crate::model::seconds(by),
                        "this server's clock jumped against the database's; corrected at once"
                    );
                }
                Calibration::Moved { .. } => {}
            }
            Some(outcome)
        }
        _ => None,
    }
}
