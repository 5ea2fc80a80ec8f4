//! Collecting the process table: what died unreported, what no live
//! process needs any more, and parked exits that waited too long.
//!
//! Owns: `gc` (polling the liveness of processes no exit will be reported
//! for, expiring parked exits, shrinking the indexes) and `prune`, the one
//! rule for which exited entries may go.
//! Must never: remove an exited entry while a live entry descends from it
//! (lineage, and so tree membership, runs through it), or remove a live
//! entry at all; liveness comes in as a closure, never from I/O here.

use std::collections::HashSet;

use super::{entry::EXIT_CODE_UNKNOWN, table::Tracker};
use crate::procs::identity::ProcKey;

impl Tracker {
    /// Periodic clean-up. Live entries no exit will be reported for are
    /// checked with `is_alive` and marked exited when dead; exited entries
    /// with no live descendant are removed; stale parked exits expire.
    /// Returns the number of entries removed.
    pub fn gc(&mut self, is_alive: impl Fn(ProcKey) -> bool) -> usize {
        let unreported: Vec<ProcKey> = self
            .entries
            .values()
            .filter(|e| e.is_live() && !e.exit_reported)
            .map(|e| e.key)
            .collect();
        for key in unreported {
            if !is_alive(key) {
                self.mark_exited(key, EXIT_CODE_UNKNOWN);
            }
        }
        self.gc_round += 1;
        let round = self.gc_round;
        self.parked.expire(round);
        let removed = self.prune(&HashSet::new());
        self.shrink_tables();
        removed
    }

    /// Removes exited entries that no live entry descends from, except
    /// those in `keep`.
    pub(super) fn prune(&mut self, keep: &HashSet<ProcKey>) -> usize {
        let mut needed = HashSet::new();
        for entry in self.entries.values().filter(|e| e.is_live()) {
            let mut up = entry.parent;
            while let Some(parent) = up {
                let Some(p) = self.entries.get(&parent) else {
                    break;
                };
                if !needed.insert(parent) {
                    break; // the rest of the chain is marked already
                }
                up = p.parent;
            }
        }
        let doomed: Vec<ProcKey> = self
            .entries
            .values()
            .filter(|e| !e.is_live() && !needed.contains(&e.key) && !keep.contains(&e.key))
            .map(|e| e.key)
            .collect();
        for &key in &doomed {
            self.remove(key);
        }
        doomed.len()
    }
}
