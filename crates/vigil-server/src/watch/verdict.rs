//! OpenStack's own verdict on a watched row, and the writer's clock offset.
//!
//! Both verdicts are computed as the OpenStack code does, read from the releases the tests run
//! (cinder 29.0.0, nova 34.0.0):
//!
//! - **Cinder** (`cinder/api/v3/services.py`, `ServiceController.index`; cinder 29 has no
//!   `service_is_up` in `cinder/utils.py` any more):
//!   `delta = now - (updated_at or created_at)`, `alive = abs(delta) <= service_down_time`.
//!   `modified_at` changes only the `updated_at` the API *shows* (it is shown instead when
//!   `abs(now - updated_at) >= abs(now - modified_at)`), never the state: an admin change does
//!   not make a dead service look up (bug 1397167's fix; `service_update` in `cinder/db/api.py`
//!   also keeps `updated_at` when `disabled` changes).
//! - **Nova** (`nova/servicegroup/api.py` `service_is_up`, `nova/servicegroup/drivers/db.py`
//!   `is_up`): `forced_down` is down; else `last_heartbeat = last_seen_up or created_at`,
//!   `abs(utcnow() - last_heartbeat) <= service_down_time`.
//!
//! `now` is the API node's `utcnow()` in OpenStack; here it is the database clock read in the
//! same poll, the one clock every OpenStack node's writes are compared with.
//!
//! The `service_down_time` is the one the API process runs with
//! ([`super::WatchConfig::openstack_service_down_time`]). Both projects raise a
//! `service_down_time <= report_interval` to `int(2.5 × report_interval)`, with only a warning
//! in the log ([`rewritten_service_down_time`]), but not in the same place:
//! - Cinder in `Service.basic_config_check` (`cinder/service.py`), in each daemon's process
//!   only: `cinder-api` (a `WSGIService`) keeps the configured figure, so `cinder service-list`
//!   uses it while the schedulers judge each other with the raised one.
//! - Nova in `servicegroup.API.__init__` (`nova/servicegroup/api.py`), with the process's own
//!   `report_interval`: in `nova-api` too, so `openstack compute service list` uses the raised
//!   figure.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::diff::seconds;
use super::model::WatchedRow;
use super::spec::WatchKind;

/// What OpenStack itself shows for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenstackState {
    Up,
    Down,
}

impl OpenstackState {
    /// `up` or `down`, as OpenStack's APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenstackState::Up => "up",
            OpenstackState::Down => "down",
        }
    }
}

/// OpenStack's verdict on `row` at the database time `db_now`, with the watched deployment's
/// `service_down_time` (seconds). A row with neither stamp (never the case in OpenStack's
/// tables, whose `created_at` is always set) is down.
pub fn openstack_state(
    kind: WatchKind,
    row: &WatchedRow,
    db_now: DateTime<Utc>,
    service_down_time: f64,
) -> OpenstackState {
    let last = match kind {
        WatchKind::Cinder => row.updated_at.or(row.created_at),
        WatchKind::Nova => {
            if row.forced_down {
                return OpenstackState::Down;
            }
            row.last_seen_up.or(row.created_at)
        }
    };
    match last {
        Some(last) if seconds(db_now - last).abs() <= service_down_time => OpenstackState::Up,
        _ => OpenstackState::Down,
    }
}

/// The `updated_at` Cinder's API shows for `row`: `modified_at` when it is at least as close
/// to `db_now` as `updated_at` is (as `ServiceController.index` does), else `updated_at`.
/// Nova shows `updated_at` as stored.
pub fn shown_updated_at(
    kind: WatchKind,
    row: &WatchedRow,
    db_now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let updated = row.updated_at;
    if kind == WatchKind::Cinder {
        if let Some(modified) = row.modified_at {
            let base = updated.or(row.created_at);
            let delta = base.map_or(f64::INFINITY, |b| seconds(db_now - b).abs());
            if delta >= seconds(db_now - modified).abs() {
                return Some(modified);
            }
        }
    }
    updated
}

/// The `service_down_time` a Cinder or Nova daemon with `report_interval` really runs with:
/// OpenStack rewrites a `service_down_time <= report_interval` to `int(2.5 × report_interval)`
/// and says so only in a warning of the process's log (Cinder's `Service.basic_config_check`,
/// Nova's `servicegroup.API.__init__`). `None` when no rewrite happens.
pub fn rewritten_service_down_time(service_down_time: f64, report_interval: f64) -> Option<f64> {
    (report_interval > 0.0 && service_down_time <= report_interval)
        .then(|| (report_interval * 2.5).trunc())
}

