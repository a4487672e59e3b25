//! The seed's step 1: does `report_interval` fit in `service_down_time`?

use super::*;

/// The seed's step 1: a heartbeat keeps a service up for `service_down_time`, so the interval
/// must fit in it, with room for a late or lost beat.
pub fn interval(report_interval: f64, service_down_time: f64) -> Finding {
    let (ri, sdt) = (secs(report_interval), secs(service_down_time));
    let remedy = format!(
        "lower report_interval to at most {} s, or raise the server's service_down_time to at \
         least {} s (Cinder's defaults: report_interval 10 s, service_down_time 60 s)",
        secs(service_down_time / 3.0),
        secs(report_interval * 3.0)
    );
    if report_interval >= service_down_time {
        error(
            "interval",
            format!(
                "report_interval {ri} s is not shorter than service_down_time {sdt} s: this \
                 service can never stay up"
            ),
        )
        .because(format!(
            "a heartbeat keeps a service up for service_down_time; with heartbeats every \
                 {ri} s it is shown down before the next one arrives, however healthy it is. \
                 Cinder silently raises service_down_time to 2.5 x report_interval in this case; \
                 Vigil does not rewrite configuration behind your back"
        ))
        .fix(remedy)
    } else if service_down_time < 3.0 * report_interval {
        warning(
            "interval",
            format!(
                "service_down_time {sdt} s is less than 3 x report_interval {ri} s: one late or \
                 lost heartbeat flips it down"
            ),
        )
        .because(format!(
            "only {:.1} heartbeats fit in service_down_time, so a single beat that is lost or \
                 late makes the service down until the next one arrives",
            service_down_time / report_interval
        ))
        .fix(remedy)
    } else {
        ok(
            "interval",
            format!(
                "report_interval {ri} s fits {:.0} times in service_down_time {sdt} s",
                (service_down_time / report_interval).floor()
            ),
        )
        .because("a service must miss several heartbeats in a row to be shown down")
    }
}

/// Step 1 on a watched OpenStack: its `report_interval` against the `service_down_time` it
/// runs with, including the rewrite Cinder and Nova make in silence (a warning in the daemon's
/// log only) when the interval does not fit.
pub(super) fn openstack_interval(report_interval: f64, openstack: &Openstack) -> Finding {
    let conf = format!("{}.conf", openstack.kind);
    let (ri, sdt) = (secs(report_interval), secs(openstack.service_down_time));
    let remedy = format!(
        "in {conf} [DEFAULT] on every node: report_interval at most {} s, or service_down_time \
         at least {} s; then tell the watch (report_interval, service_down_time in its \
         [[watch]] table)",
        secs(openstack.service_down_time / 3.0),
        secs(report_interval * 3.0)
    );
    if let Some(rewritten) =
        rewritten_service_down_time(openstack.service_down_time, report_interval)
    {
        return warning(
            "interval",
            format!(
                "report_interval {ri} s is not shorter than service_down_time {sdt} s: {} \
                 silently runs with service_down_time {} s instead",
                product(openstack.kind),
                secs(rewritten)
            ),
        )
        .because(format!(
            "{} raises service_down_time to 2.5 x report_interval when it does not fit, and \
             says so only in a warning of the daemon's log; the setting in {conf} is not what \
             its API applies",
            product(openstack.kind)
        ))
        .fix(remedy);
    }
    let mut finding = interval(report_interval, openstack.service_down_time);
    if finding.severity != Severity::Ok {
        finding = finding.fix(remedy);
    }
    finding
}
