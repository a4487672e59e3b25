//! Services by id, in id order, found in one step.
//!
//! Ids come from the database's counter (`AUTOINCREMENT`, a sequence): small, increasing and
//! never reused, so nearly all of them fit a vector indexed by the id itself. A heartbeat's
//! lookup is then one load instead of a walk down a B-tree whose nodes, at a million services,
//! are each a cache miss (the largest cost of the hot path in the profile of `vigil bench`).
//! Ids that would leave the vector mostly empty (negative, or far past the others) go to an
//! ordered map, so that no id can make the table allocate without bound.

use std::collections::BTreeMap;

/// The vector may grow to hold an id when it stays at least about half full.
const SLACK: usize = 1024;

pub struct IdTable<T> {
    /// `dense[id]` for `0 <= id < dense.len()`.
    dense: Vec<Option<T>>,
    /// Every other id: negative, or `>= dense.len()`.
    sparse: BTreeMap<i64, T>,
    len: usize,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            dense: Vec::new(),
            sparse: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> IdTable<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    fn dense_index(&self, id: i64) -> Option<usize> {
        usize::try_from(id).ok().filter(|&i| i < self.dense.len())
    }

    pub fn get(&self, id: i64) -> Option<&T> {
        match self.dense_index(id) {
            Some(i) => self.dense[i].as_ref(),
            None => self.sparse.get(&id),
        }
    }

    /// Inserts or replaces the value of `id`.
    pub fn insert(&mut self, id: i64, value: T) {
        if let Ok(index) = usize::try_from(id) {
            let limit = 2 * (self.len + 1) + SLACK;
            if index >= self.dense.len() && index < limit {
                // Doubling, as the vector's own capacity does, so that ids left in the map
                // by an earlier gap are taken in as the others catch up with them.
                self.grow((index + 1).max(2 * self.dense.len()).min(limit));
            }
        }
        let previous = match self.dense_index(id) {
            Some(i) => self.dense[i].replace(value),
            None => self.sparse.insert(id, value),
        };
        if previous.is_none() {
            self.len += 1;
        }
    }

    /// Extends the vector to `len` slots and moves the ids it now covers out of the map.
    fn grow(&mut self, len: usize) {
        let start = self.dense.len();
        self.dense.resize_with(len, || None);
        let end = i64::try_from(len).unwrap_or(i64::MAX);
        let moved: Vec<i64> = self
            .sparse
            .range(i64::try_from(start).unwrap_or(i64::MAX)..end)
            .map(|(id, _)| *id)
            .collect();
        for id in moved {
            let value = self.sparse.remove(&id);
            self.dense[id as usize] = value;
        }
    }

    pub fn remove(&mut self, id: i64) -> Option<T> {
        let removed = match self.dense_index(id) {
            Some(i) => self.dense[i].take(),
            None => self.sparse.remove(&id),
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Every value, in id order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.sparse
            .range(..0)
            .map(|(_, value)| value)
            .chain(self.dense.iter().flatten())
            .chain(self.sparse.range(0..).map(|(_, value)| value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(table: &IdTable<i64>) -> Vec<i64> {
        table.values().copied().collect()
    }

    #[test]
    fn dense_and_sparse_ids_keep_their_order() {
        let mut table = IdTable::default();
        for id in [5, -3, 1, i64::MAX, 3, 1_000_000_000] {
            table.insert(id, id);
        }
        assert_eq!(table.len(), 6);
        assert_eq!(ids(&table), [-3, 1, 3, 5, 1_000_000_000, i64::MAX]);
        assert_eq!(table.get(3), Some(&3));
        assert_eq!(table.get(4), None);
        assert_eq!(table.get(i64::MAX), Some(&i64::MAX));
        assert!(table.dense.len() < 10, "a far id must not grow the vector");
    }

    #[test]
    fn growing_moves_covered_ids_out_of_the_map() {
        let mut table = IdTable::default();
        table.insert(3_000, 3_000);
        assert!(table.sparse.contains_key(&3_000));
        for id in 1..=2_100 {
            table.insert(id, id);
        }
        assert!(table.sparse.is_empty());
        assert_eq!(table.get(3_000), Some(&3_000));
        assert_eq!(table.len(), 2_101);
        assert_eq!(ids(&table).last(), Some(&3_000));
    }

    #[test]
    fn replace_and_remove_keep_the_count() {
        let mut table = IdTable::default();
        table.insert(7, 1);
        table.insert(7, 2);
        table.insert(-7, 3);
        assert_eq!(table.len(), 2);
        assert_eq!(table.remove(7), Some(2));
        assert_eq!(table.remove(7), None);
        assert_eq!(table.remove(-7), Some(3));
        assert_eq!(table.len(), 0);
        assert_eq!(ids(&table), Vec::<i64>::new());
    }
}
