//! Up and down too often: the heartbeats arrive just around the deadline.

use super::*;

/// Flapping: at least the rule's transitions within its window.
pub(super) fn flapping(inputs: &Inputs) -> Finding {
    let rule = &inputs.flapping;
    let count = inputs.recent_transitions;
    let window = secs(seconds(rule.window));
    if rule.transitions == 0 || count < rule.transitions {
        return ok(
            "flapping",
            format!("{count} up/down transitions in the last {window} s"),
        );
    }
    warning(
        "flapping",
        format!("flapping: {count} up/down transitions in the last {window} s"),
    )
    .because(
        "its heartbeats arrive just around its service_down_time, so it keeps going down and \
         coming back: a reporter running late, a crash loop, or a service_down_time too close \
         to its report_interval (see the punctuality, restarts and interval findings)",
    )
    .fix(
        "fix what the other findings name; meanwhile alerts on its transitions are noise, and \
         its state is not to be trusted either way",
    )
}
