//! Stdio ownership: who holds the far end of a tree root's stdin and stdout.
//!
//! Owns: resolving the root's fds 0 and 1 to a kernel object, finding the
//! processes outside the tree that hold the other end (candidates first,
//! all of /proc only when they hold nothing), and the release verdict that
//! the kernel confirms (`sockdiag`) or a complete /proc scan proves (pipes).
//! The verdict itself is `judge`'s table.
//! Must never: call a tree released on a guess (a partial scan, a process
//! or fd table it could not read, a socket the kernel did not describe, a
//! `shutdown()` without close, a peer the kernel still records that no
//! process was seen to hold), signal or touch any process, or name a
//! process by a bare PID.
//!
//! Release rules:
//! - UNIX stream/seqpacket socket: released when sock_diag shows no peer
//!   (inode 0 or absent) and shutdown 3 on the root's end: the kernel's own
//!   record that the last file of the far end was closed. A peer that still
//!   exists but is held only by tree members counts as released too
//!   ("peer-held-in-tree"): nobody outside the tree can ever write to the
//!   root again, which is the leak this daemon exists for (a server that
//!   inherited both ends). It needs a complete walk of /proc (every live
//!   process read): otherwise an unreadable process may hold the far end,
//!   and the answer is unknown ("scan-incomplete"). A peer that exists but
//!   that no process was seen to hold is unknown ("peer-unseen"), never a
//!   release: the walk cannot see every holder (a thread with its own fd
//!   table, a group whose leader exited, io_uring registered files, a far
//!   end in flight in an SCM_RIGHTS message, which may wait there for any
//!   time). Datagram sockets get no shutdown on release and are never
//!   judged released.
//! - Pipe: released when the kernel says no file holds the other end (a
//!   `pidfd_getfd` duplicate of the root's own end polls POLLHUP, or
//!   POLLERR for a write end), or when no process outside the tree holds
//!   the other end with the opposite mode (writer for the root's read end,
//!   reader for its write end) after a complete scan of /proc. Pipes have
//!   no peer record naming who holds the other end.
//! - The verdict follows fd 0 (stdin): the MCP shutdown begins with the host
//!   closing the server's stdin. Owners are reported for fds 0 and 1.
//! - Processes in `tree_members` are never owners. The daemon's own
//!   duplicate of the root's stdin (userspace tier) is the root's end, not
//!   the far end, so it changes nothing; a caller holding far ends itself
//!   adds its own PID to the exclusion set.

pub mod chain;
pub mod fdtable;
pub mod judge;
#[cfg(test)]
mod judge_tests;
pub mod netns;
pub mod sockdiag;
pub mod stdin_watch;
#[cfg(test)]
mod unreadable_tests;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

pub use fdtable::{FdHolder, FdMode, FdScan, FdTarget, Inode};
pub use judge::{Judgement, Kernel, PEER_RELEASED, PEER_UNSEEN, Seen, judge};
pub use sockdiag::{SockDiagError, UnixKind, UnixSockInfo, unix_socket, unix_sockets_dump};

use crate::procs::identity::ProcKey;

/// The stdio fds whose far ends define ownership.
pub const STDIO_FDS: [u32; 2] = [0, 1];

/// What one of the root's stdio fds points at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StdioObject {
    UnixSocket {
        inode: u32,
        peer: Option<u32>,
        shutdown: u8,
    },
    Pipe {
        inode: u64,
    },
    Tty,
    File,
    Closed,
    Other,
}

/// The far end of one stdio fd.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FdOwnership {
    pub fd: u32,
    pub object: StdioObject,
    /// Holders of the far end outside the tree (for pipes: with the
    /// opposite mode). From the candidates alone when they held it.
    pub owners: Vec<FdHolder>,
    pub released: bool,
    /// Why `released` is what it is, when there is more to say.
    pub reason: Option<&'static str>,
}

