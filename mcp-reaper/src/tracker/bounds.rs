//! The process table's size, index by index, and giving memory back after
//! a burst.
//!
//! Owns: `table_sizes` (what tests and benchmarks read) and shrinking the
//! indexes once they hold far fewer entries than they have room for.
//! Must never: remove an entry (that is `gc`'s and `resync`'s), or shrink
//! on every call: only when a map is at most a quarter full.

use std::collections::HashMap;

use super::Tracker;

/// Maps smaller than this keep their capacity.
const SHRINK_FLOOR: usize = 64;

/// Entries in each of the table's indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Processes, live and exited.
    pub entries: usize,
    pub by_tgid: usize,
    /// Lineage parents with at least one child in the table.
    pub children: usize,
    /// Tree roots with at least one member in the table.
    pub trees: usize,
    pub parked: usize,
}

impl Tracker {
    /// How many entries each index holds.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            entries: self.entries.len(),
            by_tgid: self.by_tgid.len(),
            children: self.children.len(),
            trees: self.trees.len(),
            parked: self.parked.len(),
        }
    }

    /// Gives back the room a burst of short-lived processes left behind.
    pub(super) fn shrink_tables(&mut self) {
        shrink(&mut self.entries);
        shrink(&mut self.by_tgid);
        shrink(&mut self.children);
        shrink(&mut self.trees);
        shrink(&mut self.parked);
    }
}

/// Shrinks `map` once it is at most a quarter full (and past a small
/// floor), so its memory follows what it holds, not its high-water mark.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_FLOOR.max(map.len() * 4) {
        map.shrink_to(map.len() * 2);
    }
}
