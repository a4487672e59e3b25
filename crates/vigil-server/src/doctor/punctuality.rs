//! The seed's step 3: do the beats that arrive come on time?

use super::*;

/// The seed's step 3, for beats that arrive: are they on time? Beats that stopped are
/// [`heartbeat`]'s; a service can be late without being dead, and the remedies differ.
pub(super) fn punctuality(inputs: &Inputs) -> Finding {
    let stats = inputs.stats;
    let ri = inputs.record.report_interval;
    let sdt = inputs.service_down_time;
    let mut gaps = stats.gaps();
    let overrun = stats.last_overrun_s();
    // A few milliseconds over the interval is scheduling noise, not a stalled loop.
    let overran = overrun > 0.1 * ri;
    if gaps.len() < 2 && !overran {
        return ok(
            "punctuality",
            format!(
                "too few heartbeats to judge ({} gaps since the server started)",
                gaps.len()
            ),
        );
    }
    gaps.sort_by(f64::total_cmp);
    let n = gaps.len();
    let mean = gaps.iter().sum::<f64>() / n.max(1) as f64;
    let p99 = gaps
        .get(((0.99 * n as f64).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let max = gaps.last().copied().unwrap_or(0.0);
    let missed = gaps.iter().filter(|g| **g > MISSED_FACTOR * ri).count();
    // A gap over service_down_time that was not late is the interval's fault, not lateness.
    let down_gaps = gaps
        .iter()
        .filter(|g| **g > sdt && **g > MISSED_FACTOR * ri)
        .count();
    let shape = format!(
        "gaps mean {} s, p99 {} s, max {} s for report_interval {} s over the last {n} gaps; \
         {missed} longer than {MISSED_FACTOR} x report_interval",
        secs(mean),
        secs(p99),
        secs(max),
        secs(ri)
    );
    let severity = if down_gaps >= 2 {
        Severity::Error
    } else if missed >= 2 || down_gaps == 1 || overran {
        Severity::Warning
    } else {
        Severity::Ok
    };
    if severity == Severity::Ok {
        return ok("punctuality", format!("beats arrive on time: {shape}"));
    }
    let mut detail = vec![shape];
    if down_gaps > 0 {
        let counted = if down_gaps == 1 {
            "1 gap was".to_string()
        } else {
            format!("{down_gaps} gaps were")
        };
        detail.push(format!(
            "{counted} longer than service_down_time {} s: the service was shown down until the \
             beat that ended it",
            secs(sdt)
        ));
    }
    if stats.max_overrun_s() > 0.0 {
        detail.push(format!(
            "the reporter says its last run outlasted report_interval by {} s (at most {} s \
             since the server started)",
            secs(overrun),
            secs(stats.max_overrun_s())
        ));
    }
    // A reporter older than health in heartbeats skips the beats its health check fails and
    // says so in its last error; a current one sends them with `health` (the health finding).
    let reporter_error = stats.last_error().is_some();
    if let Some((error, at)) = stats.last_error() {
        detail.push(format!(
            "the reporter's last error ({} s ago): {error}",
            secs(seconds(inputs.now - at))
        ));
    }
    let cause = if overran {
        "agent overloaded or blocked: the reporter's own loop ran late"
    } else if reporter_error {
        "the reporter met an error (below): an older reporter skips the beats its health check \
         fails"
    } else {
        "the reporter says it ran on time, so beats were delayed or lost on the way (network, \
         proxy) or the server was slow to take them"
    };
    let summary = format!(
        "beats arrive but late: gaps p99 {} s for report_interval {} s; {cause}",
        secs(p99),
        secs(ri)
    );
    let remedy = if reporter_error && !overran {
        "find out what the reporter's last error says (a failing health check, a timeout); \
         a reporter of this version sends every beat with its health instead of skipping it"
    } else if overran {
        "find what blocks or starves the service's process (a long blocking call, CPU \
         starvation, a slow health check); run the reporter on its own thread (its default \
         start()) so the application's work cannot delay it"
    } else {
        "check the network path and any proxy between the service's host and this server, and \
         the server's own load"
    };
    found("punctuality", severity, summary)
        .because(detail.join("; "))
        .fix(remedy)
}
