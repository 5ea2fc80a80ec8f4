//! Where a reap finds its tree's members, round after round.
//!
//! Owns: the union of every source of membership a tier has: /proc's parent
//! links from each known member (`reaper::ProcDescendants`); in the eBPF
//! tier the kernel's own lineage (every process its watch map names as a
//! member of the tree); and in the tiers without it, the heirs of the
//! tree's stdio: processes reparented to PID 1 that started after the root
//! and whose own stdin or stdout is the root's end of the host's stdio
//! (what a double-forked or setsid escapee inherits and keeps).
//! Must never: name a process by a bare PID (every member is a full key;
//! the reaper's pidfd check decides whether it is still that process), or
//! count as an heir a process with a live parent (someone else's child), a
//! process older than the root, or one whose stdio is merely some other
//! end of a host's pipe or socket.

use std::path::{Path, PathBuf};

use crate::{
    ownership::fdtable,
    procs::identity::ProcKey,
    procs::procscan,
    reap::reaper::{MemberSource, ProcDescendants},
};

/// A source of members the kernel keeps (the eBPF tier's watch map).
pub type KernelMembers = Box<dyn FnMut() -> Vec<ProcKey> + Send>;

/// The members of one tree, from every source its tier has.
pub struct Lineage {
    procs: ProcDescendants,
    kernel: Option<KernelMembers>,
    heirs: Option<StdioHeirs>,
}

impl Lineage {
    /// /proc's parent links, plus the kernel's lineage where it is kept,
    /// plus the heirs of `stdio_inodes` (the root's end of its stdio, from
    /// the decision) where it is not.
    pub fn new(
        procs: ProcDescendants,
        kernel: Option<KernelMembers>,
        heirs: Option<StdioHeirs>,
    ) -> Self {
        Self {
            procs,
            kernel,
            heirs,
        }
    }
}

impl MemberSource for Lineage {
    fn current_members(&mut self) -> Vec<ProcKey> {
        if let Some(kernel) = &mut self.kernel {
            let found = kernel();
            self.procs.learn(found);
        }
        if let Some(heirs) = &self.heirs {
            self.procs.learn(heirs.find());
        }
        self.procs.current_members()
    }
}

/// Escapees found by what they inherited: for the tiers that do not see
/// forks as they happen.
#[derive(Clone, Debug)]
pub struct StdioHeirs {
    pub proc_root: PathBuf,
    pub root: ProcKey,
    /// Inodes of the root's own end of its stdin and stdout.
    pub inodes: Vec<u64>,
}

/// One process as the heir rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: ProcKey,
    pub ppid: u32,
    /// Inodes behind its fds 0 and 1 (sockets and pipes only).
    pub stdio: [Option<u64>; 2],
}

/// Whether `c` is an heir of the tree rooted at `root` whose stdio ends are
/// `inodes`: reparented to PID 1 (no live parent of its own), started no
/// earlier than the root, and holding one of those ends as its own stdin or
/// stdout.
pub fn is_heir(c: &Candidate, root: ProcKey, inodes: &[u64]) -> bool {
    c.ppid == 1
        && c.key != root
        && c.key.start_ticks >= root.start_ticks
        && c.stdio.iter().flatten().any(|i| inodes.contains(i))
}

impl StdioHeirs {
    /// Every live heir now (one walk of /proc; a process that cannot be
    /// read is simply not an heir).
    pub fn find(&self) -> Vec<ProcKey> {
        if self.inodes.is_empty() {
            return Vec::new();
        }
        let snap = procscan::snapshot(&self.proc_root);
        snap.procs
            .iter()
            .filter(|p| p.ppid == 1 && p.key.start_ticks >= self.root.start_ticks)
            .filter_map(|p| {
                let c = Candidate {
                    key: p.key,
                    ppid: p.ppid,
                    stdio: [0, 1].map(|fd| stdio_inode(&self.proc_root, p.key.tgid, fd)),
                };
                is_heir(&c, self.root, &self.inodes).then_some(c.key)
            })
            .collect()
    }
}

fn stdio_inode(proc_root: &Path, pid: u32, fd: u32) -> Option<u64> {
    let (target, _) = fdtable::read_fd(proc_root, pid, fd).ok()??;
    target.inode().map(|i| match i {
        crate::ownership::Inode::Socket(n) | crate::ownership::Inode::Pipe(n) => n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heirs_are_orphans_younger_than_the_root_holding_its_stdio() {
        let root = ProcKey::new(100, 1000);
        let ends = [555, 556];
        let c = |pid, start, ppid, stdio| Candidate {
            key: ProcKey::new(pid, start),
            ppid,
            stdio,
        };
        let cases = [
            // A setsid escapee that kept the tree's stdin: an heir.
            (c(200, 1500, 1, [Some(555), None]), true),
            (c(201, 1000, 1, [None, Some(556)]), true),
            // Someone's child (a live parent): not ours to judge.
            (c(202, 1500, 77, [Some(555), Some(556)]), false),
            // Older than the root: a reused PID or an unrelated process.
            (c(203, 999, 1, [Some(555), None]), false),
            // The root itself is no heir (it is a member already).
            (c(100, 1000, 1, [Some(555), None]), false),
            // Other stdio: a different socket or pipe, or none.
            (c(204, 1500, 1, [Some(554), Some(7)]), false),
            (c(205, 1500, 1, [None, None]), false),
        ];
        for (cand, want) in cases {
            assert_eq!(is_heir(&cand, root, &ends), want, "{cand:?}");
        }
        assert!(!is_heir(&c(200, 1500, 1, [Some(555), None]), root, &[]));
    }
}
