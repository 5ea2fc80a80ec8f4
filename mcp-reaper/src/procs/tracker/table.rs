//! The process table's storage: the entries, the indexes over them, and
//! the few operations that keep the indexes in step with the entries.
//!
//! Owns: the `Tracker` struct (entries by key, the live tgid index, the
//! children and tree indexes, parked exits, counters), marking an entry
//! exited, moving it between trees, removing it, and the table's sizes.
//! Must never: decide anything: whether a process belongs to a tree, or
//! may be removed, is for the modules above (`admit`, `apply`, `gc`,
//! `snapshot`); here an index only follows what they decided.

use std::collections::{BTreeSet, HashMap};

use super::{
    bounds::{TableSizes, shrink},
    entry::{EXIT_CODE_UNKNOWN, ExitReporting, ProcEntry},
    parked::ParkedExits,
};
use crate::procs::identity::ProcKey;

/// The process table. See the `tracker` module header.
#[derive(Debug)]
pub struct Tracker {
    pub(super) entries: HashMap<ProcKey, ProcEntry>,
    /// tgid -> the live entry holding it. Exactly the live entries.
    pub(super) by_tgid: HashMap<u32, ProcKey>,
    /// Lineage parent -> children. The parent need not be in the table yet.
    pub(super) children: HashMap<ProcKey, BTreeSet<ProcKey>>,
    /// Tree root -> members (live or exited).
    pub(super) trees: HashMap<ProcKey, BTreeSet<ProcKey>>,
    pub(super) parked: ParkedExits,
    pub(super) max_entries: usize,
    pub(super) exit_reporting: ExitReporting,
    pub(super) gc_round: u64,
    pub(super) degraded: bool,
    pub(super) dropped: u64,
    pub(super) parked_evicted: u64,
    pub(super) lost: u64,
    pub(super) lineage_gaps: u64,
    pub(super) lineage_rejected: u64,
}

impl Tracker {
    /// An empty table holding at most `max_entries` processes (live and
    /// exited). Exits are taken to be reported for watched processes only.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_tgid: HashMap::new(),
            children: HashMap::new(),
            trees: HashMap::new(),
            parked: ParkedExits::default(),
            max_entries,
            exit_reporting: ExitReporting::default(),
            gc_round: 0,
            degraded: false,
            dropped: 0,
            parked_evicted: 0,
            lost: 0,
            lineage_gaps: 0,
            lineage_rejected: 0,
        }
    }

    /// Says which exits the event source reports (set before `seed`).
    #[must_use]
    pub fn with_exit_reporting(mut self, reporting: ExitReporting) -> Self {
        self.exit_reporting = reporting;
        self
    }

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
        self.parked.shrink();
    }

    /// Marks `key` exited (a known code replaces an unknown one; otherwise
    /// the first exit stands). `false` if `key` is not in the table.
    pub(super) fn mark_exited(&mut self, key: ProcKey, code: u32) -> bool {
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        match entry.exited {
            None => {
                entry.exited = Some(code);
                if self.by_tgid.get(&key.tgid) == Some(&key) {
                    self.by_tgid.remove(&key.tgid);
                }
            }
            Some(EXIT_CODE_UNKNOWN) => entry.exited = Some(code),
            Some(_) => {}
        }
        true
    }

    pub(super) fn set_tree_root(&mut self, key: ProcKey, root: ProcKey) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        match entry.tree_root.replace(root) {
            Some(old) if old == root => return,
            Some(old) => remove_from(&mut self.trees, old, key),
            None => {}
        }
        self.trees.entry(root).or_default().insert(key);
    }

    /// Drops an entry no live entry needs. Its children are unneeded too and
    /// go in the same pass (or, kept by `prune`'s `keep`, stay in the
    /// children index under this key, to join up if it is seen again).
    pub(super) fn remove(&mut self, key: ProcKey) {
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        if let Some(parent) = entry.parent {
            remove_from(&mut self.children, parent, key);
        }
        if let Some(root) = entry.tree_root {
            remove_from(&mut self.trees, root, key);
        }
        if self.by_tgid.get(&key.tgid) == Some(&key) {
            self.by_tgid.remove(&key.tgid);
        }
    }
}

fn remove_from(index: &mut HashMap<ProcKey, BTreeSet<ProcKey>>, at: ProcKey, key: ProcKey) {
    if let Some(set) = index.get_mut(&at) {
        set.remove(&key);
        if set.is_empty() {
            index.remove(&at);
        }
    }
}
