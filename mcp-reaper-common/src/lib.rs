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
    /// A watched host closed a stdio-shaped file (a `CloseEvent`).
    pub const CLOSE: u32 = 4;
    /// A watched process (a candidate tree root or a tree member) replaced
    /// its image: an `ExecArgvEvent`, sent instead of `EXEC`, with the
    /// new command line as the kernel set it up. A root that exits before
    /// userspace reads /proc is still classified from this record.
    pub const EXEC_ARGV: u32 = 5;
}

/// Values of [`CloseEvent::file_kind`].
pub mod close_kind {
    /// An AF_UNIX socket (`inode` is its socket inode, `peer_inode` its
    /// peer's, 0 when the peer is already gone).
    pub const UNIX_SOCKET: u32 = 1;
    /// A pipe end (`inode` is the pipe's inode; `peer_inode` is 0).
    pub const PIPE: u32 = 2;
    /// `close_range(first_fd, last_fd)`: the files are not read in the
    /// kernel; userspace rechecks the host's trees.
    pub const RANGE: u32 = 3;
}

/// Bits of [`CloseEvent::flags`].
pub mod close_flag {
    /// This close drops the file's last reference (nobody else, not even a
    /// forked child, holds it): the far end sees EOF/HUP now.
    pub const LAST_REF: u32 = 1 << 0;
    /// The file was opened for writing (for a pipe: the write end).
    pub const WRITE_END: u32 = 1 << 1;
    /// The close is implicit: `dup2`/`dup3` onto an open descriptor.
    pub const VIA_DUP: u32 = 1 << 2;
    /// Reported by the UNIX-socket release hook (fentry or kprobe on
    /// `unix_release`): the socket's last reference is gone, whichever
    /// process or kernel path dropped it (close, dup2, exec, exit). The
    /// record's process is whoever was current; its descriptor is unknown.
    pub const RELEASE: u32 = 1 << 3;
}

/// uapi `CLOSE_RANGE_CLOEXEC`: close_range only marks the range
/// close-on-exec (nothing closes until an exec, which EXEC reports).
pub const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
/// uapi `AF_UNIX`.
pub const AF_UNIX: u16 = 1;
/// Kernel `FMODE_WRITE` (`fmode_t` bit, unchanged since 2.6).
pub const FMODE_WRITE: u32 = 1 << 1;
/// `S_IFMT` and the two file types the close program reports.
pub const S_IFMT: u16 = 0o170_000;
pub const S_IFSOCK: u16 = 0o140_000;
pub const S_IFIFO: u16 = 0o010_000;

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

/// Nanoseconds per clock tick at USER_HZ = 100, the unit of field 22 of
/// /proc/PID/stat. Process identity is compared at this granularity on
/// both sides: the kernel's `start_boottime / NS_PER_TICK` is exactly that
/// field, and userspace writes start times as `ticks * NS_PER_TICK`.
pub const NS_PER_TICK: u64 = 10_000_000;

/// Value of the in-kernel watch map (key: tgid as `u32`).
///
/// A tgid alone does not name a process (PIDs are reused), so every entry
/// also names the process it was written for (`self_start_ns`). A program
/// that finds an entry whose `self_start_ns` does not match the task's own
/// start (compared in ticks, `/ NS_PER_TICK`) treats the task as unwatched:
/// the entry was left for an earlier holder of the PID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchEntry {
    /// tgid of the tree's root process.
    pub root_tgid: u32,
    /// `watch::*` bits.
    pub flags: u32,
    /// Start time of the tree's root (boot-time ns, `task->start_boottime`
    /// of its thread-group leader).
    pub root_start_ns: u64,
    /// Start time of the watched process itself, same clock and unit as
    /// `root_start_ns` (userspace writes `start_ticks * NS_PER_TICK`).
    pub self_start_ns: u64,
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

/// Bytes of a command line an `ExecArgvEvent` carries (NUL-separated
/// arguments, as in /proc/PID/cmdline). Longer command lines are cut.
pub const ARGV_LEN: usize = 512;

/// Bits of [`ExecArgvEvent::flags`].
pub mod argv_flag {
    /// The command line was longer than `ARGV_LEN`; `argv` holds its start.
    pub const TRUNCATED: u32 = 1 << 0;
    /// The command line could not be read (no `mm`, or a failed read):
    /// `argv_len` is 0 and userspace must not classify from this record.
    pub const UNREAD: u32 = 1 << 1;
}

