//! The doctor: answers "why is this service down?" for every service, at any time.
//!
//! The seed ends with a manual hunt for a service shown down whose log shows no error: (1) is
//! `report_interval` larger than `service_down_time`, (2) is the service node's clock off by more
//! than `service_down_time - report_interval`, (3) is `report_state` really called on time. The
//! server already holds every fact those steps need (the declared interval, each beat's
//! `sent_at`, the gaps between beats, the reporter's own overrun reports, the history), so
//! [`diagnose`] runs the three steps and the other known causes (an admin's change, a crash loop,
//! two processes reporting as one) as a pure function of those facts, and [`App::diagnose`]
//! gathers them for one service.
//!
//! Every check yields exactly one finding, `ok` included, so a healthy service shows what was
//! checked and a client can tell "checked and fine" from "not checked".
//!
//! # Layout
//! - this file: the facts one diagnosis reads ([`Inputs`]), the order of the checks, and the
//!   start-up and registration logs of the interval check.
//! - `words`: the findings builder (`ok`, `warning`, `error`, then `because` and `fix`) and
//!   how numbers and times are written for people.
//! - one file per check: `interval`, `clock`, `punctuality`, `heartbeat`, `health` (what
//!   the service says of itself), `flapping`, `reach` (held unreachable in a mass failure,
//!   or coming back after a down), `maintenance` (a window covers it), `admin` (forced down,
//!   disabled), `restarts`, `duplicate`.

use chrono::{DateTime, TimeDelta, Utc};
use vigil_proto::{Finding, Severity};

use crate::config::Config;
use crate::model::{Event, Health, RegistrationReason};
use crate::registry::seconds;
use crate::stats::BeatStats;
use crate::store::{EventKind, ServiceRecord};
use crate::watch::{rewritten_service_down_time, WatchKind};

mod admin;
mod clock;
mod duplicate;
mod flapping;
mod health;
mod heartbeat;
mod interval;
mod maintenance;
mod punctuality;
mod reach;
mod restarts;
#[cfg(test)]
mod tests;
mod words;

use admin::{disabled, forced_down};
use clock::clock;
use duplicate::duplicate;
use flapping::flapping;
use health::health;
use heartbeat::heartbeat;
pub use interval::interval;
use interval::openstack_interval;
use maintenance::maintenance;
use punctuality::punctuality;
use reach::reach;
pub use reach::Reach;
use restarts::restarts;
use words::*;

/// How far back restarts and `sent_at` regressions count: long enough to see a crash loop whose
/// supervisor backs off for minutes, short enough that a past incident stops being reported.
pub const RECENT: TimeDelta = TimeDelta::minutes(15);

/// Restarts within [`RECENT`] from which a service counts as crash-looping: one is a deploy,
/// two a deploy and a rollback, three is a pattern.
pub const CRASH_LOOP_RESTARTS: usize = 3;

/// A gap longer than this many report intervals counts as a missed beat.
pub const MISSED_FACTOR: f64 = 1.5;

/// Clock offsets up to this many seconds are harmless everywhere; beyond it logs on the host
/// stop lining up with other hosts' and certificate and token lifetimes go wrong.
pub const CLOCK_WARNING_S: f64 = 1.0;

/// Everything one diagnosis looks at, gathered by `App::diagnose`.
pub struct Inputs<'a> {
    pub record: &'a ServiceRecord,
    pub stats: &'a BeatStats,
    /// The service's history that the checks need (its registrations within [`RECENT`], its
    /// latest `disabled` and `forced_down` events), or why it could not be read.
    pub history: Result<&'a [Event], &'a str>,
    pub service_down_time: f64,
    pub now: DateTime<Utc>,
    /// For a row of a watched OpenStack database: what the checks say in OpenStack's terms.
    pub openstack: Option<Openstack>,
    /// Its up/down transitions within the flapping window, and the rule.
    pub recent_transitions: usize,
    pub flapping: crate::flapping::FlapRule,
    /// Held `unreachable` in a mass failure, or coming back after a down.
    pub reach: Reach,
    /// The maintenance window that covers it now, if any.
    pub maintenance: Option<&'a crate::model::MaintenanceWindow>,
}

/// The watched OpenStack a service is a row of.
pub struct Openstack {
    pub kind: WatchKind,
    /// The `service_down_time` that OpenStack runs with (the watch's setting).
    pub service_down_time: f64,
}

/// Runs every check; one finding each, in the order of the seed's steps, then the other causes.
pub fn diagnose(inputs: &Inputs) -> Vec<Finding> {
    vec![
        match &inputs.openstack {
            None => interval(inputs.record.report_interval, inputs.service_down_time),
            Some(openstack) => openstack_interval(inputs.record.report_interval, openstack),
        },
        clock(inputs),
        punctuality(inputs),
        heartbeat(inputs),
        health(inputs),
        flapping(inputs),
        reach(inputs),
        maintenance(inputs),
        forced_down(inputs),
        disabled(inputs),
        restarts(inputs),
        duplicate(inputs),
    ]
}

/// Logs what [`interval`] says of the server's `service_down_time` against Cinder's default
/// `report_interval`, once at start-up: a misfit found here would otherwise surface only as
/// services flapping.
pub fn log_config(config: &Config) {
    let mut finding = interval(
        vigil_proto::DEFAULT_REPORT_INTERVAL,
        config.service_down_time,
    );
    // About a service that may never register: a warning, not an error; each service that
    // does register is judged with its own interval (`log_registration`).
    if finding.severity == Severity::Error {
        finding.severity = Severity::Warning;
    }
    log_interval(
        &finding,
        "a service with Cinder's default report_interval (10 s)",
    );
}

/// Logs what [`interval`] says of a service that has just registered, when it is not `ok`.
pub fn log_registration(record: &ServiceRecord, service_down_time: f64) {
    let finding = interval(record.report_interval, service_down_time);
    let subject = format!("service {} on {}", record.binary, record.host);
    log_interval(&finding, &subject);
}

fn log_interval(finding: &Finding, subject: &str) {
    match finding.severity {
        Severity::Ok => {}
        Severity::Warning => tracing::warn!(
            remedy = %finding.remedy,
            "{subject}: {}", finding.summary
        ),
        Severity::Error => tracing::error!(
            remedy = %finding.remedy,
            "{subject}: {}", finding.summary
        ),
    }
}
