//! The reporter's wall clock.
//!
//! The reporter stamps each heartbeat's `sent_at` with a [`Clock`] so the server can estimate the
//! reporter's clock offset. Liveness never depends on it: the server decides with its own clock.
//! The trait exists so tests can give a reporter a skewed clock (say +90 s) without touching the
//! machine's clock.

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The machine's clock shifted by a fixed offset (positive: ahead), to simulate a skewed host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetClock(pub chrono::Duration);

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_is_ahead_by_its_offset() {
        let before = SystemClock.now();
        let skewed = OffsetClock(chrono::Duration::seconds(90)).now();
        let after = SystemClock.now();
        assert!(skewed - before >= chrono::Duration::seconds(90));
        assert!(skewed - after <= chrono::Duration::seconds(90));
    }
}
