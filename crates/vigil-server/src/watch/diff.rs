//! What changed from one poll to the next: a pure function, no database.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::model::{AdminFields, Poll, WatchedRow};
use super::verdict::ClockOffset;

/// One change between two polls of the same watch, in row-id order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A row the previous poll did not have (every row of the first poll). Not a heartbeat:
    /// when its last heartbeat happened is not known on the watcher's clock.
    New { row: WatchedRow },
    /// `report_count` went up: one heartbeat, received at this poll's `db_now`, however many
    /// `report_state` runs the poll interval held (`beats`).
    Heartbeat {
        id: i64,
        report_count: i64,
        /// How much `report_count` went up since the previous poll.
        beats: i64,
        /// The database clock at this poll: when the heartbeat counts as received.
        at: DateTime<Utc>,
        /// The writer's clock offset, from the stamp it wrote (`last_seen_up` for Nova,
        /// else `updated_at`) against `at`; `None` when the row carries no stamp.
        clock_offset: Option<ClockOffset>,
    },
    /// `disabled`, `disabled_reason`, `forced_down` or `frozen` changed: an OpenStack admin's
    /// doing (`modified_at` is when, on the API node's clock, for Cinder).
    Admin {
        id: i64,
        before: AdminFields,
        after: AdminFields,
        modified_at: Option<DateTime<Utc>>,
    },
    /// A row of the previous poll that is not among the non-deleted rows any more: soft-deleted
    /// (`cinder-manage service remove`, `openstack compute service delete`) or removed. The poll
    /// reads non-deleted rows only, so it does not tell which.
    Removed { row: WatchedRow },
    /// `report_count` went down on the same row: not a heartbeat (OpenStack never does this
    /// but someone editing the table might); the new value is the baseline from now on.
    CountReset { id: i64, from: i64, to: i64 },
}

impl Change {
    /// The row id the change is about.
    pub fn id(&self) -> i64 {
        match self {
            Change::New { row } | Change::Removed { row } => row.id,
            Change::Heartbeat { id, .. }
            | Change::Admin { id, .. }
            | Change::CountReset { id, .. } => *id,
        }
    }
}

