//! Beats that stopped, or never started; or a service that said it stops.

use super::*;

/// Beats that stopped, or never started: the service is silent for longer than
/// `service_down_time`.
pub(super) fn heartbeat(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    let sdt = inputs.service_down_time;
    if let Some(at) = record
        .stopped_at()
        .filter(|_| crate::liveness::is_stopped(record))
    {
        return ok(
            "heartbeat",
            format!(
                "stopped cleanly at {} (the service said it exits): no heartbeat is expected until it starts again",
                stamp(at)
            ),
        );
    }
    let Some(last) = record.updated_at else {
        let age = seconds(inputs.now - record.created_at);
        if age <= sdt {
            return ok(
                "heartbeat",
                format!(
                    "registered {} s ago; no heartbeat yet, the first is due after {} s",
                    secs(age),
                    secs(record.report_interval)
                ),
            );
        }
        return error(
            "heartbeat",
            format!("never heartbeated since registration {} s ago", secs(age)),
        )
        .because(
            "the reporter registered but no heartbeat ever arrived: it may have died right after \
             registering, or its heartbeats go elsewhere or are refused on the way",
        )
        .fix(format!(
            "check the process on {} and its log for heartbeat errors; check that it reports \
                 to this server's URL",
            record.host
        ));
    };
    let age = seconds(inputs.now - last);
    if age <= sdt {
        return ok("heartbeat", format!("last heartbeat {} s ago", secs(age)));
    }
    if age <= MISSED_FACTOR * record.report_interval {
        return ok(
            "heartbeat",
            format!(
                "last heartbeat {} s ago, and the next is not due yet at report_interval {} s",
                secs(age),
                secs(record.report_interval)
            ),
        )
        .because(
            "the beats have not stopped; the service is down because its interval is longer \
             than service_down_time (see the interval finding)",
        );
    }
    let gaps = inputs.stats.gaps();
    let before = match gaps.iter().copied().reduce(f64::max) {
        None => "no earlier gaps known since the server started".to_string(),
        Some(max) if max <= MISSED_FACTOR * record.report_interval => {
            "gaps were regular before".to_string()
        }
        Some(max) => format!("gaps were already irregular before (up to {} s)", secs(max)),
    };
    let mut detail = format!(
        "the last heartbeat arrived at {} and service_down_time is {} s",
        stamp(last),
        secs(sdt)
    );
    if let Some((error, at)) = inputs.stats.last_error() {
        detail.push_str(&format!(
            "; the reporter's last error ({}): {error}",
            stamp(at)
        ));
    }
    error(
        "heartbeat",
        format!(
            "no heartbeat for {} s; {before}; process stopped, host down or network cut",
            secs(age)
        ),
    )
    .because(detail)
    .fix(format!(
        "check that the process runs on {} (its supervisor, its log), that the host is up, \
             and that it can reach this server; a restarted reporter registers again by itself",
        record.host
    ))
}
