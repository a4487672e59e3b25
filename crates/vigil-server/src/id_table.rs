//! Services by id, in id order, found in one step.
//!
//! Ids come from the database's counter (`AUTOINCREMENT`, a sequence): small, increasing and
//! never reused, so nearly all of them fit a vector indexed by the id itself. A heartbeat's
//! lookup is then one load instead of a walk down a B-tree whose nodes, at a million services,
//! are each a cache miss (the largest cost of the hot path in the profile of `vigil bench`).
//! Ids that would leave the vector mostly empty (negative, or far past the others) go to an
//! ordered map, so that no id can make the table allocate without bound. The vector starts at
//! an offset that moves up when its front has emptied, so that a fleet replaced over time (new
//! ids, ever higher, the old deleted) keeps its ids in the vector. (Long-lived services
//! scattered among many deleted ids pin the front: newer ids then go to the map, found as
//! before this table existed.)

use std::collections::BTreeMap;

/// The vector may grow to hold an id when it stays at least about half full.
const SLACK: usize = 1024;

pub struct IdTable<T> {
    /// `dense[i]` holds id `base + i`.
    dense: Vec<Option<T>>,
    base: i64,
    /// Every other id: below `base`, or at `base + dense.len()` and beyond.
    sparse: BTreeMap<i64, T>,
    len: usize,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            dense: Vec::new(),
            base: 0,
            sparse: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> IdTable<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// `id`'s place relative to the vector's start (negative below it).
    fn offset(&self, id: i64) -> i128 {
        i128::from(id) - i128::from(self.base)
    }

    fn dense_index(&self, id: i64) -> Option<usize> {
        usize::try_from(self.offset(id))
            .ok()
            .filter(|&i| i < self.dense.len())
    }

    /// First id past the vector.
    fn dense_end(&self) -> i64 {
        i64::try_from(i128::from(self.base) + self.dense.len() as i128).unwrap_or(i64::MAX)
    }

    pub fn get(&self, id: i64) -> Option<&T> {
        match self.dense_index(id) {
            Some(i) => self.dense[i].as_ref(),
            None => self.sparse.get(&id),
        }
    }

    /// Inserts or replaces the value of `id`.
    pub fn insert(&mut self, id: i64, value: T) {
        let limit = 2 * (self.len + 1) + SLACK;
        if self.offset(id) >= limit as i128 {
            self.compact(id);
        }
        if let Ok(index) = usize::try_from(self.offset(id)) {
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

    /// Drops the empty front of the vector when it is at least half of it, so that `id` (far
    /// past the vector) may fit; an empty vector starts again at `id`.
    fn compact(&mut self, id: i64) {
        let empty = self.dense.iter().take_while(|slot| slot.is_none()).count();
        if empty == self.dense.len() {
            self.dense.clear();
            self.base = id;
        } else if empty > 0 && empty * 2 >= self.dense.len() {
            self.dense.drain(..empty);
            self.base += empty as i64;
        }
    }

    /// Extends the vector to `len` slots and moves the ids it now covers out of the map.
    fn grow(&mut self, len: usize) {
        let start = self.dense_end();
        self.dense.resize_with(len, || None);
        let end = self.dense_end();
        let moved: Vec<i64> = self.sparse.range(start..end).map(|(id, _)| *id).collect();
        for id in moved {
            let value = self.sparse.remove(&id);
            let index = self.dense_index(id).expect("an id the vector now covers");
            self.dense[index] = value;
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
            .range(..self.base)
            .map(|(_, value)| value)
            .chain(self.dense.iter().flatten())
            .chain(
                self.sparse
                    .range(self.dense_end()..)
                    .map(|(_, value)| value),
            )
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
        table.insert(1, 1);
        table.insert(3_000, 3_000);
        assert!(table.sparse.contains_key(&3_000));
        for id in 2..=2_100 {
            table.insert(id, id);
        }
        assert!(table.sparse.is_empty());
        assert_eq!(table.get(3_000), Some(&3_000));
        assert_eq!(table.len(), 2_101);
        assert_eq!(ids(&table).last(), Some(&3_000));
    }

    /// A fleet replaced again and again (new ids, ever higher, the old ones deleted): the
    /// vector follows it instead of leaving the newer ids in the map.
    #[test]
    fn a_replaced_fleet_moves_the_vector_up() {
        let mut table = IdTable::default();
        let mut previous: Vec<i64> = Vec::new();
        for round in 0..100 {
            let fleet: Vec<i64> = (round * 500 + 1..=round * 500 + 500).collect();
            for &id in &fleet {
                table.insert(id, id);
            }
            for id in previous {
                table.remove(id);
            }
            previous = fleet;
        }
        assert_eq!(table.len(), 500);
        assert!(
            table.sparse.is_empty(),
            "{} ids in the map",
            table.sparse.len()
        );
        assert!(
            table.dense.len() <= 2 * (1_000 + 1) + SLACK,
            "bounded by the peak: {}",
            table.dense.len()
        );
        assert_eq!(ids(&table), previous);
        assert!(previous.iter().all(|id| table.get(*id) == Some(id)));
        table.insert(-5, -5);
        assert_eq!(ids(&table).first(), Some(&-5));
    }

    #[test]
    fn a_first_id_far_from_zero_starts_the_vector() {
        let mut table = IdTable::default();
        for id in 1_000_000_000..1_000_000_100 {
            table.insert(id, id);
        }
        assert!(table.sparse.is_empty());
        assert!(table.dense.len() < 2_000);
        table.insert(7, 7);
        assert_eq!(ids(&table)[..2], [7, 1_000_000_000]);
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
