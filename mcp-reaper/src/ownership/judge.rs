//! The verdict on one fd's far end, as a pure function of the evidence.
//!
//! Owns: the table that turns what the kernel says of the far end
//! (sock_diag's peer and shutdown, or nothing for a pipe), whether the walk
//! of /proc read every live process, and where a holder was seen, into
//! held, released (with its reason) or unknown (with its reason).
//! Must never: read anything, or call a far end released while the kernel
//! still records a peer that no process was seen to hold. The walk cannot
//! see every holder: fds of a thread with an unshared fd table
//! (CLONE_FILES off), of a group whose leader thread exited, io_uring
//! registered files, a socket in flight in an SCM_RIGHTS message (which
//! may stay there for any time, far longer than any grace period). The
//! kernel's word that the peer exists wins over the walk's silence.

use super::PEER_RELEASED;

/// A socket far end that no process holds while the kernel still records
/// the peer: someone the walk cannot see holds it.
pub const PEER_UNSEEN: &str = "peer-unseen";
/// The far end is held only by the tree's own members: nobody outside can
/// write to the root again (a server that inherited both ends).
pub const PEER_HELD_IN_TREE: &str = "peer-held-in-tree";
/// No process outside the tree holds the pipe's other end.
pub const PIPE_OTHER_END_CLOSED: &str = "pipe-other-end-closed";
/// Some live process could not be read: a holder may hide there.
pub const SCAN_INCOMPLETE: &str = "scan-incomplete";
/// A socket with neither a peer nor a full shutdown.
pub const SOCKET_UNCONNECTED: &str = "socket-unconnected";

/// What the kernel says of the far end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// A pipe whose other end the kernel says is still open somewhere
    /// (or this could not be asked): only the walk can tell by whom.
    Pipe,
    /// A pipe whose other end no file holds any more (a duplicate of the
    /// root's end polls POLLHUP, or POLLERR for a write end): the kernel's
    /// word, whoever the walk could not read.
    PipeClosed,
    /// sock_diag: no peer, shutdown 3. The far end's last file was closed.
    PeerGone,
    /// sock_diag names the peer; `shutdown` as reported (3 after a
    /// `shutdown()` without close, which is no release).
    PeerPresent { shutdown: u8 },
    /// sock_diag: no peer, and not both directions shut.
    Unconnected,
}

impl Kernel {
    /// From a UNIX socket's sock_diag record.
    pub fn socket(peer: Option<u32>, shutdown: u8) -> Self {
        match (peer, shutdown) {
            (None, super::sockdiag::SHUTDOWN_BOTH) => Self::PeerGone,
            (None, _) => Self::Unconnected,
            (Some(_), shutdown) => Self::PeerPresent { shutdown },
        }
    }
}

/// Where the walk saw the far end held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// By a process outside the tree (for pipes: with the opposite mode).
    Outside,
    /// Only by members of the tree.
    InsideOnly,
    /// By no process read.
    Nowhere,
}

