//! How findings are built and how their numbers and times are written for people.

use super::*;

/// A finding of `check` with `severity`; add `because` (the detail) and `fix` (the remedy)
/// where there is something to say.
pub(super) fn found(check: &str, severity: Severity, summary: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        severity,
        summary: summary.into(),
        detail: String::new(),
        remedy: String::new(),
    }
}

/// Checked and fine.
pub(super) fn ok(check: &str, summary: impl Into<String>) -> Finding {
    found(check, Severity::Ok, summary)
}

pub(super) fn warning(check: &str, summary: impl Into<String>) -> Finding {
    found(check, Severity::Warning, summary)
}

pub(super) fn error(check: &str, summary: impl Into<String>) -> Finding {
    found(check, Severity::Error, summary)
}

/// The rest of a finding.
pub(super) trait Explain {
    /// Why: what the finding means.
    fn because(self, detail: impl Into<String>) -> Self;
    /// What to do about it.
    fn fix(self, remedy: impl Into<String>) -> Self;
}

impl Explain for Finding {
    fn because(mut self, detail: impl Into<String>) -> Finding {
        self.detail = detail.into();
        self
    }

    fn fix(mut self, remedy: impl Into<String>) -> Finding {
        self.remedy = remedy.into();
        self
    }
}

/// A finding for a check that needs the history when the database cannot give it.
pub(super) fn history_unavailable(check: &str, reason: &str) -> Finding {
    warning(check, "cannot read the service's history")
        .because(reason)
        .fix("check the server's database (GET /readyz)")
}

/// " at <time>" of the latest event of `kind`, for a summary; `None` when not in the history.
pub(super) fn latest(inputs: &Inputs, kind: EventKind) -> Option<String> {
    let history = inputs.history.ok()?;
    history
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.at)
        .max()
        .map(|at| format!(" at {}", stamp(at)))
}

/// Seconds for people: whole seconds from 10 s up, else at most two decimals.
pub(super) fn secs(value: f64) -> String {
    if value.abs() >= 10.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A count of occurrences for people: "once", "twice", "3 times".
pub(super) fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// A time for people, to the second, in UTC.
pub(super) fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An OpenStack service's name as people write it.
pub(super) fn product(kind: WatchKind) -> &'static str {
    match kind {
        WatchKind::Cinder => "Cinder",
        WatchKind::Nova => "Nova",
    }
}
