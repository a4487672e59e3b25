//! Two processes reporting as one (host, binary).

use super::*;

/// Two processes reporting as one (host, binary): the service looks alive as long as either
/// beats, so one of them can be dead unnoticed.
pub(super) fn duplicate(inputs: &Inputs) -> Finding {
    let stats = inputs.stats;
    let ri = inputs.record.report_interval;
    let recent_regressions = stats
        .last_regression_at()
        .is_some_and(|at| at >= inputs.now - RECENT);
    let gaps = stats.gaps();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    // Eight gaps average out a burst after a stall, which the loop follows with a run at once.
    let too_often = gaps.len() >= 8 && mean < 0.6 * ri;
    let remedy = format!(
        "find the second process reporting as {} on {} (a copy left over after a failover, a \
         cloned VM, a container started twice) and stop it or give it its own host name",
        inputs.record.binary, inputs.record.host
    );
    let mut evidence = Vec::new();
    let mut severity = Severity::Ok;
    if recent_regressions {
        evidence.push(format!(
            "sent_at went backwards {} since the server started, the last at {}: one \
             process's clock cannot do that unless it is stepped back",
            times(stats.sent_at_regressions() as usize),
            stamp(stats.last_regression_at().unwrap_or(inputs.now))
        ));
        severity = if stats.sent_at_regressions() >= 2 {
            Severity::Error
        } else {
            Severity::Warning
        };
    }
    if too_often {
        evidence.push(format!(
            "beats arrive {:.1} x as often as report_interval {} s says (mean gap {} s)",
            ri / mean,
            secs(ri),
            secs(mean)
        ));
        severity = severity.max(Severity::Warning);
    }
    if severity == Severity::Ok {
        return ok(
            "duplicate",
            "one reporter: sent_at never went backwards and beats arrive at the declared rate",
        );
    }
    let summary = if severity == Severity::Error {
        format!(
            "two processes report as {} on {}: their sent_at series interleave",
            inputs.record.binary, inputs.record.host
        )
    } else {
        format!(
            "maybe two processes report as {} on {}",
            inputs.record.binary, inputs.record.host
        )
    };
    found("duplicate", severity, summary)
        .because(format!(
            "{}; while either beats the service looks alive, so one of them can be dead unseen",
            evidence.join("; ")
        ))
        .fix(remedy)
}
