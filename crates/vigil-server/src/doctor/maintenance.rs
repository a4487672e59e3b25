//! A maintenance window: the service is judged as always, and its down is expected.

use super::*;

/// In a maintenance window: which, why, who started it and when it ends; a down then is
/// expected rather than a fault.
pub(super) fn maintenance(inputs: &Inputs) -> Finding {
    let Some(window) = inputs.maintenance else {
        return ok("maintenance", "no maintenance window covers it");
    };
    let record = inputs.record;
    let last_seen = record.updated_at.unwrap_or(record.created_at);
    let down = record.forced_down
        || (!crate::liveness::is_stopped(record)
            && seconds(inputs.now - last_seen) > inputs.service_down_time);
    let started = match &window.created_by {
        Some(by) => format!("started by {by} at {}", stamp(window.starts_at)),
        None => format!("started at {}", stamp(window.starts_at)),
    };
    let covers = match &window.binary {
        Some(binary) => format!("{binary} on {}", window.host),
        None => format!("every binary of {}", window.host),
    };
    let summary = if down {
        format!(
            "down during maintenance window {} (reason: {}): expected until it ends at {}",
            window.id,
            window.reason,
            stamp(window.ends_at)
        )
    } else {
        format!(
            "in maintenance window {} until {} (reason: {})",
            window.id,
            stamp(window.ends_at),
            window.reason
        )
    };
    warning("maintenance", summary)
        .because(format!(
            "the window covers {covers}, {started}; the service is judged as always and its \
             transitions are recorded (its down events say \"in maintenance\"), but alert rules \
             silence it (vigil_service_in_maintenance) and a down now is expected, not a fault"
        ))
        .fix(format!(
            "nothing while the work goes on; the window ends by itself at {}, or now with: \
             vigil maintenance end {}",
            stamp(window.ends_at),
            window.id
        ))
}
