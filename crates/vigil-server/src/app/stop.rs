//! A clean stop: a service that exits says so (`POST /v1/services/{id}/stop`, sent by the
//! reporter crate's `stop()` and by `vigil agent` when its command exits), and is `stopped` at
//! once instead of showing up for a `service_down_time` and then `down`. Written through with
//! its `stopped` event before it is acknowledged; its next heartbeat brings it back (`up`).

use vigil_proto::Service;

use super::{App, AppError};
use crate::auth::{Caller, Need};
use crate::store::{EventKind, NewEvent};

impl App {
    /// Marks a service stopped now. A service already stopped is answered as it is, with no
    /// second event (a retried request).
    /// The caller must be allowed to write services of the service's host, as for its
    /// heartbeats; it is recorded in the event.
    pub async fn stop(&self, id: i64, caller: &Caller) -> Result<Service, AppError> {
        self.tokens.may_write(caller)?;
        self.refuse_if_watched(id, false)?;
        let entry = self.entry(id).await?;
        let host = entry.lock().record.host.clone();
        self.tokens.authorize(caller, Need::Write { host: &host })?;
        let now = self.clock.now();
        let event = {
            let slot = entry.lock();
            if crate::liveness::is_stopped(&slot.record) {
                return Ok(self.registry.view(&slot, now));
            }
            let mut event =
                NewEvent::about(&slot.record, EventKind::Stopped, now).by(&caller.actor());
            event.last_seen = Some(slot.record.updated_at.unwrap_or(slot.record.created_at));
            event
        };
        let stopped = self.store.stop(id, &event).await;
        self.database.record(&stopped);
        let record = stopped?.ok_or(AppError::NotFound(id))?;
        self.metrics.written([EventKind::Stopped]);
        self.events.notify();
        let entry = self.absorb(record);
        let slot = entry.lock();
        Ok(self.registry.view(&slot, now))
    }
}