/// The tree's ownership verdict.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OwnerState {
    /// Someone outside the tree holds the far end of the root's stdin.
    Held { owners: Vec<FdHolder> },
    /// The far end of the root's stdin was released (see the module rules).
    Released { reason: &'static str },
    /// Released, and every process that held the far end before is gone.
    HostGone,
    /// Cannot tell; never a reason to act.
    Unknown { reason: &'static str },
}

impl OwnerState {
    /// Refines `Released` into `HostGone` when every owner seen earlier has
    /// exited (by `ProcKey`, so a reused PID does not count as alive).
    pub fn with_previous_owners(self, previous: &[FdHolder], proc_root: &Path) -> Self {
        match self {
            Self::Released { .. }
                if !previous.is_empty()
                    && previous
                        .iter()
                        .all(|h| fdtable::proc_key(proc_root, h.key.tgid) != Some(h.key)) =>
            {
                Self::HostGone
            }
            other => other,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StdioOwnership {
    pub root: ProcKey,
    pub fds: Vec<FdOwnership>,
    pub state: OwnerState,
    /// Processes whose fd tables were read, and whether /proc was walked.
    pub processes_scanned: u32,
    pub full_scan: bool,
}

/// Which modes of the far end's inode make a holder an owner.
type ModeFilter = fn(FdMode) -> bool;

/// What the far end of one fd is, before holders are looked up.
struct Pending {
    own: FdOwnership,
    /// The inode to look for, which modes of it count, and what the kernel
    /// says of it.
    far: Option<(Inode, ModeFilter, Kernel)>,
}

impl Pending {
    /// Records a verdict on the far end.
    fn set(&mut self, j: Judgement) {
        self.own.record(j);
    }
}

impl FdOwnership {
    /// Records `judge`'s verdict on this fd's far end.
    pub(crate) fn record(&mut self, j: Judgement) {
        match j {
            Judgement::Held => {}
            Judgement::Released(r) => {
                self.released = true;
                self.reason = Some(r);
            }
            Judgement::Unknown(r) => self.reason = Some(r),
        }
    }
}

fn any_mode(_: FdMode) -> bool {
    true
}

fn resolve(root: ProcKey, fd: u32, proc_root: &Path) -> Pending {
    let mut own = FdOwnership {
        fd,
        object: StdioObject::Other,
        owners: Vec::new(),
        released: false,
        reason: None,
    };
    let (target, mode) = match fdtable::read_fd(proc_root, root.tgid, fd) {
        Ok(Some(t)) => t,
        Ok(None) => {
            own.object = StdioObject::Closed;
            return Pending { own, far: None };
        }
        Err(_) => {
            own.reason = Some("fd-unreadable");
            return Pending { own, far: None };
        }
    };
    match target {
        FdTarget::Socket(ino) => resolve_socket(own, ino, root, proc_root),
        FdTarget::Pipe(ino) => {
            own.object = StdioObject::Pipe { inode: ino };
            // The root reads its stdin pipe: the far end writes, and the
            // other way round. Without fdinfo, the stdio convention decides.
            let root_reads = mode.map_or(fd == 0, |m| m == FdMode::Read);
            let opposite: ModeFilter = if root_reads {
                FdMode::can_write
            } else {
                FdMode::can_read
            };
            let kernel = if other_end_closed(root, fd, root_reads, proc_root) {
                Kernel::PipeClosed
            } else {
                Kernel::Pipe
            };
            Pending {
                own,
                far: Some((Inode::Pipe(ino), opposite, kernel)),
            }
        }
        FdTarget::Tty(_) => {
            own.object = StdioObject::Tty;
            Pending { own, far: None }
        }
        FdTarget::Path(_) => {
            own.object = StdioObject::File;
            Pending { own, far: None }
        }
        FdTarget::AnonInode(_) | FdTarget::Other(_) => Pending { own, far: None },
    }
}

/// A stdio fd that is a socket: what sock_diag says of it and its peer,
/// asked in the socket's own network namespace (`netns`). A socket that
/// namespace's sock_diag does not know, a namespace that cannot be
/// learned or entered, or a failed query, is a reason for `unknown`,
/// never a release.
fn resolve_socket(mut own: FdOwnership, ino: u64, root: ProcKey, proc_root: &Path) -> Pending {
    let Ok(ino32) = u32::try_from(ino) else {
        own.reason = Some("socket-inode-out-of-range");
        return Pending { own, far: None };
    };
    let info = match netns::unix_socket(root, own.fd, ino32, proc_root) {
        Ok(Some(info)) => info,
        Ok(None) => {
            own.reason = Some("socket-not-unix-here");
            return Pending { own, far: None };
        }
        Err(e) => {
            own.reason = Some(e.reason());
            return Pending { own, far: None };
        }
    };
    own.object = StdioObject::UnixSocket {
        inode: ino32,
        peer: info.peer_inode,
        shutdown: info.shutdown,
    };
    let kernel = Kernel::socket(info.peer_inode, info.shutdown);
    match (info.kind, info.peer_inode) {
        (UnixKind::Dgram, _) => {
            own.reason = Some("dgram-socket");
            Pending { own, far: None }
        }
        (_, Some(peer)) => Pending {
            own,
            far: Some((
                Inode::Socket(u64::from(peer)),
                any_mode as ModeFilter,
                kernel,
            )),
        },
        // Released or unconnected: no far end to look for.
        (_, None) => {
            let mut p = Pending { own, far: None };
            p.set(judge(kernel, false, Seen::Nowhere));
            p
        }
    }
}

/// Whether the kernel says the other end of `root`'s pipe fd `fd` is held
/// by no file at all: a `pidfd_getfd` duplicate of the root's own end (the
/// same open file, so no count changes) polls POLLHUP (read end) or
/// POLLERR (write end). False whenever that cannot be asked, and always
/// for a `proc_root` that numbers processes otherwise than this process's
/// PID namespace (pidfds are opened by PIDs of that namespace).
fn other_end_closed(root: ProcKey, fd: u32, root_reads: bool, proc_root: &Path) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    if !crate::procs::pidns::shows_our_pids(proc_root) {
        return false;
    }
    let Some(pid) = i32::try_from(root.tgid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
        return false;
    };
    if fdtable::proc_key(proc_root, root.tgid) != Some(root) {
        return false; // reused: the pidfd names another process
    }
    let Ok(raw) = i32::try_from(fd) else {
        return false;
    };
    let Ok(dup) = pidfd_getfd(&pidfd, raw, PidfdGetfdFlags::empty()) else {
        return false;
    };
    // Still the same pipe the caller resolved? (fd may have been replaced.)
    let same = fdtable::read_fd(proc_root, root.tgid, fd).is_ok_and(|t| {
        let fstat = rustix::fs::fstat(&dup);
        matches!((t, fstat), (Some((FdTarget::Pipe(i), _)), Ok(st)) if st.st_ino == i)
    });
    let flags = if root_reads {
        PollFlags::IN
    } else {
        PollFlags::OUT
    };
    let mut fds = [PollFd::new(&dup, flags)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let gone = if root_reads {
        PollFlags::HUP
    } else {
        PollFlags::ERR
    };
    same && poll(&mut fds, Some(&zero)).is_ok() && fds[0].revents().contains(gone)
}

fn collect(p: &mut Pending, scan: &FdScan) {
    let Some((inode, counts, _)) = p.far else {
        return;
    };
    for h in scan.holders.get(&inode).into_iter().flatten() {
        if counts(h.mode) && !p.own.owners.contains(h) {
            p.own.owners.push(*h);
        }
    }
}

/// Parent PID (field 4 of /proc/PID/stat).
fn ppid(proc_root: &Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    fdtable::stat_field(&stat, 4)?.parse().ok()
}

/// Who owns the far ends of `root`'s stdin and stdout.
///
/// `tree_members`: PIDs that are never owners (the tree, including the
/// root). `candidates_first`: PIDs to read before walking all of /proc
/// (known hosts); the root's parent is added. `proc_root`: normally /proc.
pub fn stdio_owner(
    root: ProcKey,
    tree_members: &HashSet<u32>,
    candidates_first: &[u32],
    proc_root: &Path,
) -> StdioOwnership {
    let mut out = StdioOwnership {
        root,
        fds: Vec::new(),
        state: OwnerState::Unknown {
            reason: "root-gone",
        },
        processes_scanned: 0,
        full_scan: false,
    };
    if fdtable::proc_key(proc_root, root.tgid) != Some(root) {
        return out;
    }
    let (fds, scanned, full) =
        fd_owners(root, &STDIO_FDS, tree_members, candidates_first, proc_root);
    out.fds = fds;
    out.processes_scanned = scanned;
    out.full_scan = full;
    out.state = verdict(&out.fds);
    out
}

/// The far-end holders of any fds of `root` (stdio, a relay's control
/// socket, a lineage socket), under the same rules as [`stdio_owner`].
/// Returns the per-fd verdicts, the processes read and whether /proc was
/// walked. The caller checks that `root` is still the same process.
pub fn fd_owners(
    root: ProcKey,
    fds: &[u32],
    tree_members: &HashSet<u32>,
    candidates_first: &[u32],
    proc_root: &Path,
) -> (Vec<FdOwnership>, u32, bool) {
    let mut scanned = 0;
    let mut full_scan = false;
    let mut pending: Vec<Pending> = fds.iter().map(|&fd| resolve(root, fd, proc_root)).collect();

    let mut exclude = tree_members.clone();
    exclude.insert(root.tgid);
    let want: HashSet<Inode> = pending.iter().filter_map(|p| p.far.map(|f| f.0)).collect();
    if !want.is_empty() {
        let mut candidates: Vec<u32> = candidates_first.to_vec();
        candidates.extend(ppid(proc_root, root.tgid));
        let scan = fdtable::scan_pids(proc_root, candidates.iter().copied(), &exclude, Some(&want));
        scanned += scan.processes;
        for p in &mut pending {
            collect(p, &scan);
        }
        let missing: HashSet<Inode> = pending
            .iter()
            .filter(|p| p.own.owners.is_empty())
            .filter_map(|p| p.far.map(|f| f.0))
            .collect();
        if !missing.is_empty() {
            full_scan = true;
            // The candidates are not read again: an unreadable one leaves
            // the walk incomplete as much as any other process would.
            exclude.extend(candidates);
            // The walk runs even when a candidate was unreadable: an owner
            // it finds elsewhere still holds the tree (only "nobody holds
            // it" needs every table read).
            let walked = match fdtable::scan_all(proc_root, &exclude, Some(&missing)) {
                Ok(all) => {
                    scanned += all.processes;
                    for p in &mut pending {
                        if p.own.owners.is_empty() {
                            collect(p, &all);
                        }
                    }
                    all.complete()
                }
                Err(_) => false,
            };
            let complete = scan.complete() && walked;
            // Who still holds the far end inside the tree (sockets only:
            // the root's own pipe end is the same inode).
            let inside = fdtable::scan_pids(
                proc_root,
                tree_members.iter().copied().chain([root.tgid]),
                &HashSet::new(),
                Some(&missing),
            );
            for p in &mut pending {
                judge_unowned(p, &inside, complete);
            }
        }
    }
    for p in &mut pending {
        p.own.owners.sort();
    }
    (
        pending.into_iter().map(|p| p.own).collect(),
        scanned,
        full_scan,
    )
}

/// Judges an fd whose far end no candidate held, after the walk.
fn judge_unowned(p: &mut Pending, inside: &FdScan, complete: bool) {
    let Some((inode, _, kernel)) = p.far else {
        return;
    };
    let seen = if !p.own.owners.is_empty() {
        Seen::Outside
    } else if matches!(inode, Inode::Socket(_))
        && inside.holders.get(&inode).is_some_and(|v| !v.is_empty())
    {
        Seen::InsideOnly
    } else {
        Seen::Nowhere
    };
    p.set(judge(kernel, complete, seen));
}

/// The tree's ownership from its stdio fds' verdicts: stdin's decides.
pub(crate) fn verdict(fds: &[FdOwnership]) -> OwnerState {
    let Some(stdin) = fds.iter().find(|f| f.fd == 0) else {
        return OwnerState::Unknown { reason: "no-stdin" };
    };
    if stdin.released {
        return OwnerState::Released {
            reason: PEER_RELEASED,
        };
    }
    let owners: BTreeSet<FdHolder> = fds.iter().flat_map(|f| f.owners.iter().copied()).collect();
    if !stdin.owners.is_empty() {
        return OwnerState::Held {
            owners: owners.into_iter().collect(),
        };
    }
    OwnerState::Unknown {
        reason: stdin.reason.unwrap_or(match stdin.object {
            StdioObject::Tty => "stdin-is-tty",
            StdioObject::File => "stdin-is-file",
            StdioObject::Closed => "stdin-closed",
            _ => "stdin-unsupported",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn holder(pid: u32, fd: u32) -> FdHolder {
        FdHolder {
            key: ProcKey::new(pid, 1),
            fd,
            mode: FdMode::ReadWrite,
        }
    }

    fn fdo(fd: u32, owners: Vec<FdHolder>, released: bool) -> FdOwnership {
        FdOwnership {
            fd,
            object: StdioObject::Other,
            owners,
            released,
            reason: None,
        }
    }

    #[test]
    fn verdict_follows_stdin() {
        let h = holder(5, 9);
        assert_eq!(
            verdict(&[fdo(0, vec![], true), fdo(1, vec![h], false)]),
            OwnerState::Released {
                reason: PEER_RELEASED
            }
        );
        assert_eq!(
            verdict(&[fdo(0, vec![h], false), fdo(1, vec![], true)]),
            OwnerState::Held { owners: vec![h] }
        );
        let mut closed = fdo(0, vec![], false);
        closed.object = StdioObject::Closed;
        assert_eq!(
            verdict(&[closed]),
            OwnerState::Unknown {
                reason: "stdin-closed"
            }
        );
    }

    #[test]
    fn host_gone_only_when_every_previous_owner_is_gone() {
        let p = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(p.path().join("7")).expect("dir");
        let stat = "7 (h) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0";
        std::fs::write(p.path().join("7/stat"), stat).expect("stat");
        let released = OwnerState::Released {
            reason: PEER_RELEASED,
        };
        // Same PID, other start time: reused, so gone.
        let reused = FdHolder {
            key: ProcKey::new(7, 2),
            ..holder(7, 3)
        };
        assert_eq!(
            released.clone().with_previous_owners(&[reused], p.path()),
            OwnerState::HostGone
        );
        assert_eq!(
            released
                .clone()
                .with_previous_owners(&[holder(7, 3)], p.path()),
            released
        );
        assert_eq!(
            released.clone().with_previous_owners(&[], p.path()),
            released
        );
    }

    #[test]
    fn missing_root_is_unknown() {
        let p = tempfile::tempdir().expect("tempdir");
        let o = stdio_owner(ProcKey::new(3, 3), &HashSet::new(), &[], p.path());
        assert_eq!(
            o.state,
            OwnerState::Unknown {
                reason: "root-gone"
            }
        );
    }
}
