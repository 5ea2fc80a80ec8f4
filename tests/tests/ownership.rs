//! Stdio ownership against the real kernel: real `sleep` children whose
//! stdio is a socketpair or a pipe held by this test process.
//! Socket cases read only this process's own fds and the kernel's
//! sock_diag records, so they run unprivileged; verdicts that need a
//! complete walk of /proc (pipes, a far end held inside the tree) run only
//! as root and skip with a printed reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcp_reaper::{
    identity::ProcKey,
    ownership::{FdMode, OwnerState, PEER_RELEASED, StdioObject, StdioOwnership, stdio_owner},
};
use mcp_reaper_tests::{privileged, rerun, start_ticks, wait_until};

/// A `sleep 600` child, killed and reaped on drop.
struct Sleeper {
    child: Child,
    key: ProcKey,
}

impl Sleeper {
    fn spawn(stdin: OwnedFd, stdout: OwnedFd) -> Self {
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let key = ProcKey::new(pid, start_ticks(pid).expect("child start time"));
        Self { child, key }
    }

    fn owner(&self) -> StdioOwnership {
        let tree: HashSet<u32> = [self.key.tgid].into();
        stdio_owner(self.key, &tree, &[], Path::new("/proc"))
    }

    /// The ownership once `done` holds (or the last one after 5 s). Tests
    /// run in parallel threads: a sibling's fork that has not exec'd yet
    /// briefly holds copies of our CLOEXEC fds, so the kernel releases a
    /// closed end only when that child execs.
    fn owner_once(&self, done: impl Fn(&StdioOwnership) -> bool) -> StdioOwnership {
        let mut last = self.owner();
        wait_until(Duration::from_secs(5), || {
            last = self.owner();
            done(&last)
        });
        last
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // Our own unreaped child: its PID cannot have been reused.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array we own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn inode(fd: &OwnedFd) -> u64 {
    // SAFETY: fstat on a valid fd into a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
    st.st_ino
}

/// A child whose fds 0 and 1 are one end of a socketpair; the test keeps
/// the other end.
fn socket_child() -> (Sleeper, OwnedFd, u64) {
    let (ours, theirs) = socketpair();
    let child_ino = inode(&theirs);
    let dup = theirs.try_clone().expect("dup");
    (Sleeper::spawn(theirs, dup), ours, child_ino)
}

/// The `St` column of /proc/net/unix for `ino`.
fn proc_net_unix_state(ino: u64) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    text.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(6)? == &ino.to_string()).then(|| cols[5].to_owned())
    })
}

fn me() -> u32 {
    std::process::id()
}

#[test]
fn socketpair_owner_is_this_process_and_fd() {
    let (child, ours, child_ino) = socket_child();
    let o = child.owner();
    let OwnerState::Held { owners } = &o.state else {
        panic!("expected held: {o:#?}");
    };
    assert_eq!(owners.len(), 1, "{o:#?}");
    assert_eq!(owners[0].key.tgid, me());
    assert_eq!(owners[0].fd, ours.as_raw_fd() as u32);
    assert_eq!(owners[0].mode, FdMode::ReadWrite);
    assert!(
        !o.full_scan,
        "the parent held the far end: no walk of /proc"
    );
    for f in &o.fds {
        assert_eq!(
            f.object,
            StdioObject::UnixSocket {
                inode: child_ino as u32,
                peer: Some(inode(&ours) as u32),
                shutdown: 0
            }
        );
        assert!(!f.released);
    }
}

#[test]
fn closing_our_end_is_peer_released_while_proc_net_unix_says_connected() {
    let (child, ours, child_ino) = socket_child();
    drop(ours);
    let o = child.owner_once(|o| o.fds[0].reason == Some(PEER_RELEASED));
    assert_eq!(
        o.state,
        OwnerState::Released {
            reason: PEER_RELEASED
        },
        "{o:#?}"
    );
    let stdin = &o.fds[0];
    assert!(stdin.released);
    assert_eq!(stdin.reason, Some(PEER_RELEASED));
    assert_eq!(
        stdin.object,
        StdioObject::UnixSocket {
            inode: child_ino as u32,
            peer: None,
            shutdown: 3
        }
    );
    assert!(stdin.owners.is_empty());
    // What /proc/net/unix says is no help: still "connected".
    assert_eq!(proc_net_unix_state(child_ino).as_deref(), Some("03"));
}

#[test]
fn shutdown_without_close_is_not_a_release() {
    let (child, ours, child_ino) = socket_child();
    // SAFETY: plain shutdown(2) on a valid fd.
    assert_eq!(
        unsafe { libc::shutdown(ours.as_raw_fd(), libc::SHUT_RDWR) },
        0
    );
    let o = child.owner();
    let stdin = &o.fds[0];
    assert_eq!(
        stdin.object,
        StdioObject::UnixSocket {
            inode: child_ino as u32,
            peer: Some(inode(&ours) as u32),
            shutdown: 3
        }
    );
    assert!(!stdin.released);
    assert!(
        matches!(&o.state, OwnerState::Held { owners } if owners[0].fd == ours.as_raw_fd() as u32)
    );
}

