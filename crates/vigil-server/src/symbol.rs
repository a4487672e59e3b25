//! Interned names: a fleet's binaries, zones, topics and versions are few, each repeated over
//! thousands or millions of services, so a service holds a pointer to one shared copy (8
//! bytes) rather than its own (24 bytes inline, more past 24 characters).
//!
//! The pool forgets a name that no service holds any more: it is swept whenever it has
//! doubled since the last sweep, so names that come and go (versions over years of deploys, a
//! client registering odd binaries) do not pile up. Hosts are not interned: each is shared by
//! a handful of services only, and fleets replace hosts all the time.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, LazyLock};

use compact_str::CompactString;
use parking_lot::Mutex;

/// A name shared through the pool: compared by pointer, read as a `str`.
#[derive(Clone)]
pub struct Symbol(Arc<CompactString>);

/// The pool: every name some [`Symbol`] holds, and perhaps some that none does any more.
struct Pool {
    names: HashSet<Shared>,
    /// Names kept by the last sweep.
    kept: usize,
}

/// A pooled name, hashed and compared as its text, so the pool is searched by `&str`.
struct Shared(Arc<CompactString>);

impl Borrow<str> for Shared {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl Hash for Shared {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl PartialEq for Shared {
    fn eq(&self, other: &Shared) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Shared {}

/// Names the pool may hold beyond twice what its last sweep kept before it sweeps again.
const SWEEP_SLACK: usize = 1024;

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| {
    Mutex::new(Pool {
        names: HashSet::new(),
        kept: 0,
    })
});

impl Pool {
    /// Forgets every name only the pool holds. Safe under the pool's lock: a new holder of a
    /// name comes either from the pool (under this lock) or from cloning a holder (there is
    /// none).
    fn sweep(&mut self) {
        self.names.retain(|name| Arc::strong_count(&name.0) > 1);
        self.kept = self.names.len();
    }
}

impl Symbol {
    /// The shared copy of `name`.
    pub fn new(name: &str) -> Symbol {
        let mut pool = POOL.lock();
        if let Some(shared) = pool.names.get(name) {
            return Symbol(shared.0.clone());
        }
        if pool.names.len() >= pool.kept.saturating_mul(2).saturating_add(SWEEP_SLACK) {
            pool.sweep();
        }
        let shared = Arc::new(CompactString::from(name));
        pool.names.insert(Shared(shared.clone()));
        Symbol(shared)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Symbol {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Default for Symbol {
    fn default() -> Symbol {
        Symbol::new("")
    }
}

impl From<&str> for Symbol {
    fn from(name: &str) -> Symbol {
        Symbol::new(name)
    }
}

impl From<&String> for Symbol {
    fn from(name: &String) -> Symbol {
        Symbol::new(name)
    }
}

impl From<String> for Symbol {
    fn from(name: String) -> Symbol {
        Symbol::new(&name)
    }
}

impl From<CompactString> for Symbol {
    fn from(name: CompactString) -> Symbol {
        Symbol::new(&name)
    }
}

impl From<&Symbol> for String {
    fn from(name: &Symbol) -> String {
        name.as_str().to_string()
    }
}

impl PartialEq for Symbol {
    fn eq(&self, other: &Symbol) -> bool {
        // One copy per text while any holder lives: the pointers decide.
        Arc::ptr_eq(&self.0, &other.0) || self.as_str() == other.as_str()
    }
}

impl Eq for Symbol {}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Symbol {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Symbol> for str {
    fn eq(&self, other: &Symbol) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Symbol> for &str {
    fn eq(&self, other: &Symbol) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Symbol> for String {
    fn eq(&self, other: &Symbol) -> bool {
        self == other.as_str()
    }
}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, other: &Symbol) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Symbol {
    fn cmp(&self, other: &Symbol) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Symbol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_per_name() {
        let a = Symbol::new("cinder-volume-symbol-test");
        let b = Symbol::from(String::from("cinder-volume-symbol-test"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(a, "cinder-volume-symbol-test");
        assert_ne!(a, Symbol::new("cinder-backup-symbol-test"));
        assert_eq!(std::mem::size_of::<Option<Symbol>>(), 8);
    }

    /// Names nobody holds are forgotten by a later sweep; names held survive every sweep.
    #[test]
    fn names_nobody_holds_are_swept() {
        let held = Symbol::new("held-through-sweeps");
        for i in 0..(4 * SWEEP_SLACK) {
            drop(Symbol::new(&format!("passing-{i}")));
        }
        POOL.lock().sweep();
        let passing = (0..4 * SWEEP_SLACK)
            .filter(|i| POOL.lock().names.contains(format!("passing-{i}").as_str()))
            .count();
        assert_eq!(passing, 0);
        assert!(Arc::ptr_eq(&held.0, &Symbol::new("held-through-sweeps").0));
    }
}
