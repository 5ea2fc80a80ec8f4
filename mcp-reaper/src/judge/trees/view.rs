//! What `scan`, the audit log and the control socket show of a tree: the
//! tree, its members, its host and relay chain, and the fds that hold the
//! far end of its stdio.
//!
//! Owns: `TreeView`, `MemberView`, `HostView`, `OwnerFd` (a holder named
//! by pid, start time, fd and inode), `DaemonVerdict` (what only a running
//! daemon knows of a tree) and `still_holds`, the cheap recheck that a
//! recorded holder still holds the same far end.
//! Must never: signal anything, or let a recycled PID or a reused fd
//! number stand for a recorded holder: `still_holds` checks all four.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::TreeState;
use crate::{
    ownership::{FdHolder, Inode, StdioOwnership, fdtable},
    procs::identity::ProcKey,
};

/// The host process at the far end of a tree's stdio (or its parent).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostView {
    pub pid: u32,
    pub start_ticks: u64,
    pub comm: String,
    /// Host rule name (a bounded label), `generic` or `unknown`.
    pub rule: String,
    /// The PID inside the host's own PID namespace (what an operator in
    /// its container sees), when it differs from `pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// The host's network namespace (`net:[INODE]`), when it is not the
    /// daemon's: a host in a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_ns: Option<String>,
}

/// One member process of a tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    pub pid: u32,
    pub start_ticks: u64,
    pub ppid: u32,
    pub comm: String,
    /// The PID inside the member's own PID namespace, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// Command line with control characters escaped.
    pub cmdline: String,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
}

/// One MCP server tree.
#[derive(Clone, Debug, Serialize)]
pub struct TreeView {
    pub root: ProcKey,
    /// Bounded server identity (e.g. `server-everything`).
    pub server: String,
    pub host: Option<HostView>,
    /// Session id from the environment, when the host passes one.
    pub session_id: Option<String>,
    /// The host fds that hold the far end of the root's stdio.
    pub owner_fds: Vec<OwnerFd>,
    /// The host side of a relay chain, owner first, then each relay or
    /// anchor hop down to the one holding the root's stdio; empty when the
    /// holder is no relay. Never part of the tree.
    pub chain: Vec<HostView>,
    /// The process whose upstream far end was released (a relay hop, or
    /// the root itself), when orphaned by a release.
    pub released_link: Option<ProcKey>,
    pub state: TreeState,
    /// Who judged `state`: `scan` (this snapshot) or `daemon` (a running
    /// daemon's view, which adds what needs history: idle, superseded,
    /// session-ended).
    pub judged_by: &'static str,
    /// Why the tree is in its state (`peer-released`, `host-exited`, ...).
    pub reason: Option<String>,
    pub age_seconds: u64,
    pub members: Vec<MemberView>,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// The full ownership evidence; `null` in a daemon's answer, which
    /// keeps the verdict and its reason, not the raw evidence.
    pub ownership: Option<StdioOwnership>,
    /// What only a running daemon knows (clocks, releases, decisions);
    /// absent from a standalone scan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonVerdict>,
}

/// What a running daemon knows of a tree that one look at /proc cannot:
/// how long it has been orphaned or idle, the policy's decision and the
/// grace left before a reap, and the processes whose release it stands on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonVerdict {
    /// The policy's action for the tree's reason (`enforce`, `observe`),
    /// when it has an orphan or suspect reason.
    pub action: Option<String>,
    /// The last decision (`wait`, `enforce`, `observe`, `dry-run`, `hold`,
    /// `none`).
    pub decision: Option<String>,
    /// Since the current orphan or suspect reason was first confirmed.
    pub orphaned_for_seconds: Option<u64>,
    /// Grace left before the tree is reaped, when the policy enforces its
    /// reason (0: due at the next look).
    pub grace_left_seconds: Option<u64>,
    /// How long the tree had been silent at its last check.
    pub idle_for_seconds: Option<u64>,
    /// A reap is under way.
    pub reaping: bool,
    /// The processes a host's `release` covered.
    pub released_by: Vec<ProcKey>,
}

/// A host fd holding the far end of a tree's stdio, named completely: the
/// process by (pid, start time), and the object by its inode, so that a
/// recycled PID or a reused fd number never stands for this holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerFd {
    pub pid: u32,
    pub start_ticks: u64,
    pub fd: u32,
    /// Inode of the socket or pipe behind `fd` when it was seen; 0 when the
    /// fd could no longer be read (such an entry matches no fd-named
    /// release).
    pub inode: u64,
}

impl OwnerFd {
    /// The holder `h` as it is now: its fd's inode is read from /proc.
    pub fn observe(h: &FdHolder, proc_root: &Path) -> Self {
        let inode = fdtable::read_fd(proc_root, h.key.tgid, h.fd)
            .ok()
            .flatten()
            .and_then(|(target, _)| target.inode())
            .map_or(0, |i| match i {
                Inode::Socket(n) | Inode::Pipe(n) => n,
            });
        Self {
            pid: h.key.tgid,
            start_ticks: h.key.start_ticks,
            fd: h.fd,
            inode,
        }
    }

    pub fn key(&self) -> ProcKey {
        ProcKey::new(self.pid, self.start_ticks)
    }
}

/// Whether one of `owners` (recorded at a full check) still holds the far
/// end `peer`: that process (pid and start time) still has that fd open on
/// that inode. Two small reads per owner; no fd table is listed.
pub fn still_holds(owners: &[OwnerFd], peer: u64, proc_root: &Path) -> bool {
    owners.iter().any(|o| {
        o.inode == peer
            && fdtable::read_fd(proc_root, o.pid, o.fd)
                .ok()
                .flatten()
                .and_then(|(t, _)| t.inode())
                == Some(Inode::Socket(peer))
            && fdtable::proc_key(proc_root, o.pid) == Some(o.key())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_owner_still_holds_only_the_same_fd_on_the_same_peer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let proc_dir = p.join("7");
        std::fs::create_dir_all(proc_dir.join("fd")).unwrap();
        std::fs::write(
            proc_dir.join("stat"),
            "7 (h) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0",
        )
        .unwrap();
        std::fs::create_dir_all(proc_dir.join("fdinfo")).unwrap();
        for (fd, link) in [(5, "socket:[900]"), (6, "socket:[901]")] {
            std::os::unix::fs::symlink(link, proc_dir.join(format!("fd/{fd}"))).unwrap();
            std::fs::write(
                proc_dir.join(format!("fdinfo/{fd}")),
                "pos:\t0\nflags:\t02\n",
            )
            .unwrap();
        }
        let owner = |start, fd, inode| OwnerFd {
            pid: 7,
            start_ticks: start,
            fd,
            inode,
        };
        let cases = [
            (vec![owner(100, 5, 900)], 900, true),
            // Recorded for another peer, or the fd now holds another one.
            (vec![owner(100, 5, 900)], 901, false),
            (vec![owner(100, 6, 900)], 900, false),
            // The PID now names another process.
            (vec![owner(99, 5, 900)], 900, false),
            // Closed since.
            (vec![owner(100, 8, 900)], 900, false),
            (vec![], 900, false),
            (vec![owner(100, 8, 900), owner(100, 6, 901)], 901, true),
        ];
        for (owners, peer, want) in cases {
            assert_eq!(still_holds(&owners, peer, p), want, "{owners:?} {peer}");
        }
    }
}
