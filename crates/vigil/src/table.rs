//! Tables as `cinder service-list` prints them.

use comfy_table::presets::ASCII_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use vigil_proto::{ts, Service};

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
