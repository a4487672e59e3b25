//! Tables as `cinder service-list` prints them, and the history of `vigil events`.

use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use vigil_proto::{ts, Event, Service};

/// Binary, Host, Zone, Status, State, Updated At, Disabled Reason.
pub fn services(services: &[Service]) -> String {
    let mut table = Table::new();
    table
        .load_preset(ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "Binary",
            "Host",
            "Zone",
            "Status",
            "State",
            "Updated At",
            "Disabled Reason",
        ]);
    for s in services {
        let state = if s.forced_down {
            "down (forced)".to_string()
        } else {
            s.state.as_str().to_string()
        };
        table.add_row([
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
        ]);
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
    parts.join(", ")
}
