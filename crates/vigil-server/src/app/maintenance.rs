//! Maintenance windows: started, listed and ended early by an admin; every change written to
//! the database before it is acknowledged, and logged as an audit line (`vigil::audit`) with
//! who asked and from where. A window ends by itself at its `ends_at`: the registry judges it
//! against the clock ([`crate::maintenance`]), so nothing runs then.

use chrono::{DateTime, Utc};

use super::{App, AppError};
use crate::auth::Caller;
use crate::model::{self, MaintenanceWindow};
use crate::store::StoreResult;
use crate::validate;

/// A window to start now, as asked.
#[derive(Debug, Clone)]
pub struct NewMaintenance {
    pub host: String,
    /// `None`: every binary of the host.
    pub binary: Option<String>,
    /// How long it lasts, seconds; or `ends_at`, one of the two.
    pub duration_s: Option<f64>,
    pub ends_at: Option<DateTime<Utc>>,
    pub reason: String,
}

fn invalid(code: &str, message: String) -> AppError {
    AppError::Invalid {
        code: code.into(),
        message,
    }
}

/// When a window asked for at `now` ends: `duration_s` from now, or `ends_at`; within
/// [`vigil_proto::MAX_MAINTENANCE_S`] of `now`, and after it.
fn ends_at(new: &NewMaintenance, now: DateTime<Utc>) -> Result<DateTime<Utc>, AppError> {
    let max = vigil_proto::MAX_MAINTENANCE_S;
    match (new.duration_s, new.ends_at) {
        (Some(_), Some(_)) => Err(invalid(
            "invalid_duration",
            "give duration_s or ends_at, not both".into(),
        )),
        (None, None) => Err(invalid(
            "invalid_duration",
            "give how long the window lasts: duration_s (seconds) or ends_at (a time)".into(),
        )),
        (Some(s), None) if s.is_finite() && s > 0.0 && s <= max => Ok(now + model::delta(s)),
        (Some(s), None) => Err(invalid(
            "invalid_duration",
            format!("duration_s must be above 0 and at most {max} seconds (30 days), not {s}"),
        )),
        (None, Some(at)) if at > now && model::seconds(at - now) <= max => Ok(at),
        (None, Some(at)) => Err(invalid(
            "invalid_ends_at",
            format!(
                "ends_at must be in the future and at most 30 days away, not {}",
                vigil_proto::ts::format(&at)
            ),
        )),
    }
}

impl App {
    /// Starts a maintenance window now. The caller's admin role is the front end's to check.
    pub async fn start_maintenance(
        &self,
        new: NewMaintenance,
        caller: &Caller,
    ) -> Result<MaintenanceWindow, AppError> {
        validate::text("host", Some(&new.host), true)?;
        if let Some(binary) = &new.binary {
            validate::text("binary", Some(binary), true)?;
        }
        validate::text("reason", Some(&new.reason), true)?;
        let now = self.clock.now();
        let ends_at = ends_at(&new, now)?;
        self.limit_writes(caller)?;
        let actor = caller.actor();
        let window = MaintenanceWindow {
            id: 0,
            host: new.host,
            binary: new.binary,
            reason: new.reason,
            starts_at: now,
            ends_at,
            created_by: actor.name,
            address: actor.address,
            ended_at: None,
            ended_by: None,
        };
        let created = self.store.create_maintenance(&window).await;
        self.database.record(&created);
        let window = created?;
        self.registry.maintenance.add(window.clone());
        audit(caller, "started a maintenance window", &window);
        Ok(window)
    }

    /// Ends a window now: here at once, on the other replicas within `flush_interval`.
    pub async fn end_maintenance(
        &self,
        id: i64,
        caller: &Caller,
    ) -> Result<MaintenanceWindow, AppError> {
        self.limit_writes(caller)?;
        let now = self.clock.now();
        let by = caller.actor().name;
        let ended = self.store.end_maintenance(id, now, by.as_deref()).await;
        self.database.record(&ended);
        let Some(window) = ended? else {
            // Ended elsewhere, or by itself: not held here either.
            self.registry.maintenance.remove(id);
            return Err(AppError::MaintenanceNotFound(id));
        };
        self.registry.maintenance.remove(id);
        audit(caller, "ended a maintenance window", &window);
        Ok(window)
    }

    /// The windows that hold now, or every window kept (`all`), in id order.
    pub async fn list_maintenance(&self, all: bool) -> Result<Vec<MaintenanceWindow>, AppError> {
        let now = self.clock.now();
        let listed = self.store.list_maintenance((!all).then_some(now)).await;
        self.database.record(&listed);
        Ok(listed?)
    }

    /// Takes the database's windows as they are now: those other replicas started or ended.
    pub async fn refresh_maintenance(&self) -> StoreResult<()> {
        let generation = self.registry.maintenance.generation();
        let windows = self.store.list_maintenance(Some(self.clock.now())).await?;
        self.registry.maintenance.replace(windows, generation);
        Ok(())
    }
}

fn audit(caller: &Caller, what: &str, window: &MaintenanceWindow) {
    let actor = caller.actor();
    tracing::info!(
        target: "vigil::audit",
        actor = actor.name.as_deref().unwrap_or("-"),
        address = actor.address.as_deref().unwrap_or("-"),
        maintenance = window.id,
        host = %window.host,
        binary = window.binary.as_deref().unwrap_or("*"),
        reason = %window.reason,
        ends_at = %vigil_proto::ts::format(&window.end()),
        "{what}"
    );
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn asked(duration_s: Option<f64>, ends_at: Option<DateTime<Utc>>) -> NewMaintenance {
        NewMaintenance {
            host: "node-1".into(),
            binary: None,
            duration_s,
            ends_at,
            reason: "disk swap".into(),
        }
    }

    #[test]
    fn a_window_lasts_a_positive_duration_of_at_most_30_days() {
        let now = Utc::now();
        let code = |new: NewMaintenance| match ends_at(&new, now) {
            Err(AppError::Invalid { code, .. }) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            ends_at(&asked(Some(7200.0), None), now).unwrap(),
            now + TimeDelta::hours(2)
        );
        let at = now + TimeDelta::days(30);
        assert_eq!(ends_at(&asked(None, Some(at)), now).unwrap(), at);
        for bad in [0.0, -1.0, 30.0 * 86_400.0 + 1.0, f64::INFINITY] {
            assert_eq!(code(asked(Some(bad), None)), "invalid_duration");
        }
        assert_eq!(code(asked(None, None)), "invalid_duration");
        assert_eq!(code(asked(Some(1.0), Some(at))), "invalid_duration");
        for bad in [now, now - TimeDelta::seconds(1), now + TimeDelta::days(31)] {
            assert_eq!(code(asked(None, Some(bad))), "invalid_ends_at");
        }
    }
}
