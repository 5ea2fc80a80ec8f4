//! Reading the process table: entries, lineage and tree membership, sizes
//! and health.
//!
//! Owns: every read-only question callers ask of the table.
//! Must never: change the table (not even a cache), or let a bare PID stand
//! for a process: `live_by_tgid` yields the live entry holding the PID,
//! with its full key.

use std::collections::{HashSet, VecDeque};

use super::{
    entry::{ProcEntry, TrackerStats},
    table::Tracker,
};
use crate::procs::identity::ProcKey;

impl Tracker {
    /// The table may be missing processes or exits.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    pub fn get(&self, key: ProcKey) -> Option<&ProcEntry> {
        self.entries.get(&key)
    }

    /// The live process holding `tgid` now, if the table knows it.
    pub fn live_by_tgid(&self, tgid: u32) -> Option<&ProcEntry> {
        self.by_tgid.get(&tgid).and_then(|k| self.entries.get(k))
    }

    /// Processes `key` forked (live or exited), in key order.
    pub fn children(&self, key: ProcKey) -> Vec<ProcKey> {
        self.children
            .get(&key)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every process descended from `key` by fork lineage (live or exited),
    /// parents before children. Includes descendants that were reparented
    /// or called setsid(); terminates on any parent graph.
    pub fn descendants(&self, key: ProcKey) -> Vec<ProcKey> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([key]);
        let mut queue = VecDeque::from([key]);
        while let Some(k) = queue.pop_front() {
            for &child in self.children.get(&k).into_iter().flatten() {
                if seen.insert(child) {
                    out.push(child);
                    queue.push_back(child);
                }
            }
        }
        out
    }

    /// The live members of the tree rooted at `root` (the root included
    /// while it lives), in key order.
    pub fn tree_members(&self, root: ProcKey) -> Vec<ProcKey> {
        self.trees
            .get(&root)
            .into_iter()
            .flatten()
            .copied()
            .filter(|k| self.entries.get(k).is_some_and(ProcEntry::is_live))
            .collect()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ProcEntry> {
        self.entries.values()
    }

    pub fn live_count(&self) -> usize {
        self.by_tgid.len()
    }

    /// Entries, live and exited.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            live: self.by_tgid.len(),
            exited_kept: self.entries.len() - self.by_tgid.len(),
            dropped: self.dropped,
            parked: self.parked.len(),
            parked_evicted: self.parked_evicted,
            lost: self.lost,
            lineage_gaps: self.lineage_gaps,
            lineage_rejected: self.lineage_rejected,
            degraded: self.degraded,
        }
    }

    /// Whether the chain of lineage parents from `key` reaches `root`
    /// (`key` itself counts). The chain may end in a parent the table does
    /// not hold yet, which counts when it is `root`.
    pub fn descends_from(&self, key: ProcKey, root: ProcKey) -> bool {
        let mut cur = key;
        // Bounded: a cycle of impossible parents must not hang the table.
        for _ in 0..=self.entries.len() {
            if cur == root {
                return true;
            }
            match self.entries.get(&cur).and_then(|e| e.parent) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }
}
