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

/// The ownership signal name for a release (ARCHITECTURE.md's table).
pub const PEER_RELEASED: &str = "peer-released";
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