/// An exec of a watched process: a record of kind `kind::EXEC_ARGV`. The
/// header is an ordinary exec `ProcEvent` (its `kind` is `EXEC_ARGV`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecArgvEvent {
    pub ev: ProcEvent,
    /// Real uid of the process (`current_uid()`), as /proc/PID/status's
    /// first `Uid:` field.
    pub uid: u32,
    /// Bytes of `argv` filled in (at most `ARGV_LEN`).
    pub argv_len: u32,
    /// `argv_flag::*` bits.
    pub flags: u32,
    /// Explicit padding (always 0).
    pub _pad: u32,
    /// The start of the command line (`mm->arg_start` up to `arg_end`).
    pub argv: [u8; ARGV_LEN],
}

/// Byte offsets the exec program reads the new command line through,
/// resolved from BTF by userspace (global `EXEC_OFFSETS`). When any is
/// missing `valid` stays 0 and execs are reported without their argv.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecOffsets {
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.arg_start` (unsigned long)
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end` (unsigned long)
    pub mm_arg_end: u32,
    /// Non-zero once userspace has filled this structure in.
    pub valid: u32,
}

/// A watched host closed (or `dup2`/`dup3`-replaced, or `close_range`d)
/// a descriptor: a record of kind `kind::CLOSE`. Only AF_UNIX sockets and
/// pipes are reported, and only for processes whose watch entry has
/// `watch::HOST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseEvent {
    /// `kind::CLOSE`.
    pub kind: u32,
    /// The closing process.
    pub tgid: u32,
    /// Its start time (`start_boottime` of its thread-group leader), ns.
    pub start_ns: u64,
    /// Boot-time clock when the event was recorded, ns.
    pub ktime_ns: u64,
    /// Inode of the closed file (socket inode or pipe inode); 0 for RANGE.
    pub inode: u64,
    /// For a UNIX socket: the peer socket's inode (0 when it has none).
    pub peer_inode: u64,
    /// The descriptor closed (the first one, for RANGE).
    pub first_fd: u32,
    /// Equal to `first_fd`, except for RANGE (may be `u32::MAX`).
    pub last_fd: u32,
    /// One of `close_kind::*`.
    pub file_kind: u32,
    /// `close_flag::*` bits.
    pub flags: u32,
    /// For a pipe: readers (read end) or writers (write end) of the pipe
    /// before this close, this one included. 0 otherwise.
    pub pipe_ends: u32,
    /// Explicit padding (always 0).
    pub _pad: u32,
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

/// Byte offsets for the close program (`tp_btf/sys_enter`), resolved from
/// BTF by userspace and handed over as the global `FILE_OFFSETS`. When any
/// is missing `valid` stays 0 and the close program is not loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOffsets {
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds` (u32)
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`)
    pub fdt_fd: u32,
    /// `file.f_ref.refcnt.counter` (6.13+), or `file.f_count.counter` (i64)
    pub file_ref: u32,
    /// The count value that means "one reference": 0 for `f_ref`
    /// (file_ref_t stores refs - 1), 1 for the older `f_count`.
    pub ref_one: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.f_mode` (u32)
    pub file_mode: u32,
    /// `file.private_data` (the `struct socket *` of a socket file)
    pub file_private: u32,
    /// `inode.i_mode` (u16)
    pub inode_mode: u32,
    /// `inode.i_ino` (u64)
    pub inode_ino: u32,
    /// `inode.i_pipe`
    pub inode_pipe: u32,
    /// `pipe_inode_info.readers` (u32)
    pub pipe_readers: u32,
    /// `pipe_inode_info.writers` (u32)
    pub pipe_writers: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family` (u16)
    pub sock_family: u32,
    /// `sock.sk_ino` (u64; 6.18+), or `u32::MAX` when the kernel lacks it
    /// and the inode is reached through `sk_socket` instead.
    pub sock_ino: u32,
    /// `sock.sk_socket`
    pub sock_socket: u32,
    /// `socket_alloc.vfs_inode` minus `socket_alloc.socket`: from a
    /// `struct socket *` to its inode (SOCK_INODE).
    pub socket_to_inode: u32,
    /// `unix_sock.peer`
    pub unix_peer: u32,
    /// Offsets in `struct pt_regs` of syscall arguments 0, 1 and 2.
    pub regs_arg: [u32; 3],
    /// Non-zero once userspace has filled this structure in.
    pub valid: u32,
}

