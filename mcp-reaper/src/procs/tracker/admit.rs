//! Admission: a process into the table, a lineage parent onto an entry,
//! and an entry into a tree.
//!
//! Owns: inserting an entry (the table's bound, a parked exit applied, PID
//! reuse settled by start time, the indexes linked); resolving and filling
//! lineage parents; and tree membership by lineage: the kernel's claim
//! that a process is in a tree is admitted only when the chain of lineage
//! parents reaches that tree's root, otherwise counted and kept on the
//! entry until lineage joins up (see the `tracker` module header).
//! Must never: admit a tree member whose lineage the table cannot show
//! (the one exception is `adopt`, on a previous run's word), take a parent
//! that started after its child, or grow the table past its bound.

use super::{
    entry::{EXIT_CODE_UNKNOWN, ExitReporting, ProcEntry},
    table::Tracker,
};
use crate::{procs::identity::ProcKey, source::event::Watch};

impl Tracker {
    /// Records watch state decided in userspace (a process found to be a
    /// host, or the root of a tree); a tree is joined only as lineage shows
    /// (see the module header). `false` if `key` is not in the table.
    pub fn mark_watched(&mut self, key: ProcKey, watch: Watch) -> bool {
        if !self.entries.contains_key(&key) {
            return false;
        }
        self.apply_watch(key, watch);
        true
    }

    /// Makes `key` a member of the tree rooted at `root` on the word of a
    /// previous run's tree table (`persist`), which wrote it from the
    /// kernel's lineage: lineage this table cannot show any more (the
    /// member was reparented while the daemon was down). The caller has
    /// checked that `key` is alive with that start time. `false` if `key`
    /// is not in the table.
    pub fn adopt(&mut self, key: ProcKey, root: ProcKey) -> bool {
        if !self.entries.contains_key(&key) {
            return false;
        }
        self.set_tree_root(key, root);
        if let Some(e) = self.entries.get_mut(&key) {
            e.unproven_root = None;
        }
        true
    }

    /// Adds a process not yet in the table. `false` when the table is full.
    pub(super) fn insert(&mut self, mut entry: ProcEntry) -> bool {
        if self.entries.len() >= self.max_entries {
            self.dropped += 1;
            self.degraded = true;
            return false;
        }
        let key = entry.key;
        if let Some(code) = self.parked.take(key) {
            entry.exited = Some(code);
        }
        if entry.is_live() {
            match self.by_tgid.get(&key.tgid).copied() {
                // A later process holds the PID: this one's events are late
                // and it is long gone.
                Some(newer) if newer.start_ticks > key.start_ticks => {
                    entry.exited = Some(EXIT_CODE_UNKNOWN);
                }
                // PID reuse: the earlier holder has exited.
                Some(older) => {
                    self.mark_exited(older, EXIT_CODE_UNKNOWN);
                    self.by_tgid.insert(key.tgid, key);
                }
                None => {
                    self.by_tgid.insert(key.tgid, key);
                }
            }
        }
        if let Some(parent) = entry.parent {
            self.children.entry(parent).or_default().insert(key);
        }
        if let Some(root) = entry.tree_root {
            self.trees.entry(root).or_default().insert(key);
        }
        self.entries.insert(key, entry);
        if self.children.contains_key(&key) {
            self.readmit_below(key);
        }
        true
    }

    /// The table's key for a parent named by an event. `None` for no
    /// parent (PID 0) and for impossible ones (itself, or one that started
    /// after the child). A parent with start time 0 comes from a source that
    /// knows only its PID and is looked up by tgid.
    pub(super) fn resolve_parent(&self, parent: ProcKey, child: ProcKey) -> Option<ProcKey> {
        if parent.tgid == 0 || parent.tgid == child.tgid {
            return None;
        }
        let parent = if parent.start_ticks == 0 && !self.entries.contains_key(&parent) {
            *self.by_tgid.get(&parent.tgid)?
        } else {
            parent
        };
        (parent.start_ticks <= child.start_ticks).then_some(parent)
    }

    /// Sets the lineage parent of an entry that has none.
    pub(super) fn fill_parent(&mut self, key: ProcKey, parent: Option<ProcKey>) {
        let Some(parent) = parent else { return };
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if entry.parent.is_none() {
            entry.parent = Some(parent);
            self.children.entry(parent).or_default().insert(key);
            self.readmit_below(key);
        }
    }

    pub(super) fn apply_watch(&mut self, key: ProcKey, watch: Watch) {
        if let Some(root) = watch.root {
            self.claim(key, root);
        }
        let reported = self.exit_reported_for(watch);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.host |= watch.host;
            entry.exit_reported |= reported;
        }
    }

    /// The kernel says `key` belongs to the tree rooted at `root`: admitted
    /// when lineage shows it, otherwise refused, counted, and kept on the
    /// entry in case the missing lineage arrives later.
    pub(super) fn claim(&mut self, key: ProcKey, root: ProcKey) {
        if self.descends_from(key, root) {
            self.set_tree_root(key, root);
            if let Some(e) = self.entries.get_mut(&key) {
                e.unproven_root = None;
            }
            return;
        }
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if e.tree_root == Some(root) {
            return; // already a member by lineage
        }
        if e.unproven_root != Some(root) {
            e.unproven_root = Some(root);
            self.lineage_rejected += 1;
        }
    }

    /// Lineage through `key` just changed (it appeared, or got its parent):
    /// claims below it that lineage now shows are admitted.
    pub(super) fn readmit_below(&mut self, key: ProcKey) {
        let mut below = vec![key];
        below.extend(self.descendants(key));
        for k in below {
            if let Some(root) = self.entries.get(&k).and_then(|e| e.unproven_root)
                && self.descends_from(k, root)
            {
                self.claim(k, root);
            }
        }
    }

    pub(super) fn exit_reported_for(&self, watch: Watch) -> bool {
        self.exit_reporting == ExitReporting::All || watch.root.is_some() || watch.host
    }

    /// The tree a forked child belongs to by the kernel's rule applied to
    /// its lineage parent: a host's child roots a new tree, a member's child
    /// joins its parent's tree. Used when the kernel did not say (or said
    /// what lineage cannot show): either way the child is linked to that
    /// root through its parent.
    pub(super) fn parent_tree_root(
        &self,
        child: ProcKey,
        parent: Option<ProcKey>,
    ) -> Option<ProcKey> {
        let parent = self.entries.get(&parent?)?;
        if parent.host {
            Some(child)
        } else {
            parent.tree_root
        }
    }

    /// A forked child in no tree yet joins the one `parent_tree_root` gives.
    pub(super) fn inherit_tree(&mut self, child: ProcKey, parent: Option<ProcKey>) {
        if self
            .entries
            .get(&child)
            .is_some_and(|e| e.tree_root.is_none())
            && let Some(root) = self.parent_tree_root(child, parent)
        {
            self.set_tree_root(child, root);
        }
    }
}
