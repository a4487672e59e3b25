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

use chrono::{DateTime, TimeDelta, Utc};
use vigil_proto::{Diagnosis, Finding, Severity};

use crate::app::{App, AppError};
use crate::config::Config;
use crate::model::{Event, RegistrationReason};
use crate::registry::seconds;
use crate::stats::BeatStats;
use crate::store::{EventFilter, EventKind, ServiceRecord};

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

/// Everything one diagnosis looks at, gathered by [`App::diagnose`].
pub struct Inputs<'a> {
    pub record: &'a ServiceRecord,
    pub stats: &'a BeatStats,
    /// The service's history that the checks need (its registrations within [`RECENT`], its
    /// latest `disabled` and `forced_down` events), or why it could not be read.
    pub history: Result<&'a [Event], &'a str>,
    pub service_down_time: f64,
    pub now: DateTime<Utc>,
}

/// Runs every check; one finding each, in the order of the seed's steps, then the other causes.
pub fn diagnose(inputs: &Inputs) -> Vec<Finding> {
    vec![
        interval(inputs.record.report_interval, inputs.service_down_time),
        clock(inputs),
        punctuality(inputs),
        heartbeat(inputs),
        forced_down(inputs),
        disabled(inputs),
        restarts(inputs),
        duplicate(inputs),
    ]
}

fn finding(
    check: &str,
    severity: Severity,
    summary: String,
    detail: String,
    remedy: String,
) -> Finding {
    Finding {
        check: check.into(),
        severity,
        summary,
        detail,
        remedy,
    }
}

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
        finding(
            "interval",
            Severity::Error,
            format!(
                "report_interval {ri} s is not shorter than service_down_time {sdt} s: this \
                 service can never stay up"
            ),
            format!(
                "a heartbeat keeps a service up for service_down_time; with heartbeats every \
                 {ri} s it is shown down before the next one arrives, however healthy it is. \
                 Cinder silently raises service_down_time to 2.5 x report_interval in this case; \
                 Vigil does not rewrite configuration behind your back"
            ),
            remedy,
        )
    } else if service_down_time < 3.0 * report_interval {
        finding(
            "interval",
            Severity::Warning,
            format!(
                "service_down_time {sdt} s is less than 3 x report_interval {ri} s: one late or \
                 lost heartbeat flips it down"
            ),
            format!(
                "only {:.1} heartbeats fit in service_down_time, so a single beat that is lost or \
                 late makes the service down until the next one arrives",
                service_down_time / report_interval
            ),
            remedy,
        )
    } else {
        finding(
            "interval",
            Severity::Ok,
            format!(
                "report_interval {ri} s fits {:.0} times in service_down_time {sdt} s",
                (service_down_time / report_interval).floor()
            ),
            "a service must miss several heartbeats in a row to be shown down".into(),
            String::new(),
        )
    }
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

