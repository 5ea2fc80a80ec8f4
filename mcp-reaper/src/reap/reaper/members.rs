//! Where a reap finds members born after its plan was made.
//!
//! Owns: the `MemberSource` trait the reaper asks again and again while it
//! works, and `ProcDescendants`, the source from /proc alone (parent links
//! from known members, checked by start time).
//! Must never: signal anything, or name as a member a process older than
//! the tree's root or a child of a PID that no longer belongs to a known
//! member: a reused PID's children are someone else's. What it returns
//! is still checked by `guard` before anything is opened.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use crate::{procs::identity::ProcKey, procs::procscan};

/// Re-collects the tree's members (members born since the plan was made).
/// May return keys already known; the reaper dedupes.
pub trait MemberSource {
    fn current_members(&mut self) -> Vec<ProcKey>;
}

/// A member source from /proc alone: every process reachable by parent
/// links from a known member. Weaker than the kernel tracker: a child whose
/// parent exited before a scan was reparented and is invisible here, which
/// is why the reaper stops the tree before it scans.
#[derive(Clone, Debug)]
pub struct ProcDescendants {
    proc_root: PathBuf,
    /// Start time of the tree's root: nothing older is a member.
    root_start: u64,
    known: HashSet<ProcKey>,
}

impl ProcDescendants {
    pub fn new(proc_root: impl Into<PathBuf>, root: ProcKey, members: &[ProcKey]) -> Self {
        let mut known: HashSet<ProcKey> = members.iter().copied().collect();
        known.insert(root);
        Self {
            proc_root: proc_root.into(),
            root_start: root.start_ticks,
            known,
        }
    }
}

impl MemberSource for ProcDescendants {
    fn current_members(&mut self) -> Vec<ProcKey> {
        let snap = procscan::snapshot(&self.proc_root);
        if !snap.is_complete() {
            // A broken listing proves nothing about who exists.
            return self.known.iter().copied().collect();
        }
        let by_pid: HashMap<u32, ProcKey> =
            snap.procs.iter().map(|p| (p.key.tgid, p.key)).collect();
        let mut children: HashMap<u32, Vec<ProcKey>> = HashMap::new();
        for p in &snap.procs {
            children.entry(p.ppid).or_default().push(p.key);
        }
        // Walk only from PIDs that still belong to a known member: the
        // children of a reused PID are someone else's.
        let mut queue: Vec<ProcKey> = self
            .known
            .iter()
            .filter(|k| by_pid.get(&k.tgid) == Some(k))
            .copied()
            .collect();
        while let Some(parent) = queue.pop() {
            for &child in children.get(&parent.tgid).into_iter().flatten() {
                if child.start_ticks >= parent.start_ticks
                    && child.start_ticks >= self.root_start
                    && self.known.insert(child)
                {
                    queue.push(child);
                }
            }
        }
        self.known.iter().copied().collect()
    }
}

impl ProcDescendants {
    /// Adds members found another way (the kernel's lineage): they are
    /// walked for children too. Keys older than the root are ignored.
    pub fn learn(&mut self, keys: impl IntoIterator<Item = ProcKey>) {
        self.known.extend(
            keys.into_iter()
                .filter(|k| k.start_ticks >= self.root_start),
        );
    }
}
