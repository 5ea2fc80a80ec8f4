//! Types shared by the kernel programs (`mcp-reaper-ebpf`) and the userspace
//! agent (`mcp-reaper`).
//!
//! Owns: the byte layout of every record in the ring buffer, every map value
//! and every global the programs read. Everything here is `#[repr(C)]` with
//! explicit padding, so both sides agree on it bit for bit.
//!
//! Must never: contain logic, allocate, or depend on std. Decoding of these
//! records (size checks, kind validation) lives in `mcp-reaper::decode`.
#![no_std]

/// Record kinds in the ring buffer. Stored as a `u32` at offset 0 of every
/// record; userspace decodes it with `TryFrom`, never a transmute.
pub mod kind {
    /// A process replaced its image (every process on the host).
    pub const EXEC: u32 = 1;
    /// A watched process forked a new process (threads are not reported).
    pub const FORK: u32 = 2;
    /// The last thread of a watched process exited.
    pub const EXIT: u32 = 3;
}

/// Values of [`WatchEntry::flags`].
pub mod watch {
    /// The process belongs to the tree rooted at `root_tgid`/`root_start_ns`.
    /// Its forks are watched with the same entry.
    pub const MEMBER: u32 = 1 << 0;
    /// The process is a host: each process it forks becomes the watched root
    /// of a new candidate tree (the child's own identity).
    pub const HOST: u32 = 1 << 1;
}

/// Length of a kernel task comm (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Value of the in-kernel watch map (key: tgid as `u32`).
///
/// The kernel deletes an entry when its process exits, so a reused PID never
/// inherits a stale entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchEntry {
    /// tgid of the tree's root process.
    pub root_tgid: u32,
    /// `watch::*` bits.
    pub flags: u32,
    /// Start time of the tree's root (boot-time ns, `task->start_boottime`).
    pub root_start_ns: u64,
}

/// One process event (exec, fork or exit). All three kinds share this
/// layout; fields that do not apply to a kind are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEvent {
    /// One of `kind::*`.
    pub kind: u32,
    /// The process this event is about (the child, for a fork).
    pub tgid: u32,
    /// Its start time: `start_boottime` of its thread-group leader, ns.
    pub start_ns: u64,
    /// Parent tgid (the forking process for a fork; `real_parent` otherwise).
    pub ppid: u32,
    /// Exit code (`task->exit_code`) for an exit; 0 otherwise.
    pub exit_code: u32,
    /// Parent start time, ns.
    pub parent_start_ns: u64,
    /// Boot-time clock when the event was recorded, ns.
    pub ktime_ns: u64,
    /// Watch entry of the process (zero when it is not watched).
    pub watch: WatchEntry,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Byte offsets of the kernel structure fields the programs read, resolved
/// by userspace from the running kernel's BTF and handed over as the global
/// `OFFSETS` before load. No offset is ever compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.group_leader`
    pub task_group_leader: u32,
    /// `task_struct.start_boottime`
    pub task_start_boottime: u32,
    /// `task_struct.comm`
    pub task_comm: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// Non-zero once userspace has filled this structure in.
    pub valid: u32,
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records dropped because the ring buffer was full.
    pub const LOST: u32 = 0;
    /// Kernel reads (probe_read) that failed; the event was skipped.
    pub const READ_ERRORS: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

/// Ring-buffer fill level (bytes) above which a submit wakes the reader at
/// once; below it records wait for the reader's periodic drain, so a spawn
/// storm costs no wake-up per event.
pub const WAKEUP_THRESHOLD_BYTES: u64 = 64 * 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all three are repr(C), contain only integers and byte arrays,
    // and have no implicit padding (checked by the size tests below).
    unsafe impl aya::Pod for super::WatchEntry {}
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::TaskOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<WatchEntry>(), 4 + 4 + 8);
        assert_eq!(
            size_of::<ProcEvent>(),
            4 + 4 + 8 + 4 + 4 + 8 + 8 + size_of::<WatchEntry>() + COMM_LEN
        );
        assert_eq!(size_of::<TaskOffsets>(), 8 * 4);
    }
}