/// The changes from `prev` (`None` before the first poll) to `next`. Rows are matched by id;
/// both polls' rows are in id order (as [`super::reader::WatchReader::poll`] returns them).
///
/// One row may give several changes in one poll (a heartbeat and an admin change), heartbeat
/// first.
pub fn diff(prev: Option<&Poll>, next: &Poll) -> Vec<Change> {
    let mut changes = Vec::new();
    let empty: &[WatchedRow] = &[];
    let old = prev.map_or(empty, |p| p.rows.as_slice());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < next.rows.len() {
        match (old.get(i), next.rows.get(j)) {
            (Some(a), Some(b)) if a.id == b.id => {
                same_row(prev, next, a, b, &mut changes);
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.id < b.id => {
                changes.push(Change::Removed { row: a.clone() });
                i += 1;
            }
            (Some(a), None) => {
                changes.push(Change::Removed { row: a.clone() });
                i += 1;
            }
            (_, Some(b)) => {
                changes.push(Change::New { row: b.clone() });
                j += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    changes
}

fn same_row(
    prev: Option<&Poll>,
    next: &Poll,
    a: &WatchedRow,
    b: &WatchedRow,
    out: &mut Vec<Change>,
) {
    if b.report_count > a.report_count {
        let clock_offset = beat_stamp(b).map(|stamp| {
            // The write happened after the previous poll read its clock and before this one's
            // read the rows: `gap` bounds how long before `next.db_now` it was.
            let gap = prev.map_or(0.0, |p| seconds(next.db_now - p.db_now).max(0.0));
            ClockOffset::measure(stamp, next.db_now, gap, next.time_resolution)
        });
        out.push(Change::Heartbeat {
            id: b.id,
            report_count: b.report_count,
            beats: b.report_count - a.report_count,
            at: next.db_now,
            clock_offset,
        });
    } else if b.report_count < a.report_count {
        out.push(Change::CountReset {
            id: b.id,
            from: a.report_count,
            to: b.report_count,
        });
    }
    let (before, after) = (a.admin(), b.admin());
    if before != after {
        out.push(Change::Admin {
            id: b.id,
            before,
            after,
            modified_at: b.modified_at,
        });
    }
}

/// The stamp a heartbeat writes with the writer's clock.
fn beat_stamp(row: &WatchedRow) -> Option<DateTime<Utc>> {
    row.last_seen_up.or(row.updated_at)
}

pub(crate) fn seconds(delta: chrono::TimeDelta) -> f64 {
    delta
        .num_microseconds()
        .map_or(delta.num_seconds() as f64, |us| us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn t(s: f64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).unwrap()
            + chrono::TimeDelta::microseconds((s * 1e6) as i64)
    }

    fn row(id: i64, count: i64, updated: f64) -> WatchedRow {
        WatchedRow {
            id,
            host: format!("h{id}"),
            binary: "cinder-scheduler".into(),
            topic: Some("cinder-scheduler".into()),
            availability_zone: Some("nova".into()),
            disabled: false,
            disabled_reason: None,
            report_count: count,
            created_at: Some(t(0.0)),
            updated_at: Some(t(updated)),
            modified_at: None,
            frozen: false,
            cluster_name: None,
            uuid: None,
            forced_down: false,
            last_seen_up: None,
            version: None,
        }
    }

    fn poll(now: f64, rows: Vec<WatchedRow>) -> Poll {
        Poll {
            db_now: t(now),
            rows,
            took: Duration::ZERO,
            time_resolution: 1.0,
        }
    }

    #[test]
    fn first_poll_is_all_new() {
        let p = poll(10.0, vec![row(1, 5, 9.0), row(2, 7, 8.0)]);
        let c = diff(None, &p);
        assert_eq!(c.len(), 2);
        assert!(matches!(&c[0], Change::New { row } if row.id == 1));
        assert!(matches!(&c[1], Change::New { row } if row.id == 2));
    }

    #[test]
    fn heartbeats_admin_new_and_removed() {
        let a = poll(10.0, vec![row(1, 5, 9.0), row(2, 7, 8.0), row(4, 1, 9.0)]);
        let mut disabled = row(2, 7, 8.0);
        disabled.disabled = true;
        disabled.disabled_reason = Some("disk swap".into());
        disabled.modified_at = Some(t(11.0));
        // Row 1 beat twice; its node's clock is 75 s ahead.
        let b = poll(
            12.0,
            vec![row(1, 7, 12.0 + 75.0 - 0.4), disabled, row(3, 1, 11.5)],
        );
        let c = diff(Some(&a), &b);
        assert_eq!(c.len(), 4, "{c:#?}");
        match &c[0] {
            Change::Heartbeat {
                id,
                report_count,
                beats,
                at,
                clock_offset,
            } => {
                assert_eq!((*id, *report_count, *beats, *at), (1, 7, 2, t(12.0)));
                let off = clock_offset.unwrap();
                assert!((off.offset_s - 74.6).abs() < 1e-6, "{off:?}");
                // poll gap 2 s + 1 s column resolution
                assert!((off.error_s - 3.0).abs() < 1e-6, "{off:?}");
                assert!(off.low_s() <= 75.0 && 75.0 <= off.high_s(), "{off:?}");
            }
            other => panic!("{other:?}"),
        }
        match &c[1] {
            Change::Admin {
                id,
                before,
                after,
                modified_at,
            } => {
                assert_eq!(*id, 2);
                assert!(!before.disabled);
                assert!(after.disabled);
                assert_eq!(after.disabled_reason.as_deref(), Some("disk swap"));
                assert_eq!(*modified_at, Some(t(11.0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&c[2], Change::New { row } if row.id == 3));
        assert!(matches!(&c[3], Change::Removed { row } if row.id == 4));
        let ids: Vec<i64> = c.iter().map(Change::id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
    }

    #[test]
    fn a_still_row_changes_nothing_and_a_lower_count_is_a_reset() {
        let a = poll(10.0, vec![row(1, 5, 9.0)]);
        let b = poll(12.0, vec![row(1, 5, 9.0)]);
        assert!(diff(Some(&a), &b).is_empty());
        let c = poll(14.0, vec![row(1, 0, 13.0)]);
        assert_eq!(
            diff(Some(&b), &c),
            vec![Change::CountReset {
                id: 1,
                from: 5,
                to: 0
            }]
        );
    }

    #[test]
    fn nova_stamp_is_last_seen_up_and_forced_down_is_admin() {
        let mut a1 = row(1, 5, 9.0);
        a1.last_seen_up = Some(t(9.0));
        let a = poll(10.0, vec![a1.clone()]);
        let mut b1 = a1.clone();
        b1.report_count = 6;
        b1.last_seen_up = Some(t(11.0));
        b1.updated_at = Some(t(30.0)); // touched by something else; last_seen_up wins
        b1.forced_down = true;
        let b = poll(12.0, vec![b1]);
        let c = diff(Some(&a), &b);
        match &c[0] {
            Change::Heartbeat {
                clock_offset: Some(off),
                ..
            } => assert!((off.offset_s + 1.0).abs() < 1e-6),
            other => panic!("{other:?}"),
        }
        assert!(matches!(&c[1], Change::Admin { after, .. } if after.forced_down));
    }
}
