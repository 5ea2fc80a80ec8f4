//! Process events as the rest of the agent sees them, whatever their source.
//!
//! Owns: the typed vocabulary between event sources (eBPF, poll) and the
//! tracker. Must never: carry raw kernel bytes (decoding is `decode`'s job).

use crate::procs::identity::ProcKey;

/// The watch state the kernel attached to a process, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Watch {
    /// Root of the tree the process belongs to.
    pub root: Option<ProcKey>,
    /// The process is a host (its children start new trees).
    pub host: bool,
}

/// What the kernel recorded of a watched process's new image at its exec
/// (eBPF tier only): enough to classify it once it is gone from /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecImage {
    /// Real uid.
    pub uid: u32,
    /// The command line, split at NULs, lossily converted to UTF-8.
    pub cmdline: Vec<String>,
    /// The command line was longer than the record holds.
    pub truncated: bool,
}

/// What a host's close released (see `ProcessEvent::Close`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// An AF_UNIX socket; `peer_inode` is its peer's inode (0: no peer).
    UnixSocket,
    /// A pipe end. `ends`: readers (read end) or writers (write end) of the
    /// pipe before this close, this one included.
    Pipe { write_end: bool, ends: u32 },
    /// `close_range(fd, last_fd)`: the files were not inspected, so every
    /// tree of the host needs a recheck.
    Range { last_fd: u32 },
}

/// One change to the process table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// `key` replaced its image. Reported for every process.
    Exec {
        key: ProcKey,
        parent: ProcKey,
        comm: String,
        watch: Watch,
        /// Boot-time clock of the event, ns (0 when the source has none).
        ktime_ns: u64,
        /// The new image as the kernel saw it, for watched processes.
        image: Option<ExecImage>,
    },
    /// `parent` forked `child`. Reported for watched parents only.
    Fork {
        child: ProcKey,
        parent: ProcKey,
        comm: String,
        watch: Watch,
        ktime_ns: u64,
    },
    /// The last thread of `key` exited.
    Exit {
        key: ProcKey,
        exit_code: u32,
        watch: Watch,
        ktime_ns: u64,
    },
    /// A watched host (`key`) is closing `fd` (eBPF close tier only): by
    /// close, by dup2/dup3 onto it, or a close_range. Not a process-table
    /// change: the tracker ignores it; the supervisor rechecks the host's
    /// trees.
    Close {
        key: ProcKey,
        fd: u32,
        /// Socket or pipe inode (0 for `CloseKind::Range`).
        inode: u64,
        /// The UNIX socket peer's inode (0: none, or not a socket).
        peer_inode: u64,
        kind: CloseKind,
        /// This close drops the file's last reference: the far end sees
        /// EOF/HUP now. False when another descriptor or process (e.g. a
        /// forked child that inherited it) still holds the file.
        last_ref: bool,
        /// The close is implicit, by dup2/dup3 onto an open `fd`.
        via_dup: bool,
        /// Reported by the UNIX-socket release hook: the socket's last
        /// reference is gone, whoever dropped it (`key` is the process
        /// that was current, possibly a kernel worker; `fd` is unknown).
        via_release: bool,
        ktime_ns: u64,
    },
}

impl ProcessEvent {
    /// The process the event is about.
    pub fn key(&self) -> ProcKey {
        match self {
            Self::Exec { key, .. } | Self::Exit { key, .. } | Self::Close { key, .. } => *key,
            Self::Fork { child, .. } => *child,
        }
    }
}

/// Why lineage may be incomplete even though no event was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapCause {
    /// The kernel's watch map had no room for a process (a fork in the
    /// kernel, or a watch userspace tried to add).
    WatchFull,
    /// Userspace failed to add a watch for another reason.
    WatchError,
    /// A kernel program failed to read a task and skipped its event.
    KernelReadError,
    /// A ring-buffer record failed to decode and was skipped.
    DecodeError,
}

impl GapCause {
    pub const ALL: [GapCause; 4] = [
        Self::WatchFull,
        Self::WatchError,
        Self::KernelReadError,
        Self::DecodeError,
    ];

    /// The `cause` label of `mcp_reaper_lineage_gaps_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WatchFull => "watch_full",
            Self::WatchError => "watch_error",
            Self::KernelReadError => "kernel_read_error",
            Self::DecodeError => "decode_error",
        }
    }
}

/// What an event source hands to the tracker.
#[derive(Debug)]
pub enum SourceMsg {
    Event(ProcessEvent),
    /// The source dropped `n` events (ring buffer full): the tracker must
    /// resync from /proc before anything acts on its table.
    Lost(u64),
    /// `n` gaps in lineage of this cause: no event was dropped, but one was
    /// skipped or a process is not watched. As with `Lost`, nothing may act
    /// on the table until a resync.
    Gap(GapCause, u64),
    /// Every kernel record made before this boot-time instant (ns) has been
    /// sent before this message: what the table does not know by now did
    /// not happen before it. Sent by the eBPF reader after a drain.
    Drained(u64),
}
