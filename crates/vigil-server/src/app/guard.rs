//! The partition guard's operations ([`crate::guard`]): an admin confirms down the services
//! held `unreachable` after a mass failure, and readiness tells of the episode in progress.

use super::{App, AppError};
use crate::auth::{Caller, Need};
use crate::guard::EpisodeView;

/// What `confirm_down` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    pub confirmed: usize,
    pub still_unreachable: usize,
    pub leader: bool,
}

impl App {
    /// Declares `down` the services the partition guard holds `unreachable`: those of `host`
    /// (and `binary`), or all. Their `down` events name the caller, and are written by the
    /// detector with every transition (within a tick). Only the leader of detection holds
    /// services; elsewhere nothing is confirmed.
    pub fn confirm_down(
        &self,
        host: Option<&str>,
        binary: Option<&str>,
        caller: &Caller,
    ) -> Result<Confirmed, AppError> {
        self.tokens.authorize(caller, Need::Admin)?;
        self.limit_writes(caller)?;
        let actor = caller.actor();
        let now = self.clock.now();
        let mut declare = |slot: &mut crate::registry::Slot, reason: String| {
            crate::detector::declare_down(&self.registry, slot, now, Some(reason))
        };
        let (confirmed, events) =
            self.detector
                .guard
                .confirm_down(host, binary, &actor, now, &mut declare);
        for event in events {
            self.events.emit(event);
        }
        self.registry
            .liveness
            .set_cut_off(self.detector.guard.active());
        tracing::info!(
            target: "vigil::audit",
            actor = actor.name.as_deref().unwrap_or("-"),
            address = actor.address.as_deref().unwrap_or("-"),
            host = host.unwrap_or("*"),
            binary = binary.unwrap_or("*"),
            confirmed,
            "services held unreachable confirmed down"
        );
        Ok(Confirmed {
            confirmed,
            still_unreachable: self.mass_failure().map_or(0, |e| e.unreachable),
            leader: self.detector.is_leader(),
        })
    }

    /// The mass failure in progress, if any (on the leader of detection).
    pub fn mass_failure(&self) -> Option<EpisodeView> {
        self.detector.guard.episode()
    }
}
