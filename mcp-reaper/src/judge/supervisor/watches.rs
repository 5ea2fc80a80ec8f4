//! The kernel's watch map as the supervisor writes it, and the tree table
//! kept across restarts.
//!
//! Owns: writing members' watches (and reporting the ones that failed as
//! lineage gaps), rewriting what a resync finds missing, and saving and
//! restoring the tree table (`persist`).
//! Must never: write a watch for a process known to have exited, or let a
//! watch it failed to write go unreported (`take_gaps`).

use tracing::{debug, info, warn};

use super::{Supervisor, TreeRecord};
use crate::{
    procs::identity::ProcKey,
    procs::tracker::Tracker,
    source::ebpf::{EbpfSource, Watched},
};

impl Supervisor {
    /// The tree table to keep across a restart (`persist`): every tree
    /// with its live members by the tracker's lineage (no /proc reads).
    pub fn saved_table(&self, tracker: &Tracker) -> crate::daemon::persist::SavedTable {
        let trees = self
            .trees
            .values()
            .map(|t| {
                let mut members = tracker.tree_members(t.root);
                members.extend(tracker.descendants(t.root));
                members.push(t.root);
                members.retain(|k| tracker.get(*k).is_some_and(|e| e.is_live()));
                crate::daemon::persist::SavedTree {
                    root: t.root,
                    host: t.host,
                    host_rule: t.host_rule.clone(),
                    server: t.server.clone(),
                    members,
                }
            })
            .collect();
        crate::daemon::persist::SavedTable::new(trees)
    }

    /// Takes back the trees a previous run saved (already verified against
    /// /proc): each live member is adopted into its tree (and watched in
    /// the kernel), and a tree this run has not found (its root exited
    /// while the daemon was down) is known again, to be judged like any
    /// other: a remnant when nobody holds what its members hold.
    pub fn restore(
        &mut self,
        saved: Vec<crate::daemon::persist::SavedTree>,
        tracker: &mut Tracker,
        mut ebpf: Option<&mut EbpfSource>,
    ) {
        for t in saved {
            let root = t.root;
            for &m in &t.members {
                tracker.adopt(m, root);
                if let Some(src) = ebpf.as_deref_mut() {
                    self.watch_member(src, m, root);
                }
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = self.trees.entry(root) {
                info!(root = %root, members = t.members.len(), "tree restored from the previous run's table");
                slot.insert(TreeRecord::new(root, t.server, t.host, t.host_rule, None));
            }
            self.recheck.insert(root);
        }
    }

    /// Writes the kernel's watch for `member` of the tree rooted at `root`.
    /// A watch that cannot be written is a gap in lineage (`take_gaps`).
    pub(super) fn watch_member(&mut self, src: &mut EbpfSource, member: ProcKey, root: ProcKey) {
        match src.watch_member(member, root) {
            Ok(Watched::Added) => {
                self.watched.entry(root).or_default().insert(member);
            }
            Ok(Watched::Gone) => debug!("not watching {member}: it has exited"),
            Err(e) => {
                warn!("cannot watch {member} of tree {root}: {e:#}");
                self.gaps.push(e.cause());
            }
        }
    }

    /// Writes the watches a resync finds missing: each host's, and each
    /// live member's of every tree, where the kernel holds no entry naming
    /// that process (a fork the map had no room for, a watch that failed).
    pub fn rewatch(&mut self, tracker: &Tracker, src: &mut EbpfSource) {
        let names = |src: &EbpfSource, k: ProcKey| {
            src.watched(k.tgid)
                .is_some_and(|e| ProcKey::from_kernel(k.tgid, e.self_start_ns) == k)
        };
        let hosts: Vec<ProcKey> = self.hosts.keys().copied().collect();
        for h in hosts {
            if !names(src, h)
                && let Err(e) = src.watch_host(h)
            {
                warn!("cannot watch host {h}: {e:#}");
                self.gaps.push(e.cause());
            }
        }
        let roots: Vec<ProcKey> = self.trees.keys().copied().collect();
        for root in roots {
            for m in self.members(root, tracker) {
                if !names(src, m) {
                    self.watch_member(src, m, root);
                }
            }
        }
    }
}