/// The seed's step 2. Vigil decides liveness with its own clock, so a skewed reporter is not
/// shown down here; the finding says what the skew would do under Cinder's rule and elsewhere.
fn clock(inputs: &Inputs) -> Finding {
    let Some(offset) = inputs.stats.clock_offset_s else {
        return finding(
            "clock",
            Severity::Ok,
            "no clock reading yet: no heartbeat with sent_at since the server started".into(),
            "each heartbeat's sent_at, compared with its receipt time, measures the reporter's \
             clock offset"
                .into(),
            String::new(),
        );
    };
    let error = inputs.stats.clock_offset_error_s.unwrap_or(0.0);
    // The offset is known only to within the round trip; judge by the least it can be.
    let least = (offset.abs() - error).max(0.0);
    let tolerance = (inputs.service_down_time - inputs.record.report_interval).max(0.0);
    let direction = if offset >= 0.0 { "ahead of" } else { "behind" };
    let measured = format!(
        "clock of host {} is {} s {direction} the server's (to within {} ms)",
        inputs.record.host,
        secs(offset.abs()),
        (error * 1000.0).ceil().max(1.0)
    );
    let unaffected = "Vigil decides liveness with its own clock only, so this service's state \
                      here is unaffected";
    let remedy = format!(
        "synchronise the clock of host {} with NTP (chronyc tracking, timedatectl status)",
        inputs.record.host
    );
    if least > tolerance {
        finding(
            "clock",
            Severity::Error,
            format!("{measured}: under Cinder's rule this service would be shown down"),
            format!(
                "Cinder compares updated_at written with the service node's clock against the \
                 API node's clock and tolerates at most service_down_time - report_interval = \
                 {} s; {unaffected}, but anything else that trusts this host's clock does not",
                secs(tolerance)
            ),
            remedy,
        )
    } else if least > CLOCK_WARNING_S {
        finding(
            "clock",
            Severity::Warning,
            format!("{measured}: its logs and certificate checks go wrong"),
            format!(
                "within Cinder's tolerance of {} s, and {unaffected}; but its log timestamps do \
                 not line up with other hosts' and certificate and token lifetimes are judged \
                 wrongly",
                secs(tolerance)
            ),
            remedy,
        )
    } else {
        finding(
            "clock",
            Severity::Ok,
            format!(
                "clock within {} s of the server's",
                secs(offset.abs().max(error))
            ),
            format!("{unaffected} in any case"),
            String::new(),
        )
    }
}

