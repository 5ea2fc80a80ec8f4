//! The process table against /proc: filling it at start-up, making it
//! agree again after events were lost, and refreshing what /proc shows of
//! one process.
//!
//! Owns: `seed`, `resync` (the only way `degraded` is cleared) and
//! `refresh`; entries they add have origin `Snapshot`, their parent the
//! ppid the scan showed.
//! Must never: read /proc itself (scans come in from `procscan`), revive
//! an exit already recorded, or overwrite the lineage of an entry events
//! already gave one.

use std::collections::{HashMap, HashSet};

use super::{
    entry::{EXIT_CODE_UNKNOWN, ExitReporting, Origin, ProcEntry},
    table::Tracker,
};
use crate::{procs::identity::ProcKey, procs::procscan::ProcInfo};

impl Tracker {
    /// Fills the table from a /proc scan at start-up. Processes already in
    /// the table (from events that came first) keep their lineage; their
    /// comm and command line are refreshed. Nothing is marked exited.
    pub fn seed(&mut self, snapshot: &[ProcInfo]) {
        self.absorb(snapshot);
    }

    /// Makes the table agree with a /proc scan after events were lost:
    /// live entries missing from the scan (or zombies in it) are marked
    /// exited, processes missing from the table are added (origin
    /// `Snapshot`, parent from ppid), and entries present in both keep their
    /// lineage and tree (an exit already recorded stands). Exited entries
    /// with no live descendant that the scan does not show are dropped to
    /// make room. Clears `degraded` unless the table overflows again.
    ///
    /// Take the scan while no events are applied, and apply the events
    /// queued meanwhile afterwards: they are idempotent against the scan.
    pub fn resync(&mut self, snapshot: &[ProcInfo]) {
        let shown: HashSet<ProcKey> = snapshot.iter().map(|p| p.key).collect();
        // Zombies are exited before the prune, so that nothing is kept
        // for them alone: lineage matters only to live descendants.
        let alive: HashSet<ProcKey> = snapshot
            .iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.key)
            .collect();
        let gone: Vec<ProcKey> = self
            .entries
            .values()
            .filter(|e| e.is_live() && !alive.contains(&e.key))
            .map(|e| e.key)
            .collect();
        for key in gone {
            self.mark_exited(key, EXIT_CODE_UNKNOWN);
        }
        self.degraded = false;
        // Entries the scan shows are kept, exited or not, so that `absorb`
        // finds them instead of adding them back as live.
        self.prune(&shown);
        self.absorb(snapshot);
    }

    /// Updates comm and command line from a fresh read of /proc. `false` if
    /// the process is not in the table.
    pub fn refresh(&mut self, info: &ProcInfo) -> bool {
        let Some(entry) = self.entries.get_mut(&info.key) else {
            return false;
        };
        entry.comm.clone_from(&info.comm);
        entry.cmdline.clone_from(&info.cmdline);
        true
    }

    /// Adds what a /proc scan shows and the table lacks; refreshes the rest.
    fn absorb(&mut self, snapshot: &[ProcInfo]) {
        let by_pid: HashMap<u32, ProcKey> = snapshot.iter().map(|p| (p.key.tgid, p.key)).collect();
        // Oldest first: parents before children, and when the table fills
        // up the processes dropped are the newest.
        let mut order: Vec<&ProcInfo> = snapshot.iter().collect();
        order.sort_by_key(|p| (p.key.start_ticks, p.key.tgid));
        for info in order {
            let key = info.key;
            let parent = if info.ppid == 0 {
                None
            } else {
                let ppid_key = by_pid
                    .get(&info.ppid)
                    .copied()
                    .unwrap_or(ProcKey::new(info.ppid, 0));
                self.resolve_parent(ppid_key, key)
            };
            if self.entries.contains_key(&key) {
                self.refresh(info);
                self.fill_parent(key, parent);
            } else {
                // Children of tree members are watched by the kernel from
                // birth; one added from /proc joins its parent's tree.
                let tree_root = parent
                    .and_then(|p| self.entries.get(&p))
                    .filter(|p| !p.host)
                    .and_then(|p| p.tree_root);
                self.insert(ProcEntry {
                    key,
                    parent,
                    comm: info.comm.clone(),
                    cmdline: info.cmdline.clone(),
                    origin: Origin::Snapshot,
                    exited: None,
                    tree_root,
                    host: false,
                    exit_reported: self.exit_reporting == ExitReporting::All,
                    unproven_root: None,
                });
            }
            if info.is_zombie() {
                self.mark_exited(key, EXIT_CODE_UNKNOWN);
            }
        }
    }
}
