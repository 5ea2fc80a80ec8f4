//! How big the process table is, index by index, and the rule for giving
//! memory back after a burst.
//!
//! Owns: `TableSizes` (what tests and benchmarks read; `table::Tracker`
//! fills it) and `shrink`, the rule that shrinks a map once it holds far
//! fewer entries than it has room for (also used outside the tracker).
//! Must never: remove an entry (that is `gc`'s and `resync`'s), or shrink
//! on every call: only when a map is at most a quarter full. It depends on
//! nothing in the tracker, so every part of the table may use it.

use std::collections::HashMap;

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

/// Shrinks `map` once it is at most a quarter full (and past a small
/// floor), so its memory follows what it holds, not its high-water mark.
pub(crate) fn shrink<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_FLOOR.max(map.len() * 4) {
        map.shrink_to(map.len() * 2);
    }
}