#[test]
fn identical_children_map_to_distinct_owner_fds() {
    let kids: Vec<_> = (0..4).map(|_| socket_child()).collect();
    let mut seen = HashSet::new();
    for (child, ours, _) in &kids {
        let o = child.owner();
        let OwnerState::Held { owners } = &o.state else {
            panic!("expected held: {o:#?}");
        };
        assert_eq!(owners.len(), 1, "{o:#?}");
        assert_eq!(owners[0].fd, ours.as_raw_fd() as u32);
        assert!(seen.insert(owners[0].fd));
    }
    // Releasing one leaves the others held.
    let mut kids = kids;
    let (first, ours, _) = kids.remove(0);
    drop(ours);
    let o = first.owner_once(|o| o.fds[0].reason == Some(PEER_RELEASED));
    assert!(matches!(o.state, OwnerState::Released { .. }), "{o:#?}");
    for (child, _, _) in &kids {
        assert!(matches!(child.owner().state, OwnerState::Held { .. }));
    }
}

#[test]
fn pipe_owner_has_the_opposite_mode_and_closing_releases() {
    let (child_in, our_w) = pipe();
    let (our_r, child_out) = pipe();
    let (in_ino, out_ino) = (inode(&child_in), inode(&child_out));
    let child = Sleeper::spawn(child_in, child_out);
    let o = child.owner();
    assert_eq!(o.fds[0].object, StdioObject::Pipe { inode: in_ino });
    assert_eq!(o.fds[1].object, StdioObject::Pipe { inode: out_ino });
    let w = &o.fds[0].owners;
    assert_eq!(w.len(), 1, "{o:#?}");
    assert_eq!(
        (w[0].key.tgid, w[0].fd, w[0].mode),
        (me(), our_w.as_raw_fd() as u32, FdMode::Write)
    );
    let r = &o.fds[1].owners;
    assert_eq!(r.len(), 1, "{o:#?}");
    assert_eq!(
        (r[0].key.tgid, r[0].fd, r[0].mode),
        (me(), our_r.as_raw_fd() as u32, FdMode::Read)
    );
    assert!(matches!(o.state, OwnerState::Held { ref owners } if owners.len() == 2));

    drop(our_w);
    // The release needs root (the kernel-truth check duplicates the root's
    // end through a pidfd); a walk that cannot read every process giving
    // no verdict is `ownership_blind.rs`'s subject, run as root.
    if !privileged("pipe_owner_has_the_opposite_mode_and_closing_releases") {
        return;
    }
    let o = child.owner_once(|o| o.fds[0].released);
    assert!(o.full_scan);
    assert!(o.fds[0].released, "{o:#?}");
    assert_eq!(o.fds[0].reason, Some("pipe-other-end-closed"));
    assert_eq!(
        o.state,
        OwnerState::Released {
            reason: PEER_RELEASED
        }
    );
    assert!(!o.fds[1].released, "we still read its stdout");
}

/// The child inherits both ends (a host that forgot CLOEXEC): stdin is one
/// end, stdout the other. Once we close ours, only the tree holds the far
/// end of its stdin: released, which needs a complete walk of /proc. Where
/// some process of the machine cannot be read at all (a sandbox's PID 1),
/// the walk is never complete, so the check runs in a PID namespace of its
/// own, where every process can be read.
#[test]
fn far_end_held_only_inside_the_tree_counts_as_released() {
    const TEST: &str = "far_end_held_only_inside_the_tree_counts_as_released";
    if !privileged(TEST) {
        return;
    }
    if !rerun::is_inner(TEST) {
        rerun::in_own_pid_namespace(TEST);
        return;
    }
    let (a, b) = socketpair();
    let ours = a.try_clone().expect("dup");
    let child = Sleeper::spawn(b, a);
    assert!(matches!(child.owner().state, OwnerState::Held { .. }));
    drop(ours);
    let o = child.owner_once(|o| o.fds[0].released);
    assert!(
        o.full_scan,
        "the walk in our own namespace is complete: {o:#?}"
    );
    assert_eq!(o.fds[0].reason, Some("peer-held-in-tree"), "{o:#?}");
    assert_eq!(
        o.state,
        OwnerState::Released {
            reason: PEER_RELEASED
        }
    );
}

#[test]
fn previous_owner_gone_is_host_gone() {
    let (child, ours, _) = socket_child();
    let OwnerState::Held { owners } = child.owner().state else {
        panic!("expected held");
    };
    drop(ours);
    let released = child.owner_once(|o| o.fds[0].released).state;
    assert!(matches!(released, OwnerState::Released { .. }));
    // This process still lives: a release, not a host exit.
    assert_eq!(
        released
            .clone()
            .with_previous_owners(&owners, Path::new("/proc")),
        released
    );
    let mut dead = owners.clone();
    dead[0].key.start_ticks += 1;
    assert_eq!(
        released.with_previous_owners(&dead, Path::new("/proc")),
        OwnerState::HostGone
    );
}
