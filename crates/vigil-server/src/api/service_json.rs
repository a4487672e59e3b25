//! One service's JSON, written straight from its slot into the list's buffer.
//!
//! Byte for byte what serializing [`Registry::view`] gives (the test below holds it to
//! that), without the view: the view clones five strings per service, and serde formats
//! each time through chrono into a fresh `String`. At 100,000 services per list those
//! clones, frees and formats were a quarter of the list's time.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::registry::{Registry, Slot};

/// Appends the JSON of `slot`'s service at `now` to `out`.
pub fn write(out: &mut Vec<u8>, registry: &Registry, slot: &Slot, now: DateTime<Utc>) {
    let record = &slot.record;
    let judgement = registry.judge(slot, now);
    out.extend_from_slice(br#"{"id":"#);
    number(out, record.id);
    out.extend_from_slice(br#","host":"#);
    string(out, &record.host);
    out.extend_from_slice(br#","binary":"#);
    string(out, &record.binary);
    out.extend_from_slice(br#","topic":"#);
    optional(out, record.topic.as_deref(), string);
    out.extend_from_slice(br#","zone":"#);
    string(out, &record.zone);
    out.extend_from_slice(br#","disabled":"#);
    boolean(out, record.disabled);
    out.extend_from_slice(br#","disabled_reason":"#);
    optional(out, record.disabled_reason(), string);
    out.extend_from_slice(br#","forced_down":"#);
    boolean(out, record.forced_down);
    out.extend_from_slice(br#","frozen":"#);
    boolean(out, record.frozen);
    out.extend_from_slice(br#","report_count":"#);
    number(out, record.report_count);
    out.extend_from_slice(br#","report_interval":"#);
    number(out, record.report_interval);
    out.extend_from_slice(br#","version":"#);
    optional(out, record.version.as_deref(), string);
    out.extend_from_slice(br#","created_at":"#);
    time(out, &record.created_at);
    out.extend_from_slice(br#","updated_at":"#);
    optional(out, record.updated_at.as_ref(), time);
    out.extend_from_slice(br#","modified_at":"#);
    optional(out, record.modified_at().as_ref(), time);
    out.extend_from_slice(br#","state":"#);
    string(out, judgement.state().as_str());
    out.extend_from_slice(if record.disabled {
        br#","status":"disabled""#
    } else {
        br#","status":"enabled""#
    });
    out.extend_from_slice(br#","last_heartbeat_age_s":"#);
    number(out, judgement.age_s());
    out.extend_from_slice(br#","suspect":"#);
    boolean(out, judgement.suspect);
    out.extend_from_slice(br#","suspicion":"#);
    optional(out, judgement.suspicion_shown(), number);
    out.extend_from_slice(br#","source":"#);
    string(out, crate::registry::source(slot));
    if let Some(watched) = &slot.watched {
        out.extend_from_slice(br#","openstack_state":"#);
        string(out, watched.openstack_state.as_str());
    }
    out.extend_from_slice(br#","health":"#);
    optional(out, record.health.map(crate::model::Health::as_str), string);
    out.extend_from_slice(br#","health_message":"#);
    optional(out, record.health_message(), string);
    out.extend_from_slice(br#","service_down_time":"#);
    number(out, registry.liveness.down_time_s(record));
    out.extend_from_slice(br#","flapping":"#);
    boolean(out, slot.flaps.flapping(now, &registry.liveness.flapping));
    out.extend_from_slice(br#","recent_transitions":"#);
    number(
        out,
        slot.flaps.count(now, &registry.liveness.flapping) as u64,
    );
    out.extend_from_slice(br#","in_maintenance":"#);
    boolean(out, judgement.in_maintenance);
    if let Some(reason) = registry.maintenance_reason(slot, &judgement, now) {
        out.extend_from_slice(br#","maintenance_reason":"#);
        string(out, &reason);
    }
    out.push(b'}');
}

/// Numbers as serde_json writes them (so floats print the same digits).
fn number(out: &mut Vec<u8>, value: impl serde::Serialize) {
    // Serializing a number into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &value);
}

pub(crate) fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn optional<T>(out: &mut Vec<u8>, value: Option<T>, write: fn(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string. Names and zones almost never need escaping, so they are checked first and
/// copied as they are; serde_json escapes the rest.
pub(crate) fn string(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
    {
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// A time as `vigil_proto::ts` writes it, `"2026-01-02T03:04:05.123456Z"`, without an
/// intermediate `String`. Years outside 0..=9999 and leap seconds go the slow way.
fn time(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    if !digits(out, at, true) {
        let _ = serde_json::to_writer(&mut *out, &vigil_proto::ts::format(at));
    }
}

/// A time as Cinder writes it, naive UTC with microseconds and no zone:
/// `"2026-01-02T03:04:05.123456"`.
pub(crate) fn naive_time(out: &mut Vec<u8>, at: &DateTime<Utc>) {
    if !digits(out, at, false) {
        let text = at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        let _ = serde_json::to_writer(&mut *out, &text);
    }
}

/// The quoted time, with a `Z` when `zulu`; `false` (nothing written) for a year outside
/// 0..=9999 or a leap second.
fn digits(out: &mut Vec<u8>, at: &DateTime<Utc>, zulu: bool) -> bool {
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
        return false;
    }
    let mut text = *b"\"0000-00-00T00:00:00.000000Z\"";
    let fields = [
        (1, 4, at.year() as u32),
        (6, 2, at.month()),
        (9, 2, at.day()),
        (12, 2, at.hour()),
        (15, 2, at.minute()),
        (18, 2, at.second()),
        (21, 6, nanos / 1000),
    ];
    for (start, width, mut value) in fields {
        for i in (start..start + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    if zulu {
        out.extend_from_slice(&text);
    } else {
        out.extend_from_slice(&text[..27]);
        out.push(b'"');
    }
    true
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::liveness::Liveness;
    use crate::registry::{Beat, Registry, Watched};
    use crate::store::ServiceRecord;
    use crate::watch::{OpenstackState, WatchKind};

    fn record(id: i64, host: &str) -> ServiceRecord {
        ServiceRecord {
            zone: "az-1".into(),
            ..ServiceRecord::example(
                id,
                host,
                "cinder-volume",
                10.0,
                DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap(),
            )
        }
    }

    /// Whatever the slot holds, the bytes are those of serializing the view.
    #[test]
    fn writes_what_serializing_the_view_writes() {
        let t0 = DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        let mut odd = record(2, "h\"ö\\\n\u{7f}✓");
        odd.topic = Some("volume".into());
        odd.disabled = true;
        odd.set_disabled_reason(Some("disk \"sdb\"\tfailed".into()));
        odd.forced_down = true;
        odd.frozen = true;
        odd.report_count = 1234567;
        odd.report_interval = 0.1;
        odd.version = Some("2025.1".into());
        odd.updated_at = Some(t0 + TimeDelta::microseconds(999_999));
        odd.set_modified_at(Some(DateTime::from_timestamp(0, 0).unwrap()));
        odd.health = Some(crate::model::Health::Failing);
        odd.set_health_message(Some("pool \"a\" full".into()));
        let mut far = record(3, "far");
        far.created_at = DateTime::from_timestamp(300_000_000_000, 0).unwrap();
        let registry = Registry::new(
            vec![record(1, "plain"), odd, far, record(4, "beats")],
            Liveness::new(60.0, 8.0),
        );
        for i in 1..=6 {
            let at = t0 + TimeDelta::milliseconds(1000 * i + 7 * i * i);
            registry.heartbeat(4, &Beat::default(), at);
        }
        for (openstack_id, unreachable) in [(7, false), (8, true)] {
            let mut row = record((1 << 52) | openstack_id, "stor-1");
            row.binary = "cinder-volume".into();
            let watched = Watched {
                source: "cinder/cinder \"eu\"".into(),
                kind: WatchKind::Cinder,
                openstack_id,
                openstack_state: OpenstackState::Down,
                unreachable,
                cadence_from: None,
            };
            registry.insert_watched(row, watched).unwrap();
        }
        registry.maintenance.add(crate::model::MaintenanceWindow {
            id: 1,
            host: "plain".into(),
            binary: None,
            reason: "disk \"swap\"\t".into(),
            starts_at: t0,
            ends_at: t0 + TimeDelta::seconds(30),
            created_by: None,
            address: None,
            ended_at: None,
            ended_by: None,
        });
        for now in [t0, t0 + TimeDelta::seconds(9), t0 + TimeDelta::seconds(61)] {
            for entry in registry.entries() {
                let slot = entry.lock();
                let mut mine = Vec::new();
                write(&mut mine, &registry, &slot, now);
                let serde = serde_json::to_vec(&registry.view(&slot, now)).unwrap();
                assert_eq!(
                    String::from_utf8(mine).unwrap(),
                    String::from_utf8(serde).unwrap()
                );
            }
        }
    }
}
