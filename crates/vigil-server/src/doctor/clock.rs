//! The seed's step 2: the reporter's clock offset, and what it would do under Cinder's rule.

use super::*;

/// The seed's step 2. Vigil decides liveness with its own clock, so a skewed reporter is not
/// shown down here; the finding says what the skew would do under Cinder's rule and elsewhere.
pub(super) fn clock(inputs: &Inputs) -> Finding {
    let Some(offset) = inputs.stats.clock_offset_s() else {
        return ok(
            "clock",
            "no clock reading yet: no heartbeat with sent_at since the server started",
        )
        .because(
            "each heartbeat's sent_at, compared with its receipt time, measures the reporter's \
             clock offset",
        );
    };
    let bound = inputs.stats.clock_offset_error_s().unwrap_or(0.0);
    // The offset is known only to within the round trip; judge by the least it can be.
    let least = (offset.abs() - bound).max(0.0);
    let tolerance = (inputs.service_down_time - inputs.record.report_interval).max(0.0);
    let direction = if offset >= 0.0 { "ahead of" } else { "behind" };
    let reference = if inputs.openstack.is_some() {
        "the database's"
    } else {
        "the server's"
    };
    let measured = format!(
        "clock of host {} is {} s {direction} {reference} (to within {} ms)",
        inputs.record.host,
        secs(offset.abs()),
        (bound * 1000.0).ceil().max(1.0)
    );
    let unaffected = "Vigil decides liveness with its own clock only, so this service's state \
                      here is unaffected";
    let remedy = format!(
        "synchronise the clock of host {} with NTP (chronyc tracking, timedatectl status)",
        inputs.record.host
    );
    if let (true, Some(openstack)) = (least > tolerance, &inputs.openstack) {
        let ahead = if offset >= 0.0 { "ahead of" } else { "behind" };
        return error(
            "clock",
            format!(
                "{} shows {} on {} down because its clock is {} s {ahead} the database; it \
                 reports every {} s",
                product(openstack.kind),
                inputs.record.binary,
                inputs.record.host,
                secs(offset.abs()),
                secs(inputs.record.report_interval)
            ),
        )
        .because(format!(
            "{measured}; {} compares updated_at, written with the node's clock, against the \
             database's and tolerates at most service_down_time - report_interval = {} s. \
             Vigil judges the same heartbeats on one clock, so it shows the service up",
            product(openstack.kind),
            secs(tolerance)
        ))
        .fix(remedy);
    }
    if least > tolerance {
        error(
            "clock",
            format!("{measured}: under Cinder's rule this service would be shown down"),
        )
        .because(format!(
            "Cinder compares updated_at written with the service node's clock against the \
                 API node's clock and tolerates at most service_down_time - report_interval = \
                 {} s; {unaffected}, but anything else that trusts this host's clock does not",
            secs(tolerance)
        ))
        .fix(remedy)
    } else if least > CLOCK_WARNING_S {
        warning(
            "clock",
            format!("{measured}: its logs and certificate checks go wrong"),
        )
        .because(format!(
            "within Cinder's tolerance of {} s, and {unaffected}; but its log timestamps do \
                 not line up with other hosts' and certificate and token lifetimes are judged \
                 wrongly",
            secs(tolerance)
        ))
        .fix(remedy)
    } else {
        ok(
            "clock",
            format!(
                "clock within {} s of the server's",
                secs(offset.abs().max(bound))
            ),
        )
        .because(format!("{unaffected} in any case"))
    }
}
