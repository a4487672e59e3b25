use super::*;
use crate::registry::Beat;

fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::milliseconds(ms)
}

fn record(report_interval: f64) -> ServiceRecord {
    ServiceRecord::example(1, "node-1", "cinder-volume", report_interval, t(0))
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
        openstack: None,
        recent_transitions: 0,
        flapping: crate::flapping::FlapRule::new(4, 600.0),
        reach: Default::default(),
        maintenance: None,
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
    assert_eq!(findings.len(), 12);
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
        actor: None,
        address: None,
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
            openstack: None,
            recent_transitions: 0,
            flapping: crate::flapping::FlapRule::new(4, 600.0),
            reach: Default::default(),
            maintenance: None,
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

#[test]
fn a_watched_openstack_is_judged_in_its_own_terms() {
    let cinder = Openstack {
        kind: WatchKind::Cinder,
        service_down_time: 10.0,
    };
    let fits = openstack_interval(2.0, &cinder);
    assert_eq!(fits.severity, Severity::Ok, "{fits:?}");
    let rewritten = openstack_interval(10.0, &cinder);
    assert_eq!(rewritten.severity, Severity::Warning);
    assert!(
        rewritten
            .summary
            .contains("silently runs with service_down_time 25 s"),
        "{rewritten:?}"
    );
    assert!(rewritten.remedy.contains("cinder.conf"), "{rewritten:?}");

    let mut record = record(2.0);
    record.host = "sched-b".into();
    record.binary = "cinder-scheduler".into();
    let mut stats = BeatStats::default();
    stats.set_clock_offset(76.0, Some(1.5));
    let finding = clock(&Inputs {
        record: &record,
        stats: &stats,
        history: Ok(&[]),
        service_down_time: 10.0,
        now: t(0),
        openstack: Some(cinder),
        recent_transitions: 0,
        flapping: crate::flapping::FlapRule::new(4, 600.0),
        reach: Default::default(),
        maintenance: None,
    });
    assert_eq!(finding.severity, Severity::Error);
    assert_eq!(
        finding.summary,
        "Cinder shows cinder-scheduler on sched-b down because its clock is 76 s ahead of the \
         database; it reports every 2 s"
    );
}

#[test]
fn a_clean_stop_is_not_a_silent_service() {
    let mut r = record(10.0);
    let stats = beats(&mut r, &[10_000, 20_000], &[10_000, 20_000], 0.0);
    r.set_stopped_at(Some(t(21_000)));
    let findings = run(&r, &stats, 500_000);
    let found = check(&findings, "heartbeat");
    assert_eq!(found.severity, Severity::Ok, "{found:?}");
    assert!(
        found.summary.starts_with("stopped cleanly at "),
        "{found:?}"
    );
    r.updated_at = Some(t(22_000));
    let findings = run(&r, &stats, 500_000);
    assert_eq!(check(&findings, "heartbeat").severity, Severity::Error);
}

#[test]
fn alive_but_failing_is_an_error_beside_a_fine_heartbeat() {
    let mut r = record(10.0);
    let times = every(10_000, 20);
    let stats = beats(&mut r, &times, &times, 0.0);
    r.health = Some(Health::Failing);
    r.set_health_message(Some("pool a full".into()));
    let findings = run(&r, &stats, 200_500);
    let health = check(&findings, "health");
    assert_eq!(health.severity, Severity::Error);
    assert_eq!(health.summary, "alive but failing: pool a full");
    assert_eq!(check(&findings, "heartbeat").severity, Severity::Ok);
    r.health = Some(Health::Warning);
    assert_eq!(
        check(&run(&r, &stats, 200_500), "health").severity,
        Severity::Warning
    );
}

#[test]
fn flapping_is_a_warning_with_its_count() {
    let mut r = record(10.0);
    let times = every(10_000, 20);
    let stats = beats(&mut r, &times, &times, 0.0);
    let findings = diagnose(&Inputs {
        record: &r,
        stats: &stats,
        history: Ok(&[]),
        service_down_time: 60.0,
        now: t(200_500),
        openstack: None,
        recent_transitions: 5,
        flapping: crate::flapping::FlapRule::new(4, 600.0),
        reach: Default::default(),
        maintenance: None,
    });
    let found = check(&findings, "flapping");
    assert_eq!(found.severity, Severity::Warning);
    assert_eq!(
        found.summary,
        "flapping: 5 up/down transitions in the last 600 s"
    );
    assert_eq!(
        check(&run(&r, &stats, 200_500), "flapping").severity,
        Severity::Ok
    );
}

#[test]
fn a_service_in_maintenance_names_its_window_and_its_down_is_expected() {
    let mut r = record(10.0);
    let times = every(10_000, 20);
    let stats = beats(&mut r, &times, &times, 0.0);
    let window = crate::model::MaintenanceWindow {
        id: 3,
        host: r.host.to_string(),
        binary: None,
        reason: "disk swap".into(),
        starts_at: t(100_000),
        ends_at: t(7_300_000),
        created_by: Some("ops-alice".into()),
        address: Some("10.0.0.7".into()),
        ended_at: None,
        ended_by: None,
    };
    let diagnose_at = |now: i64| {
        diagnose(&Inputs {
            record: &r,
            stats: &stats,
            history: Ok(&[]),
            service_down_time: 60.0,
            now: t(now),
            openstack: None,
            recent_transitions: 0,
            flapping: crate::flapping::FlapRule::new(4, 600.0),
            reach: Default::default(),
            maintenance: Some(&window),
        })
    };
    let up = diagnose_at(200_500);
    let found = check(&up, "maintenance");
    assert_eq!(found.severity, Severity::Warning);
    assert!(
        found.summary.starts_with("in maintenance window 3 until ")
            && found.summary.ends_with("(reason: disk swap)"),
        "{found:?}"
    );
    assert!(
        found.detail.contains("started by ops-alice at "),
        "{found:?}"
    );
    assert!(
        found.remedy.contains("vigil maintenance end 3"),
        "{found:?}"
    );
    let down = diagnose_at(400_000);
    let found = check(&down, "maintenance");
    assert!(
        found
            .summary
            .starts_with("down during maintenance window 3 (reason: disk swap): expected"),
        "{found:?}"
    );
    assert_eq!(
        check(&run(&r, &stats, 400_000), "maintenance").severity,
        Severity::Ok
    );
}
