//! `vigil events [HOST [BINARY]]`: the history of transitions and admin changes, newest first.
//!
//! One page by default (`--limit`, 50); `--all` follows the server's `next_before` cursor page
//! by page, so a long history is read in bounded requests rather than one huge answer.

use chrono::{DateTime, Utc};
use vigil_proto::{ts, Event, EventList};

use crate::client::{CliError, ServerOpts};
use crate::table;

/// Page size of `--all`: the most the server gives in one answer.
const ALL_PAGE: i64 = 1000;

/// Every kind of event, for `--kind`.
pub const KINDS: [&str; 17] = [
    "registered",
    "down",
    "up",
    "suspect",
    "disabled",
    "enabled",
    "forced_down",
    "unforced",
    "frozen",
    "thawed",
    "deleted",
    "stopped",
    "health",
    "flapping",
    "flapping_ended",
    "mass_failure",
    "mass_failure_ended",
];

/// Parses `--since`: an RFC 3339 time, or a duration meaning that long ago (`30m`, `1h`,
/// `2d`, `1h30m`); either way the RFC 3339 time sent to the server.
pub fn since(value: &str) -> Result<String, String> {
    since_at(value, Utc::now())
}

fn since_at(value: &str, now: DateTime<Utc>) -> Result<String, String> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(ts::format(&at.with_timezone(&Utc)));
    }
    let ago = humantime::parse_duration(value).map_err(|_| {
        format!(
            "{value:?} is neither an RFC 3339 time (2026-11-25T11:00:00Z) nor a duration \
             ago (30m, 1h, 2d, 1h30m)"
        )
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| format!("{value:?} is too long ago"))?;
    let at = now
        .checked_sub_signed(ago)
        .ok_or_else(|| format!("{value:?} is too long ago"))?;
    Ok(ts::format(&at))
}

/// Filters shared by `vigil events` and `vigil watch`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EventFilters {
    /// Only the events of the service with this id.
    #[arg(long, value_name = "ID")]
    pub service: Option<i64>,
    /// Only the events of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only the events of this binary.
    #[arg(long)]
    pub binary: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(KINDS))]
    pub kind: Option<String>,
}

impl EventFilters {
    /// The filters given, as query parameters.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("service", self.service.map(|id| id.to_string())),
            ("host", self.host.clone()),
            ("binary", self.binary.clone()),
            ("kind", self.kind.clone()),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
        .collect()
    }
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Only the events of this host (the same as --host).
    #[arg(value_name = "HOST", conflicts_with = "host")]
    pub at_host: Option<String>,
    /// Only the events of this binary (the same as --binary).
    #[arg(value_name = "BINARY", conflicts_with = "binary")]
    pub of_binary: Option<String>,
    #[command(flatten)]
    pub filters: EventFilters,
    /// Only events at or after this time: RFC 3339 (2026-11-25T11:00:00Z), or that long ago
    /// (30m, 1h, 2d, 1h30m).
    #[arg(long, value_name = "TIME|AGO", value_parser = since)]
    pub since: Option<String>,
    /// How many of the newest events to print.
    #[arg(
        long,
        default_value_t = 50,
        value_parser = clap::value_parser!(i64).range(1..=ALL_PAGE),
        conflicts_with = "all"
    )]
    pub limit: i64,
    /// Print every matching event, reading the history page by page.
    #[arg(long)]
    pub all: bool,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: EventsArgs) -> Result<i32, CliError> {
    let client = args.server.client()?;
    let named = args
        .at_host
        .clone()
        .map(|host| (host, args.of_binary.clone()));
    let mut filters = args.filters;
    filters.host = args.at_host.or(filters.host);
    filters.binary = args.of_binary.or(filters.binary);
    let mut query = filters.query();
    if let Some(since) = args.since {
        query.push(("since", since));
    }
    let limit = if args.all { ALL_PAGE } else { args.limit };
    query.push(("limit", limit.to_string()));
    let mut events: Vec<Event> = Vec::new();
    let mut more: Option<i64> = None;
    loop {
        let mut page_query = query.clone();
        if let Some(before) = more {
            page_query.push(("before", before.to_string()));
        }
        let page: EventList = client.get("/v1/events", &page_query).await?;
        events.extend(page.events);
        more = page.next_before;
        if !args.all || more.is_none() {
            break;
        }
    }
    // One rule with `vigil doctor` and `vigil service`: a host (or service) named as an argument
    // must exist, here as a registered service or in the history; `--host` and the other
    // options only filter, and may match nothing.
    if events.is_empty() {
        if let Some((host, binary)) = named {
            let mut query = vec![("host", host.clone())];
            if let Some(binary) = &binary {
                query.push(("binary", binary.clone()));
            }
            if client.list(&query).await?.is_empty() {
                return Err(CliError::refused(match binary {
                    Some(binary) => {
                        format!("no service {binary} on host {host}, and no events of one")
                    }
                    None => format!("no service on host {host}, and no events of one"),
                }));
            }
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&events) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("vigil: cannot print JSON: {err}"),
        }
    } else {
        println!("{}", table::events(&events));
        if more.is_some() {
            eprintln!(
                "vigil: the newest {} events shown; --all prints every one",
                events.len()
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_or_a_duration_ago() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |v: &str| since_at(v, now);
        assert_eq!(at("1h").unwrap(), "2026-11-25T11:00:00.000000Z");
        assert_eq!(at("30m").unwrap(), "2026-11-25T11:30:00.000000Z");
        assert_eq!(at("2d").unwrap(), "2026-11-23T12:00:00.000000Z");
        assert_eq!(at("1h30m").unwrap(), "2026-11-25T10:30:00.000000Z");
        assert_eq!(
            at("2026-11-25T13:00:00+01:00").unwrap(),
            "2026-11-25T12:00:00.000000Z"
        );
        assert!(at("yesterday").is_err());
        assert!(at("-5m").is_err());
    }
}
