//! Tables as `cinder service-list` prints them, and the history of `vigil events`.

use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use vigil_proto::{ts, Event, Service};

/// Binary, Host, Zone, Status, State, Updated At, Disabled Reason.
pub fn services(services: &[Service]) -> String {
    let mut table = Table::new();
    // Watched OpenStack services: their source, and OpenStack's own verdict beside Vigil's.
    let watched = services.iter().any(|s| s.openstack_state.is_some());
    let mut header = vec![
        "Binary",
        "Host",
        "Zone",
        "Status",
        "State",
        "Updated At",
        "Disabled Reason",
    ];
    if watched {
        header.extend(["Source", "OpenStack"]);
    }
    table
        .load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for s in services {
        let mut state = if s.forced_down {
            "down (forced)".to_string()
        } else {
            s.state.as_str().to_string()
        };
        if s.in_maintenance {
            state.push_str(" (maintenance)");
        }
        // What the service says of itself, when it is not plain ok: alive but failing shows.
        match s.health {
            Some(vigil_proto::HealthStatus::Warning) => state.push_str(" (warning)"),
            Some(vigil_proto::HealthStatus::Failing) => state.push_str(" (failing)"),
            _ => {}
        }
        let mut row = vec![
            s.binary.clone(),
            s.host.clone(),
            s.zone.clone(),
            s.status.as_str().to_string(),
            state,
            s.updated_at
                .as_ref()
                .map(ts::format)
                .unwrap_or_else(|| "-".into()),
            s.disabled_reason.clone().unwrap_or_else(|| "-".into()),
        ];
        if watched {
            row.push(s.source.clone());
            row.push(match s.openstack_state {
                Some(theirs) if theirs != s.state => format!("{} (disagrees)", theirs.as_str()),
                Some(theirs) => theirs.as_str().to_string(),
                None => "-".into(),
            });
        }
        table.add_row(row);
    }
    table.to_string()
}

/// Id, At, Kind, Host, Binary, Detail: the history, in the order given.
pub fn events(events: &[Event]) -> String {
    let mut table = Table::new();
    table
        .load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["Id", "At", "Kind", "Host", "Binary", "Detail"]);
    for e in events {
        table.add_row([
            e.id.to_string(),
            ts::format(&e.at),
            e.kind.clone(),
            e.host.clone(),
            e.binary.clone(),
            event_detail(e),
        ]);
    }
    table.to_string()
}

/// What an event says beyond its kind: its reason, and for `down` the evidence (the heartbeat
/// that was too old and the threshold in force), so the line alone answers "why down?".
pub fn event_detail(event: &Event) -> String {
    let mut parts = Vec::new();
    if event.kind == "down" {
        if let Some(last_seen) = &event.last_seen {
            parts.push(format!("last seen {}", ts::format(last_seen)));
        }
        if let Some(threshold) = event.threshold_s {
            parts.push(format!("threshold {threshold} s"));
        }
    }
    if let Some(reason) = event.reason.as_deref().filter(|r| !r.is_empty()) {
        parts.push(reason.to_string());
    }
    match (&event.actor, &event.address) {
        (Some(actor), Some(address)) => parts.push(format!("by {actor} from {address}")),
        (Some(actor), None) => parts.push(format!("by {actor}")),
        (None, Some(address)) => parts.push(format!("from {address}")),
        (None, None) => {}
    }
    parts.join(", ")
}

/// `vigil token list`: never a secret.
pub fn tokens(tokens: &[vigil_proto::Token]) -> String {
    let mut table = Table::new();
    table
        .load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["Name", "Role", "Hosts", "Created", "By", "Expires"]);
    for t in tokens {
        let hosts = match (t.role, t.hosts.is_empty()) {
            (vigil_proto::Role::Agent, true) => "*".to_string(),
            (_, true) => "-".to_string(),
            (_, false) => t.hosts.join(", "),
        };
        let expires = match (&t.expires_at, t.expired) {
            (Some(at), true) => format!("{} (expired)", ts::format(at)),
            (Some(at), false) => ts::format(at),
            (None, _) => "never".into(),
        };
        table.add_row([
            t.name.clone(),
            t.role.as_str().to_string(),
            hosts,
            ts::format(&t.created_at),
            t.created_by.clone().unwrap_or_else(|| "-".into()),
            expires,
        ]);
    }
    table.to_string()
}