/// Syscall numbers the close program reacts to (global `CLOSE_SYSCALLS`),
/// from userspace's `libc::SYS_*`; `u32::MAX` where the architecture lacks
/// one (aarch64 has no dup2). All `u32::MAX` (the default) means none.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseSyscalls {
    pub close: u32,
    pub close_range: u32,
    pub dup2: u32,
    pub dup3: u32,
}

impl CloseSyscalls {
    /// Matches no syscall.
    pub const NONE: Self = Self {
        close: u32::MAX,
        close_range: u32::MAX,
        dup2: u32::MAX,
        dup3: u32::MAX,
    };
}

/// Where the per-syscall tracepoints (`syscalls:sys_enter_close`, ...) keep
/// the arguments the close program reads, in bytes from the start of the
/// tracepoint record (global `SYSCALL_TP_ARGS`). Userspace reads them from
/// the events' `format` files in tracefs; every field is 8 bytes wide.
/// `u32::MAX` marks an argument the program does not read; `valid` stays 0
/// while the per-syscall tracepoints are not in use.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallTpArgs {
    /// `close(fd)`
    pub close: [u32; 3],
    /// `close_range(fd, max_fd, flags)`
    pub close_range: [u32; 3],
    /// `dup2(oldfd, newfd)`
    pub dup2: [u32; 3],
    /// `dup3(oldfd, newfd, flags)`
    pub dup3: [u32; 3],
    /// Non-zero once userspace has filled this structure in.
    pub valid: u32,
}

impl SyscallTpArgs {
    /// Not filled in: the per-syscall programs do nothing.
    pub const NONE: Self = Self {
        close: [u32::MAX; 3],
        close_range: [u32::MAX; 3],
        dup2: [u32::MAX; 3],
        dup3: [u32::MAX; 3],
        valid: 0,
    };
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records dropped because the ring buffer was full.
    pub const LOST: u32 = 0;
    /// Kernel reads (probe_read) that failed; the event was skipped.
    pub const READ_ERRORS: u32 = 1;
    /// Forked children of watched processes the watch map had no room for:
    /// their lineage is not kept in the kernel.
    pub const WATCH_FULL: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// Ring-buffer fill level (bytes) above which a submit wakes the reader at
/// once; below it records wait for the reader's periodic drain, so a spawn
/// storm costs no wake-up per event.
pub const WAKEUP_THRESHOLD_BYTES: u64 = 64 * 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are repr(C), contain only integers and byte arrays,
    // and have no implicit padding (checked by the size tests below).
    unsafe impl aya::Pod for super::WatchEntry {}
    unsafe impl aya::Pod for super::ProcEvent {}
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::CloseEvent {}
    unsafe impl aya::Pod for super::FileOffsets {}
    unsafe impl aya::Pod for super::CloseSyscalls {}
    unsafe impl aya::Pod for super::SyscallTpArgs {}
    unsafe impl aya::Pod for super::ExecArgvEvent {}
    unsafe impl aya::Pod for super::ExecOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<WatchEntry>(), 4 + 4 + 8 + 8);
        assert_eq!(
            size_of::<ProcEvent>(),
            4 + 4 + 8 + 4 + 4 + 8 + 8 + size_of::<WatchEntry>() + COMM_LEN
        );
        assert_eq!(size_of::<TaskOffsets>(), 8 * 4);
        assert_eq!(size_of::<CloseEvent>(), 4 + 4 + 8 * 4 + 6 * 4);
        assert_eq!(size_of::<CloseEvent>() % 8, 0);
        assert_eq!(size_of::<FileOffsets>(), 24 * 4);
        assert_eq!(size_of::<SyscallTpArgs>(), 13 * 4);
        assert_eq!(
            size_of::<ExecArgvEvent>(),
            size_of::<ProcEvent>() + 4 * 4 + ARGV_LEN
        );
        assert_eq!(size_of::<ExecArgvEvent>() % 8, 0);
        assert_eq!(size_of::<ExecOffsets>(), 4 * 4);
    }
}