/// The seed's step 3, for beats that arrive: are they on time? Beats that stopped are
/// [`heartbeat`]'s; a service can be late without being dead, and the remedies differ.
fn punctuality(inputs: &Inputs) -> Finding {
    let stats = inputs.stats;
    let ri = inputs.record.report_interval;
    let sdt = inputs.service_down_time;
    let mut gaps = stats.gaps();
    let overrun = stats.last_overrun_s;
    // A few milliseconds over the interval is scheduling noise, not a stalled loop.
    let overran = overrun > 0.1 * ri;
    if gaps.len() < 2 && !overran {
        return finding(
            "punctuality",
            Severity::Ok,
            format!(
                "too few heartbeats to judge ({} gaps since the server started)",
                gaps.len()
            ),
            String::new(),
            String::new(),
        );
    }
    gaps.sort_by(f64::total_cmp);
    let n = gaps.len();
    let mean = gaps.iter().sum::<f64>() / n.max(1) as f64;
    let p99 = gaps
        .get(((0.99 * n as f64).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let max = gaps.last().copied().unwrap_or(0.0);
    let missed = gaps.iter().filter(|g| **g > MISSED_FACTOR * ri).count();
    // A gap over service_down_time that was not late is the interval's fault, not lateness.
    let down_gaps = gaps
        .iter()
        .filter(|g| **g > sdt && **g > MISSED_FACTOR * ri)
        .count();
    let shape = format!(
        "gaps mean {} s, p99 {} s, max {} s for report_interval {} s over the last {n} gaps; \
         {missed} longer than {MISSED_FACTOR} x report_interval",
        secs(mean),
        secs(p99),
        secs(max),
        secs(ri)
    );
    let severity = if down_gaps >= 2 {
        Severity::Error
    } else if missed >= 2 || down_gaps == 1 || overran {
        Severity::Warning
    } else {
        Severity::Ok
    };
    if severity == Severity::Ok {
        return finding(
            "punctuality",
            Severity::Ok,
            format!("beats arrive on time: {shape}"),
            String::new(),
            String::new(),
        );
    }
    let mut detail = vec![shape];
    if down_gaps > 0 {
        let counted = if down_gaps == 1 {
            "1 gap was".to_string()
        } else {
            format!("{down_gaps} gaps were")
        };
        detail.push(format!(
            "{counted} longer than service_down_time {} s: the service was shown down until the \
             beat that ended it",
            secs(sdt)
        ));
    }
    if stats.max_overrun_s > 0.0 {
        detail.push(format!(
            "the reporter says its last run outlasted report_interval by {} s (at most {} s \
             since the server started)",
            secs(overrun),
            secs(stats.max_overrun_s)
        ));
    }
    let health_failed = stats
        .last_error
        .as_ref()
        .is_some_and(|(error, _)| error.starts_with("health check failed"));
    if let Some((error, at)) = &stats.last_error {
        detail.push(format!(
            "the reporter's last error ({} s ago): {error}",
            secs(seconds(inputs.now - *at))
        ));
    }
    let cause = if overran {
        "agent overloaded or blocked: the reporter's own loop ran late"
    } else if health_failed {
        "the service's health check failed, so the reporter skipped beats"
    } else {
        "the reporter says it ran on time, so beats were delayed or lost on the way (network, \
         proxy) or the server was slow to take them"
    };
    let summary = format!(
        "beats arrive but late: gaps p99 {} s for report_interval {} s; {cause}",
        secs(p99),
        secs(ri)
    );
    let remedy = if health_failed {
        "find out why the service's health check fails (see the reporter's last error)"
    } else if overran {
        "find what blocks or starves the service's process (a long blocking call, CPU \
         starvation, a slow health check); run the reporter on its own thread (its default \
         start()) so the application's work cannot delay it"
    } else {
        "check the network path and any proxy between the service's host and this server, and \
         the server's own load"
    };
    finding(
        "punctuality",
        severity,
        summary,
        detail.join("; "),
        remedy.into(),
    )
}

/// Beats that stopped, or never started: the service is silent for longer than
/// `service_down_time`.
fn heartbeat(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    let sdt = inputs.service_down_time;
    let Some(last) = record.updated_at else {
        let age = seconds(inputs.now - record.created_at);
        if age <= sdt {
            return finding(
                "heartbeat",
                Severity::Ok,
                format!(
                    "registered {} s ago; no heartbeat yet, the first is due after {} s",
                    secs(age),
                    secs(record.report_interval)
                ),
                String::new(),
                String::new(),
            );
        }
        return finding(
            "heartbeat",
            Severity::Error,
            format!("never heartbeated since registration {} s ago", secs(age)),
            "the reporter registered but no heartbeat ever arrived: it may have died right after \
             registering, or its heartbeats go elsewhere or are refused on the way"
                .into(),
            format!(
                "check the process on {} and its log for heartbeat errors; check that it reports \
                 to this server's URL",
                record.host
            ),
        );
    };
    let age = seconds(inputs.now - last);
    if age <= sdt {
        return finding(
            "heartbeat",
            Severity::Ok,
            format!("last heartbeat {} s ago", secs(age)),
            String::new(),
            String::new(),
        );
    }
    if age <= MISSED_FACTOR * record.report_interval {
        return finding(
            "heartbeat",
            Severity::Ok,
            format!(
                "last heartbeat {} s ago, and the next is not due yet at report_interval {} s",
                secs(age),
                secs(record.report_interval)
            ),
            "the beats have not stopped; the service is down because its interval is longer \
             than service_down_time (see the interval finding)"
                .into(),
            String::new(),
        );
    }
    let gaps = inputs.stats.gaps();
    let before = match gaps.iter().copied().reduce(f64::max) {
        None => "no earlier gaps known since the server started".to_string(),
        Some(max) if max <= MISSED_FACTOR * record.report_interval => {
            "gaps were regular before".to_string()
        }
        Some(max) => format!("gaps were already irregular before (up to {} s)", secs(max)),
    };
    let mut detail = format!(
        "the last heartbeat arrived at {} and service_down_time is {} s",
        stamp(last),
        secs(sdt)
    );
    if let Some((error, at)) = &inputs.stats.last_error {
        detail.push_str(&format!(
            "; the reporter's last error ({}): {error}",
            stamp(*at)
        ));
    }
    finding(
        "heartbeat",
        Severity::Error,
        format!(
            "no heartbeat for {} s; {before}; process stopped, host down or network cut",
            secs(age)
        ),
        detail,
        format!(
            "check that the process runs on {} (its supervisor, its log), that the host is up, \
             and that it can reach this server; a restarted reporter registers again by itself",
            record.host
        ),
    )
}

/// Forced down by an admin (fencing): down whatever the heartbeats say.
fn forced_down(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    if !record.forced_down {
        return finding(
            "forced_down",
            Severity::Ok,
            "not forced down".into(),
            String::new(),
            String::new(),
        );
    }
    let when = latest(inputs, EventKind::ForcedDown);
    finding(
        "forced_down",
        Severity::Error,
        format!(
            "forced down by an admin{}: shown down whatever its heartbeats say",
            when.as_deref().unwrap_or("")
        ),
        "forced down is for fencing (Nova's forced_down): something declared the host dead, and \
         heartbeats do not count until it is lifted"
            .into(),
        format!(
            "once the host is fenced and repaired: vigil service force-down {} {} --unset",
            record.host, record.binary
        ),
    )
}

/// Disabled by an admin: still watched, but given no work.
fn disabled(inputs: &Inputs) -> Finding {
    let record = inputs.record;
    if !record.disabled {
        return finding(
            "disabled",
            Severity::Ok,
            "enabled".into(),
            String::new(),
            String::new(),
        );
    }
    let when = latest(inputs, EventKind::Disabled);
    let reason = record
        .disabled_reason
        .as_deref()
        .map_or_else(|| "no reason given".to_string(), |r| format!("reason: {r}"));
    finding(
        "disabled",
        Severity::Warning,
        format!(
            "disabled by an admin{} ({reason})",
            when.as_deref().unwrap_or("")
        ),
        "its status is disabled, so schedulers send it no work; its state (up or down) still \
         follows its heartbeats"
            .into(),
        format!(
            "when the reason no longer holds: vigil service enable {} {}",
            record.host, record.binary
        ),
    )
}

/// A crash loop: every start of a reporter registers, and each registration is in the history.
fn restarts(inputs: &Inputs) -> Finding {
    let history = match inputs.history {
        Ok(history) => history,
        Err(reason) => return history_unavailable("restarts", reason),
    };
    let since = inputs.now - RECENT;
    let starts: Vec<&Event> = history
        .iter()
        .filter(|e| {
            e.kind == EventKind::Registered
                && e.reason.as_deref().and_then(RegistrationReason::parse)
                    == Some(RegistrationReason::StartedAgain)
                && e.at >= since
        })
        .collect();
    let window = RECENT.num_minutes();
    match starts.len() {
        0 => finding(
            "restarts",
            Severity::Ok,
            format!("no restart in the last {window} min"),
            String::new(),
            String::new(),
        ),
        n if n < CRASH_LOOP_RESTARTS => finding(
            "restarts",
            Severity::Ok,
            format!("started again {} in the last {window} min", times(n)),
            "a deploy or a manual restart; not a pattern".into(),
            String::new(),
        ),
        n => {
            let first = starts.iter().map(|e| e.at).min().unwrap_or(inputs.now);
            let last = starts.iter().map(|e| e.at).max().unwrap_or(inputs.now);
            finding(
                "restarts",
                Severity::Error,
                format!(
                    "registered again {} in the last {window} min: the process is in a crash \
                     loop",
                    times(n)
                ),
                format!(
                    "each start of a reporter registers; {n} starts between {} and {}: the \
                     process probably crashes and its supervisor starts it again",
                    stamp(first),
                    stamp(last)
                ),
                format!(
                    "read the log of {} on {} and of its supervisor (journalctl, kubectl \
                     describe pod) around those times for the crash",
                    inputs.record.binary, inputs.record.host
                ),
            )
        }
    }
}

/// Two processes reporting as one (host, binary): the service looks alive as long as either
/// beats, so one of them can be dead unnoticed.
fn duplicate(inputs: &Inputs) -> Finding {
    let stats = inputs.stats;
    let ri = inputs.record.report_interval;
    let recent_regressions = stats
        .last_regression_at
        .is_some_and(|at| at >= inputs.now - RECENT);
    let gaps = stats.gaps();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    // Eight gaps average out a burst after a stall, which the loop follows with a run at once.
    let too_often = gaps.len() >= 8 && mean < 0.6 * ri;
    let remedy = format!(
        "find the second process reporting as {} on {} (a copy left over after a failover, a \
         cloned VM, a container started twice) and stop it or give it its own host name",
        inputs.record.binary, inputs.record.host
    );
    let mut evidence = Vec::new();
    let mut severity = Severity::Ok;
    if recent_regressions {
        evidence.push(format!(
            "sent_at went backwards {} since the server started, the last at {}: one \
             process's clock cannot do that unless it is stepped back",
            times(stats.sent_at_regressions as usize),
            stamp(stats.last_regression_at.unwrap_or(inputs.now))
        ));
        severity = if stats.sent_at_regressions >= 2 {
            Severity::Error
        } else {
            Severity::Warning
        };
    }
    if too_often {
        evidence.push(format!(
            "beats arrive {:.1} x as often as report_interval {} s says (mean gap {} s)",
            ri / mean,
            secs(ri),
            secs(mean)
        ));
        severity = severity.max(Severity::Warning);
    }
    if severity == Severity::Ok {
        return finding(
            "duplicate",
            Severity::Ok,
            "one reporter: sent_at never went backwards and beats arrive at the declared rate"
                .into(),
            String::new(),
            String::new(),
        );
    }
    let summary = if severity == Severity::Error {
        format!(
            "two processes report as {} on {}: their sent_at series interleave",
            inputs.record.binary, inputs.record.host
        )
    } else {
        format!(
            "maybe two processes report as {} on {}",
            inputs.record.binary, inputs.record.host
        )
    };
    finding(
        "duplicate",
        severity,
        summary,
        format!(
            "{}; while either beats the service looks alive, so one of them can be dead unseen",
            evidence.join("; ")
        ),
        remedy,
    )
}

/// A finding for a check that needs the history when the database cannot give it.
fn history_unavailable(check: &str, reason: &str) -> Finding {
    finding(
        check,
        Severity::Warning,
        "cannot read the service's history".into(),
        reason.into(),
        "check the server's database (GET /readyz)".into(),
    )
}

/// " at <time>" of the latest event of `kind`, for a summary; `None` when not in the history.
fn latest(inputs: &Inputs, kind: EventKind) -> Option<String> {
    let history = inputs.history.ok()?;
    history
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.at)
        .max()
        .map(|at| format!(" at {}", stamp(at)))
}

/// Seconds for people: whole seconds from 10 s up, else at most two decimals.
fn secs(value: f64) -> String {
    if value.abs() >= 10.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A count of occurrences for people: "once", "twice", "3 times".
fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// A time for people, to the second, in UTC.
fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

impl App {
    /// Gathers one service's facts and runs [`diagnose`] on them. A history that cannot be read
    /// degrades the checks that need it instead of failing the whole diagnosis: the doctor is
    /// needed most when something is broken.
    pub async fn diagnose(&self, id: i64) -> Result<Diagnosis, AppError> {
        let entry = self.entry(id).await?;
        let now = self.clock.now();
        let (service, record, stats) = {
            let slot = entry.lock();
            (
                self.registry.view(&slot, now),
                slot.record.clone(),
                slot.stats.clone(),
            )
        };
        let history = self.doctor_history(&record, now).await;
        let findings = diagnose(&Inputs {
            record: &record,
            stats: &stats,
            history: history.as_deref().map_err(String::as_str),
            service_down_time: self.registry.liveness.service_down_time_s(),
            now,
        });
        Ok(Diagnosis { service, findings })
    }

    /// The events the checks read: registrations within [`RECENT`], and the latest `disabled`
    /// and `forced_down` when the service is so (they may be older than any window).
    async fn doctor_history(
        &self,
        record: &ServiceRecord,
        now: DateTime<Utc>,
    ) -> Result<Vec<Event>, String> {
        let of = |kind: EventKind, since: Option<DateTime<Utc>>, limit: i64| EventFilter {
            service_id: Some(record.id),
            kind: Some(kind),
            since,
            limit,
            ..EventFilter::default()
        };
        let mut filters = vec![of(EventKind::Registered, Some(now - RECENT), 100)];
        if record.disabled {
            filters.push(of(EventKind::Disabled, None, 1));
        }
        if record.forced_down {
            filters.push(of(EventKind::ForcedDown, None, 1));
        }
        let mut history = Vec::new();
        for filter in filters {
            let events = self
                .store
                .list_events(&filter)
                .await
                .map_err(|e| e.to_string())?;
            history.extend(events);
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Beat;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    fn record(report_interval: f64) -> ServiceRecord {
        ServiceRecord {
            id: 1,
            host: "node-1".into(),
            binary: "cinder-volume".into(),
            topic: None,
            zone: "nova".into(),
            disabled: false,
            disabled_reason: None,
            forced_down: false,
            frozen: false,
            report_count: 0,
            report_interval,
            version: None,
            created_at: t(0),
            updated_at: None,
            modified_at: None,
            row_version: 0,
        }
    }

    /// Beats received at `times` (ms), each sent with the matching `sent_at` (ms).
    fn beats(record: &mut ServiceRecord, times: &[i64], sent: &[i64], overrun: f64) -> BeatStats {
        let mut stats = BeatStats::default();
        for (at, sent_at) in times.iter().zip(sent) {
            let beat = Beat {
                sent_at: Some(t(*sent_at)),
                last_rtt_s: Some(0.002),
                overrun_s: Some(overrun),
                ..Beat::default()
            };
            stats.record_beat(record.updated_at, t(*at), &beat);
            record.updated_at = Some(t(*at));
        }
        stats
    }

    fn run(record: &ServiceRecord, stats: &BeatStats, now: i64) -> Vec<Finding> {
        diagnose(&Inputs {
            record,
            stats,
            history: Ok(&[]),
            service_down_time: 60.0,
            now: t(now),
        })
    }

    fn check<'a>(findings: &'a [Finding], name: &str) -> &'a Finding {
        findings.iter().find(|f| f.check == name).unwrap()
    }

    fn every(step_ms: i64, n: i64) -> Vec<i64> {
        (1..=n).map(|i| i * step_ms).collect()
    }

    #[test]
    fn interval_thresholds() {
        assert_eq!(interval(60.0, 60.0).severity, Severity::Error);
        assert_eq!(interval(25.0, 60.0).severity, Severity::Warning);
        assert_eq!(interval(20.0, 60.0).severity, Severity::Ok);
        assert!(interval(90.0, 60.0).remedy.contains("at least 270 s"));
    }

    #[test]
    fn a_regular_service_is_all_ok() {
        let mut r = record(10.0);
        let times = every(10_000, 20);
        let stats = beats(&mut r, &times, &times, 0.0);
        let findings = run(&r, &stats, 200_500);
        assert_eq!(findings.len(), 8);
        for f in &findings {
            assert_eq!(f.severity, Severity::Ok, "{f:?}");
        }
    }

    #[test]
    fn stopped_is_told_apart_from_late() {
        let mut r = record(10.0);
        let times = every(10_000, 10);
        let stats = beats(&mut r, &times, &times, 0.0);
        let findings = run(&r, &stats, 173_000);
        let silent = check(&findings, "heartbeat");
        assert_eq!(silent.severity, Severity::Error);
        assert!(
            silent
                .summary
                .starts_with("no heartbeat for 73 s; gaps were regular before"),
            "{}",
            silent.summary
        );
        assert_eq!(check(&findings, "punctuality").severity, Severity::Ok);

        let mut r = record(10.0);
        let times = every(40_000, 10);
        let stats = beats(&mut r, &times, &times, 30.0);
        let findings = run(&r, &stats, 400_100);
        let late = check(&findings, "punctuality");
        assert_eq!(late.severity, Severity::Warning);
        assert!(
            late.summary.contains("agent overloaded or blocked"),
            "{}",
            late.summary
        );
        assert_eq!(check(&findings, "heartbeat").severity, Severity::Ok);
    }

    #[test]
    fn gaps_over_service_down_time_are_flapping() {
        let mut r = record(10.0);
        let times = every(70_000, 5);
        let stats = beats(&mut r, &times, &times, 0.0);
        let late = check(&run(&r, &stats, 350_100), "punctuality").clone();
        assert_eq!(late.severity, Severity::Error);
        assert!(late.summary.contains("on the way"), "{}", late.summary);
    }

    #[test]
    fn an_interval_too_long_is_not_blamed_on_the_beats() {
        let mut r = record(90.0);
        let times = every(90_000, 5);
        let stats = beats(&mut r, &times, &times, 0.0);
        let findings = run(&r, &stats, 450_000 + 75_000);
        assert_eq!(check(&findings, "interval").severity, Severity::Error);
        assert_eq!(check(&findings, "punctuality").severity, Severity::Ok);
        let silent = check(&findings, "heartbeat");
        assert_eq!(silent.severity, Severity::Ok);
        assert!(silent.summary.contains("not due yet"), "{}", silent.summary);
    }

    #[test]
    fn clock_thresholds() {
        for (skew, expected) in [
            (90_000, Severity::Error),
            (-90_000, Severity::Error),
            (30_000, Severity::Warning),
            (500, Severity::Ok),
        ] {
            let mut r = record(10.0);
            let times = every(10_000, 3);
            let sent: Vec<i64> = times.iter().map(|at| at + skew).collect();
            let stats = beats(&mut r, &times, &sent, 0.0);
            let found = check(&run(&r, &stats, 30_100), "clock").clone();
            assert_eq!(found.severity, expected, "{skew}: {found:?}");
        }
    }

    #[test]
    fn interleaved_sent_at_is_a_duplicate() {
        let mut r = record(10.0);
        let times = every(5_000, 10);
        let sent: Vec<i64> = times
            .iter()
            .enumerate()
            .map(|(i, at)| if i % 2 == 0 { *at } else { at - 8_000 })
            .collect();
        let stats = beats(&mut r, &times, &sent, 0.0);
        let found = check(&run(&r, &stats, 50_100), "duplicate").clone();
        assert_eq!(found.severity, Severity::Error);
        assert!(found.detail.contains("2.0 x as often"), "{}", found.detail);
    }

    #[test]
    fn restarts_count_only_recent_starts_again() {
        let event = |at: DateTime<Utc>, reason: &str| Event {
            id: 0,
            service_id: 1,
            host: "node-1".into(),
            binary: "cinder-volume".into(),
            kind: EventKind::Registered,
            at,
            reason: Some(reason.into()),
            last_seen: None,
            threshold_s: None,
        };
        let now = t(3_600_000);
        let mut history = vec![
            event(t(0), RegistrationReason::NewService.as_str()),
            event(t(1_000), RegistrationReason::StartedAgain.as_str()),
        ];
        let r = record(10.0);
        let stats = BeatStats::default();
        let restarts_with = |history: &[Event]| {
            restarts(&Inputs {
                record: &r,
                stats: &stats,
                history: Ok(history),
                service_down_time: 60.0,
                now,
            })
            .severity
        };
        for minute in 0..3 {
            history.push(event(
                now - TimeDelta::minutes(minute),
                RegistrationReason::StartedAgain.as_str(),
            ));
        }
        assert_eq!(restarts_with(&history), Severity::Error);
        assert_eq!(restarts_with(&history[..4]), Severity::Ok);
    }
}