/// `vigil maintenance list`: Id, Host, Binary (`*`: every binary of the host), Reason, Starts,
/// Ends, By, and whether it holds (or who ended it early).
pub fn maintenance(windows: &[vigil_proto::Maintenance]) -> String {
    let mut table = Table::new();
    table
        .load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "Id", "Host", "Binary", "Reason", "Starts", "Ends", "By", "Status",
        ]);
    for w in windows {
        let status = match (&w.ended_at, w.active) {
            (Some(at), _) => match &w.ended_by {
                Some(by) => format!("ended by {by} at {}", ts::format(at)),
                None => format!("ended at {}", ts::format(at)),
            },
            (None, true) => "active".into(),
            (None, false) => "ended".into(),
        };
        table.add_row([
            w.id.to_string(),
            w.host.clone(),
            w.binary.clone().unwrap_or_else(|| "*".into()),
            w.reason.clone(),
            ts::format(&w.starts_at),
            ts::format(&w.ends_at),
            w.created_by.clone().unwrap_or_else(|| "-".into()),
            status,
        ]);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(host: &str, source: &str, openstack: Option<vigil_proto::State>) -> Service {
        serde_json::from_value(serde_json::json!({
            "id": 1, "host": host, "binary": "cinder-scheduler", "topic": null, "zone": "nova",
            "disabled": false, "disabled_reason": null, "report_count": 3,
            "report_interval": 2.0, "version": null,
            "created_at": "2026-12-03T05:00:00.000000Z", "updated_at": null,
            "modified_at": null, "state": "up", "status": "enabled",
            "last_heartbeat_age_s": 1.0, "source": source,
            "openstack_state": openstack,
        }))
        .unwrap()
    }

    #[test]
    fn watched_services_show_their_source_and_where_openstack_disagrees() {
        let own = services(&[service("node-1", "vigil", None)]);
        assert!(!own.contains("Source"), "{own}");
        let mixed = services(&[
            service("node-1", "vigil", None),
            service("sched-a", "cinder/cinder", Some(vigil_proto::State::Up)),
            service("sched-b", "cinder/cinder", Some(vigil_proto::State::Down)),
        ]);
        assert!(
            mixed.contains("Source") && mixed.contains("OpenStack"),
            "{mixed}"
        );
        let line = |host: &str| {
            mixed
                .lines()
                .find(|l| l.contains(host))
                .unwrap()
                .to_string()
        };
        assert!(line("sched-b").contains("down (disagrees)"), "{mixed}");
        assert!(!line("sched-a").contains("disagrees"), "{mixed}");
        assert!(line("node-1").contains("| vigil"), "{mixed}");
    }

    #[test]
    fn a_service_in_maintenance_says_so_beside_its_state() {
        let mut resting = service("node-1", "vigil", None);
        resting.state = vigil_proto::State::Down;
        resting.in_maintenance = true;
        resting.maintenance_reason = Some("disk swap".into());
        let table = services(&[resting, service("node-2", "vigil", None)]);
        assert!(table.contains("| down (maintenance) |"), "{table}");
        assert_eq!(table.matches("maintenance").count(), 1, "{table}");
    }

    #[test]
    fn a_failing_health_shows_beside_the_state() {
        let mut failing = service("node-1", "vigil", None);
        failing.health = Some(vigil_proto::HealthStatus::Failing);
        let mut fine = service("node-2", "vigil", None);
        fine.health = Some(vigil_proto::HealthStatus::Ok);
        let table = services(&[failing, fine]);
        assert!(table.contains("| up (failing) |"), "{table}");
        assert!(!table.contains("(ok)"), "{table}");
    }
}