/// The verdict on one far end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Held,
    Released(&'static str),
    Unknown(&'static str),
}

/// The rules of the module header of `ownership`, as one table.
pub fn judge(kernel: Kernel, walk_complete: bool, seen: Seen) -> Judgement {
    match (kernel, seen) {
        (Kernel::PeerGone, _) => Judgement::Released(PEER_RELEASED),
        (Kernel::PipeClosed, _) => Judgement::Released(PIPE_OTHER_END_CLOSED),
        (Kernel::Unconnected, _) => Judgement::Unknown(SOCKET_UNCONNECTED),
        (_, Seen::Outside) => Judgement::Held,
        _ if !walk_complete => Judgement::Unknown(SCAN_INCOMPLETE),
        (Kernel::PeerPresent { .. }, Seen::InsideOnly) => Judgement::Released(PEER_HELD_IN_TREE),
        (Kernel::PeerPresent { .. }, Seen::Nowhere) => Judgement::Unknown(PEER_UNSEEN),
        (Kernel::Pipe, Seen::InsideOnly | Seen::Nowhere) => {
            Judgement::Released(PIPE_OTHER_END_CLOSED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::{FdOwnership, OwnerState, StdioObject, verdict};
    use Judgement::{Held, Released, Unknown};
    use Seen::{InsideOnly, Nowhere, Outside};

    const PRESENT: Kernel = Kernel::PeerPresent { shutdown: 0 };
    const SHUT: Kernel = Kernel::PeerPresent { shutdown: 3 };
    const GONE: Kernel = Kernel::PeerGone;
    const UNCONN: Kernel = Kernel::Unconnected;
    const PIPE: Kernel = Kernel::Pipe;
    const PIPE_CLOSED: Kernel = Kernel::PipeClosed;

    /// Every (kernel, walk complete, seen) and what it must give.
    const TABLE: &[(Kernel, bool, Seen, Judgement)] = &[
        // The kernel's record of a release: nothing else matters.
        (GONE, true, Outside, Released(PEER_RELEASED)),
        (GONE, true, InsideOnly, Released(PEER_RELEASED)),
        (GONE, true, Nowhere, Released(PEER_RELEASED)),
        (GONE, false, Outside, Released(PEER_RELEASED)),
        (GONE, false, InsideOnly, Released(PEER_RELEASED)),
        (GONE, false, Nowhere, Released(PEER_RELEASED)),
        // Peer present: held, held in the tree (complete walk only), or
        // held by someone the walk cannot see.
        (PRESENT, true, Outside, Held),
        (PRESENT, true, InsideOnly, Released(PEER_HELD_IN_TREE)),
        (PRESENT, true, Nowhere, Unknown(PEER_UNSEEN)),
        (PRESENT, false, Outside, Held),
        (PRESENT, false, InsideOnly, Unknown(SCAN_INCOMPLETE)),
        (PRESENT, false, Nowhere, Unknown(SCAN_INCOMPLETE)),
        // shutdown() without close keeps the peer: the same as present.
        (SHUT, true, Outside, Held),
        (SHUT, true, InsideOnly, Released(PEER_HELD_IN_TREE)),
        (SHUT, true, Nowhere, Unknown(PEER_UNSEEN)),
        (SHUT, false, Outside, Held),
        (SHUT, false, InsideOnly, Unknown(SCAN_INCOMPLETE)),
        (SHUT, false, Nowhere, Unknown(SCAN_INCOMPLETE)),
        // No peer and no full shutdown: nothing to follow, nothing proved.
        (UNCONN, true, Outside, Unknown(SOCKET_UNCONNECTED)),
        (UNCONN, true, InsideOnly, Unknown(SOCKET_UNCONNECTED)),
        (UNCONN, true, Nowhere, Unknown(SOCKET_UNCONNECTED)),
        (UNCONN, false, Outside, Unknown(SOCKET_UNCONNECTED)),
        (UNCONN, false, InsideOnly, Unknown(SOCKET_UNCONNECTED)),
        (UNCONN, false, Nowhere, Unknown(SOCKET_UNCONNECTED)),
        // Pipes the kernel says nobody holds the other end of.
        (PIPE_CLOSED, true, Outside, Released(PIPE_OTHER_END_CLOSED)),
        (
            PIPE_CLOSED,
            true,
            InsideOnly,
            Released(PIPE_OTHER_END_CLOSED),
        ),
        (PIPE_CLOSED, true, Nowhere, Released(PIPE_OTHER_END_CLOSED)),
        (PIPE_CLOSED, false, Outside, Released(PIPE_OTHER_END_CLOSED)),
        (
            PIPE_CLOSED,
            false,
            InsideOnly,
            Released(PIPE_OTHER_END_CLOSED),
        ),
        (PIPE_CLOSED, false, Nowhere, Released(PIPE_OTHER_END_CLOSED)),
        // Pipes still open somewhere: only a complete walk proves that no
        // one outside the tree holds the other end.
        (PIPE, true, Outside, Held),
        (PIPE, true, InsideOnly, Released(PIPE_OTHER_END_CLOSED)),
        (PIPE, true, Nowhere, Released(PIPE_OTHER_END_CLOSED)),
        (PIPE, false, Outside, Held),
        (PIPE, false, InsideOnly, Unknown(SCAN_INCOMPLETE)),
        (PIPE, false, Nowhere, Unknown(SCAN_INCOMPLETE)),
    ];

    #[test]
    fn verdict_table_covers_every_combination() {
        let kernels = [PRESENT, SHUT, GONE, UNCONN, PIPE, PIPE_CLOSED];
        assert_eq!(TABLE.len(), kernels.len() * 2 * 3);
        for k in kernels {
            for complete in [true, false] {
                for seen in [Outside, InsideOnly, Nowhere] {
                    let rows = TABLE
                        .iter()
                        .filter(|r| (r.0, r.1, r.2) == (k, complete, seen))
                        .count();
                    assert_eq!(rows, 1, "{k:?} complete={complete} {seen:?}");
                }
            }
        }
    }

    #[test]
    fn verdict_table() {
        for &(kernel, complete, seen, want) in TABLE {
            assert_eq!(
                judge(kernel, complete, seen),
                want,
                "{kernel:?} complete={complete} {seen:?}"
            );
        }
    }

    /// The same table, carried through to the tree's state when the fd is
    /// the root's stdin.
    #[test]
    fn verdict_table_as_tree_state() {
        for &(kernel, complete, seen, want) in TABLE {
            let h = crate::ownership::FdHolder {
                key: crate::identity::ProcKey::new(9, 9),
                fd: 4,
                mode: crate::ownership::FdMode::ReadWrite,
            };
            let (released, reason) = match want {
                Held => (false, None),
                Released(r) => (true, Some(r)),
                Unknown(r) => (false, Some(r)),
            };
            let stdin = FdOwnership {
                fd: 0,
                object: StdioObject::Other,
                owners: if want == Held { vec![h] } else { vec![] },
                released,
                reason,
            };
            let state = verdict(&[stdin]);
            let ok = match (want, &state) {
                (Held, OwnerState::Held { owners }) => owners == &[h],
                (Released(_), OwnerState::Released { .. }) => true,
                (Unknown(r), OwnerState::Unknown { reason }) => *reason == r,
                _ => false,
            };
            assert!(ok, "{kernel:?} complete={complete} {seen:?}: {state:?}");
        }
    }

    #[test]
    fn kernel_state_from_sock_diag() {
        assert_eq!(Kernel::socket(None, 3), GONE);
        assert_eq!(Kernel::socket(None, 0), UNCONN);
        assert_eq!(Kernel::socket(None, 1), UNCONN);
        assert_eq!(Kernel::socket(Some(7), 0), PRESENT);
        assert_eq!(Kernel::socket(Some(7), 3), SHUT);
    }
}