/// A writer's clock offset: the stamp it wrote with its own clock minus the database clock at
/// the poll that first saw the write. Positive: the writer's clock is ahead.
///
/// The write happened between the previous poll and this one, so the stamp is compared with a
/// clock up to one poll gap later than the write, and the stamp itself is truncated to the
/// column's resolution: the true offset lies within `offset_s ± error_s`, `error_s` being the
/// poll gap plus the resolution (the bound; the exact interval is
/// [`ClockOffset::low_s`]..[`ClockOffset::high_s`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockOffset {
    /// Seconds: stamp − database clock at the poll.
    pub offset_s: f64,
    /// Seconds: poll gap + column resolution.
    pub error_s: f64,
    /// Seconds: the gap between the two polls' database clocks (0 for a first poll).
    pub gap_s: f64,
    /// Seconds: the resolution of the stamp's column.
    pub resolution_s: f64,
}

impl ClockOffset {
    /// The offset of a `stamp` first seen by a poll at `db_now`, `gap_s` after the previous one.
    pub fn measure(
        stamp: DateTime<Utc>,
        db_now: DateTime<Utc>,
        gap_s: f64,
        resolution_s: f64,
    ) -> ClockOffset {
        ClockOffset {
            offset_s: seconds(stamp - db_now),
            error_s: gap_s + resolution_s,
            gap_s,
            resolution_s,
        }
    }

    /// The least the true offset can be: the stamp lost up to one resolution step.
    pub fn low_s(&self) -> f64 {
        self.offset_s - self.resolution_s
    }

    /// The most the true offset can be: the write was up to one gap before the poll, and the
    /// stamp lost up to one resolution step.
    pub fn high_s(&self) -> f64 {
        self.offset_s + self.gap_s + self.resolution_s
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn row() -> WatchedRow {
        WatchedRow {
            id: 1,
            host: "sched-b".into(),
            binary: "cinder-scheduler".into(),
            topic: None,
            availability_zone: None,
            disabled: false,
            disabled_reason: None,
            report_count: 3,
            created_at: Some(t(0)),
            updated_at: Some(t(100)),
            modified_at: None,
            frozen: false,
            cluster_name: None,
            uuid: None,
            forced_down: false,
            last_seen_up: None,
            version: None,
        }
    }

    #[test]
    fn cinder_rule_is_abs_of_updated_at() {
        let r = row();
        let up = |now| openstack_state(WatchKind::Cinder, &r, t(now), 10.0);
        assert_eq!(up(110), OpenstackState::Up);
        assert_eq!(up(111), OpenstackState::Down);
        // a stamp in the future within the window is up, beyond it down (a clock ahead)
        assert_eq!(up(90), OpenstackState::Up);
        assert_eq!(up(25), OpenstackState::Down);
        // no updated_at: created_at
        let mut fresh = row();
        fresh.updated_at = None;
        assert_eq!(
            openstack_state(WatchKind::Cinder, &fresh, t(5), 10.0),
            OpenstackState::Up
        );
    }

    #[test]
    fn cinder_modified_at_is_shown_but_never_revives() {
        let mut r = row();
        r.modified_at = Some(t(200));
        assert_eq!(
            openstack_state(WatchKind::Cinder, &r, t(201), 10.0),
            OpenstackState::Down
        );
        assert_eq!(
            shown_updated_at(WatchKind::Cinder, &r, t(201)),
            Some(t(200))
        );
        assert_eq!(
            shown_updated_at(WatchKind::Cinder, &r, t(120)),
            Some(t(100))
        );
        assert_eq!(shown_updated_at(WatchKind::Nova, &r, t(201)), Some(t(100)));
    }

    #[test]
    fn nova_rule_is_last_seen_up_and_forced_down() {
        let mut r = row();
        r.updated_at = Some(t(500)); // nova ignores updated_at
        r.last_seen_up = Some(t(100));
        assert_eq!(
            openstack_state(WatchKind::Nova, &r, t(105), 10.0),
            OpenstackState::Up
        );
        assert_eq!(
            openstack_state(WatchKind::Nova, &r, t(500), 10.0),
            OpenstackState::Down
        );
        r.forced_down = true;
        assert_eq!(
            openstack_state(WatchKind::Nova, &r, t(105), 10.0),
            OpenstackState::Down
        );
        r.forced_down = false;
        r.last_seen_up = None;
        assert_eq!(
            openstack_state(WatchKind::Nova, &r, t(5), 10.0),
            OpenstackState::Up
        );
    }

    #[test]
    fn the_silent_rewrite() {
        assert_eq!(rewritten_service_down_time(10.0, 2.0), None);
        assert_eq!(rewritten_service_down_time(10.0, 10.0), Some(25.0));
        assert_eq!(rewritten_service_down_time(60.0, 75.0), Some(187.0));
    }

    #[test]
    fn offset_bounds() {
        let o = ClockOffset::measure(t(175), t(100), 2.0, 1.0);
        assert_eq!(o.offset_s, 75.0);
        assert_eq!(o.error_s, 3.0);
        assert_eq!((o.low_s(), o.high_s()), (74.0, 78.0));
    }
}
