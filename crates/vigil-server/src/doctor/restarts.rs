//! A crash loop, read from the registrations in the history.

use super::*;

/// A crash loop: every start of a reporter registers, and each registration is in the history.
pub(super) fn restarts(inputs: &Inputs) -> Finding {
    let history = match inputs.history {
        Ok(history) => history,
        Err(reason) => return history_unavailable("restarts", reason),
    };
    let since = inputs.now - RECENT;
    let starts: Vec<&Event> = history
        .iter()
        .filter(|e| {
            e.kind == EventKind::Registered
                && e.reason.as_deref().and_then(RegistrationReason::parse)
                    == Some(RegistrationReason::StartedAgain)
                && e.at >= since
        })
        .collect();
    let window = RECENT.num_minutes();
    match starts.len() {
        0 => ok("restarts", format!("no restart in the last {window} min")),
        n if n < CRASH_LOOP_RESTARTS => ok(
            "restarts",
            format!("started again {} in the last {window} min", times(n)),
        )
        .because("a deploy or a manual restart; not a pattern"),
        n => {
            let first = starts.iter().map(|e| e.at).min().unwrap_or(inputs.now);
            let last = starts.iter().map(|e| e.at).max().unwrap_or(inputs.now);
            error(
                "restarts",
                format!(
                    "registered again {} in the last {window} min: the process is in a crash \
                     loop",
                    times(n)
                ),
            )
            .because(format!(
                "each start of a reporter registers; {n} starts between {} and {}: the \
                     process probably crashes and its supervisor starts it again",
                stamp(first),
                stamp(last)
            ))
            .fix(format!(
                "read the log of {} on {} and of its supervisor (journalctl, kubectl \
                     describe pod) around those times for the crash",
                inputs.record.binary, inputs.record.host
            ))
        }
    }
}
