//! An admin's doing: forced down (fencing) and disabled.

use super::*;

/// Forced down by an admin (fencing): down whatever the heartbeats say.
pub(super) fn forced_down(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    if !record.forced_down {
        return ok("forced_down", "not forced down");
    }
    let when = latest(inputs, EventKind::ForcedDown);
    error(
        "forced_down",
        format!(
            "forced down by an admin{}: shown down whatever its heartbeats say",
            when.as_deref().unwrap_or("")
        ),
    )
    .because(
        "forced down is for fencing (Nova's forced_down): something declared the host dead, and \
         heartbeats do not count until it is lifted",
    )
    .fix(format!(
        "once the host is fenced and repaired: vigil service force-down {} {} --unset",
        record.host, record.binary
    ))
}

/// Disabled by an admin: still watched, but given no work.
pub(super) fn disabled(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    if !record.disabled {
        return ok("disabled", "enabled");
    }
    let when = latest(inputs, EventKind::Disabled);
    let reason = record
        .disabled_reason()
        .map_or_else(|| "no reason given".to_string(), |r| format!("reason: {r}"));
    warning(
        "disabled",
        format!(
            "disabled by an admin{} ({reason})",
            when.as_deref().unwrap_or("")
        ),
    )
    .because(
        "its status is disabled, so schedulers send it no work; its state (up or down) still \
         follows its heartbeats",
    )
    .fix(format!(
        "when the reason no longer holds: vigil service enable {} {}",
        record.host, record.binary
    ))
}
