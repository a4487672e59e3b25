//! Whether Vigil can reach the service at all: held `unreachable` in a mass failure (Vigil may
//! be the one cut off), or on its way back up after a `down` (the `up_after_beats` hysteresis).

use super::*;

/// The partition guard's and the hysteresis' view of the service.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    /// Held `unreachable` by the partition guard.
    pub unreachable: bool,
    /// A mass failure in progress (on this server, the leader of detection).
    pub mass_failure: Option<crate::guard::EpisodeView>,
    /// On-time heartbeats since its `down`, and how many bring it back up.
    pub recovering: Option<(u32, u32)>,
}

pub(super) fn reach(inputs: &Inputs) -> Finding {
    let reach = &inputs.reach;
    let episode = reach.mass_failure.as_ref();
    if reach.unreachable {
        let together = episode.map_or_else(String::new, |e| {
            format!(
                "{} of {} services went silent together at {}, ",
                e.silence.silent,
                e.silence.total,
                e.since.format("%H:%M:%S UTC")
            )
        });
        return error("reach", "unreachable: Vigil may be the one cut off")
            .because(format!(
                "{together}so the partition guard holds the ones past their deadline \
                 unreachable instead of down: a network cut between Vigil and its reporters \
                 looks the same as all of them dying at once"
            ))
            .fix(format!(
                "check the network between this server and {host} (and the other silent \
                 hosts); it is `up` again at its next heartbeat. If it really is down: \
                 `vigil confirm-down {host} {binary}`",
                host = inputs.record.host,
                binary = inputs.record.binary
            ));
    }
    if let Some((beats, needed)) = reach.recovering {
        return warning(
            "reach",
            format!("coming back: {beats} of {needed} on-time heartbeats since its down"),
        )
        .because(
            "after a down, this server waits for `flapping.up_after_beats` heartbeats in a row, \
             each on time, before it counts the service up again",
        )
        .fix("nothing, if its heartbeats keep coming on time");
    }
    match episode {
        Some(e) => ok(
            "reach",
            format!(
                "reachable; a mass failure holds {} other services unreachable since {}",
                e.unreachable,
                e.since.format("%H:%M:%S UTC")
            ),
        ),
        None => ok("reach", "reachable; no mass failure in progress"),
    }
}
