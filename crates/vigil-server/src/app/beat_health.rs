//! Health beside liveness: a heartbeat may say `ok`, `warning` or `failing` with a message
//! (Consul's pass, warn, fail). A service that beats on time is `up` whatever it says; its
//! health is shown beside, and each change is a `health` event.
//!
//! The health lives in memory like the heartbeat's other fields and is written by the flush
//! when it changes (like the zone), so other replicas read it through the change feed; the
//! leader of detection writes the event, whichever replica took the beat.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{App, AppError};
use crate::model::{Beat, Health, ServiceRecord};
use crate::registry::Entry;
use crate::store::{EventKind, NewEvent};

/// Refuses a `message` longer than [`vigil_proto::MAX_HEALTH_MESSAGE`] characters.
pub(super) fn validate(beat: &Beat) -> Result<(), AppError> {
    if let Some(message) = &beat.message {
        if message.chars().count() > vigil_proto::MAX_HEALTH_MESSAGE {
            return Err(AppError::Invalid {
                code: "invalid_message".into(),
                message: format!(
                    "message is longer than {} characters",
                    vigil_proto::MAX_HEALTH_MESSAGE
                ),
            });
        }
    }
    Ok(())
}

/// The `health` event of `record` whose health went from `before` to its own; none for a
/// first report of `ok` (nothing happened).
pub(super) fn event(
    record: &ServiceRecord,
    before: Option<Health>,
    at: DateTime<Utc>,
) -> Option<NewEvent> {
    let after = record.health?;
    if before.is_none() && after == Health::Ok {
        return None;
    }
    let mut event = NewEvent::about(record, EventKind::Health, at);
    let mut reason = after.as_str().to_owned();
    if let Some(message) = record.health_message() {
        reason.push_str(": ");
        reason.push_str(message);
    }
    reason.push_str(match before {
        None => " (first reported)",
        Some(Health::Ok) => " (was ok)",
        Some(Health::Warning) => " (was warning)",
        Some(Health::Failing) => " (was failing)",
    });
    event.reason = Some(reason);
    Some(event)
}

impl App {
    /// Queues the event of a health change a heartbeat made here.
    pub(super) fn health_changed(&self, entry: &Entry, before: Option<Health>) {
        let now = self.clock.now();
        if let Some(event) = event(&entry.lock().record, before, now) {
            self.events.emit(event);
        }
    }

    /// After a row read from the database: when this server leads detection, the event of a
    /// health change another replica took (`before`: the health here before the row, `None`
    /// when the service was not known here).
    pub(super) fn health_absorbed(&self, entry: &Arc<Entry>, before: Option<Option<Health>>) {
        let Some(before) = before else {
            return;
        };
        if !self.is_leader() {
            return;
        }
        let slot = entry.lock();
        if slot.record.health.is_some() && slot.record.health != before {
            if let Some(event) = event(&slot.record, before, self.clock.now()) {
                self.events.emit(event);
            }
        }
    }
}
