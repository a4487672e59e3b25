//! Maintenance windows in memory: which services are in maintenance at an instant.
//!
//! The windows not ended are held by host, loaded at start-up, changed by this server's
//! admin calls and replaced by what the database holds every `flush_interval` on a shared
//! database (windows started or ended through other replicas). A window ends by itself: it is
//! judged against the clock (`ends_at`), so nothing has to run when it ends.
//!
//! Judging a service costs one atomic load while no window holds (the latest end of the
//! windows held is in the past), and one lookup of its host otherwise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::RwLock;

use crate::model::MaintenanceWindow;

/// The windows this server knows of that have not ended early.
#[derive(Debug)]
pub struct Windows {
    /// The latest `ends_at` of the windows held, in microseconds since the epoch (`i64::MIN`
    /// when none is): a judgement at or after it needs no look.
    until: AtomicI64,
    by_host: RwLock<HashMap<String, Vec<Arc<MaintenanceWindow>>>>,
    /// Bumped by every change made here, so that a replacement read before it cannot undo it.
    generation: AtomicU64,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows {
            until: AtomicI64::new(i64::MIN),
            by_host: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl Windows {
    /// The window that puts the service (`host`, `binary`) in maintenance at `now`, if any:
    /// of several, the one that ends last.
    pub fn find(
        &self,
        host: &str,
        binary: &str,
        now: DateTime<Utc>,
    ) -> Option<Arc<MaintenanceWindow>> {
        if now.timestamp_micros() >= self.until.load(Ordering::Acquire) {
            return None;
        }
        let by_host = self.by_host.read();
        by_host
            .get(host)?
            .iter()
            .filter(|w| w.active(now) && w.covers(host, binary))
            .max_by_key(|w| w.ends_at)
            .cloned()
    }

    /// Whether the service (`host`, `binary`) is in maintenance at `now`.
    pub fn covers(&self, host: &str, binary: &str, now: DateTime<Utc>) -> bool {
        self.find(host, binary, now).is_some()
    }

    /// The reason a `down` event of the service gives at `now`: "in maintenance: ...".
    pub fn note(&self, host: &str, binary: &str, now: DateTime<Utc>) -> Option<String> {
        self.find(host, binary, now)
            .map(|w| format!("in maintenance: {}", w.reason))
    }

    /// How many windows hold at `now`.
    pub fn active_count(&self, now: DateTime<Utc>) -> usize {
        if now.timestamp_micros() >= self.until.load(Ordering::Acquire) {
            return 0;
        }
        self.by_host
            .read()
            .values()
            .flatten()
            .filter(|w| w.active(now))
            .count()
    }

    /// Where changes stand; pass it to [`Windows::replace`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A window started here.
    pub fn add(&self, window: MaintenanceWindow) {
        let mut by_host = self.by_host.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        // Windows of the host past their end go: it starts now.
        let now = window.starts_at;
        let list = by_host.entry(window.host.clone()).or_default();
        list.retain(|w| w.id != window.id && w.end() > now);
        list.push(Arc::new(window));
        self.settle(&mut by_host);
    }

    /// A window ended here.
    pub fn remove(&self, id: i64) {
        let mut by_host = self.by_host.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        for list in by_host.values_mut() {
            list.retain(|w| w.id != id);
        }
        self.settle(&mut by_host);
    }

    /// Takes the windows the database holds now, unless this server changed its own since
    /// `generation` (read before the database was): then the next replacement takes them.
    /// Returns whether it did.
    pub fn replace(&self, windows: Vec<MaintenanceWindow>, generation: u64) -> bool {
        let mut by_host = self.by_host.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return false;
        }
        by_host.clear();
        for window in windows.into_iter().filter(|w| w.ended_at.is_none()) {
            by_host
                .entry(window.host.clone())
                .or_default()
                .push(Arc::new(window));
        }
        self.settle(&mut by_host);
        true
    }

    /// Drops empty hosts and sets the latest end.
    fn settle(&self, by_host: &mut HashMap<String, Vec<Arc<MaintenanceWindow>>>) {
        by_host.retain(|_, list| !list.is_empty());
        let until = by_host
            .values()
            .flatten()
            .filter(|w| w.ended_at.is_none())
            .map(|w| w.ends_at.timestamp_micros())
            .max()
            .unwrap_or(i64::MIN);
        self.until.store(until, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn window(
        id: i64,
        host: &str,
        binary: Option<&str>,
        from: DateTime<Utc>,
        secs: i64,
    ) -> MaintenanceWindow {
        MaintenanceWindow {
            id,
            host: host.into(),
            binary: binary.map(Into::into),
            reason: format!("reason {id}"),
            starts_at: from,
            ends_at: from + TimeDelta::seconds(secs),
            created_by: Some("ops".into()),
            address: None,
            ended_at: None,
            ended_by: None,
        }
    }

    #[test]
    fn a_window_covers_its_host_or_binary_until_it_ends() {
        let now = Utc::now();
        let windows = Windows::default();
        assert!(!windows.covers("node-1", "volume", now));
        windows.add(window(1, "node-1", None, now, 60));
        windows.add(window(2, "node-2", Some("backup"), now, 10));
        assert!(windows.covers("node-1", "volume", now));
        assert!(windows.covers("node-1", "backup", now));
        assert!(windows.covers("node-2", "backup", now));
        assert!(!windows.covers("node-2", "volume", now));
        assert!(!windows.covers("node-3", "volume", now));
        assert_eq!(windows.active_count(now), 2);
        // Node 2's ends by itself after 10 s; node 1's after 60 s; then the fast path.
        let later = now + TimeDelta::seconds(10);
        assert!(!windows.covers("node-2", "backup", later));
        assert!(windows.covers("node-1", "backup", later));
        assert_eq!(windows.active_count(later), 1);
        let after = now + TimeDelta::seconds(60);
        assert!(!windows.covers("node-1", "volume", after));
        assert_eq!(windows.active_count(after), 0);
        assert_eq!(
            windows.note("node-1", "volume", now).as_deref(),
            Some("in maintenance: reason 1")
        );
    }

    #[test]
    fn of_two_windows_the_longer_one_shows_and_ending_one_leaves_the_other() {
        let now = Utc::now();
        let windows = Windows::default();
        windows.add(window(1, "node-1", None, now, 60));
        windows.add(window(2, "node-1", Some("volume"), now, 600));
        assert_eq!(windows.find("node-1", "volume", now).unwrap().id, 2);
        windows.remove(2);
        assert_eq!(windows.find("node-1", "volume", now).unwrap().id, 1);
        windows.remove(1);
        assert!(windows.find("node-1", "volume", now).is_none());
        assert_eq!(windows.until.load(Ordering::Acquire), i64::MIN);
    }

    #[test]
    fn a_replacement_read_before_a_change_made_here_does_not_undo_it() {
        let now = Utc::now();
        let windows = Windows::default();
        let generation = windows.generation();
        windows.add(window(1, "node-1", None, now, 60));
        assert!(!windows.replace(Vec::new(), generation));
        assert!(windows.covers("node-1", "volume", now));
        let generation = windows.generation();
        let mut ended = window(1, "node-1", None, now, 60);
        ended.ended_at = Some(now);
        assert!(windows.replace(vec![ended, window(3, "node-3", None, now, 5)], generation));
        assert!(!windows.covers("node-1", "volume", now));
        assert!(windows.covers("node-3", "volume", now));
    }
}
