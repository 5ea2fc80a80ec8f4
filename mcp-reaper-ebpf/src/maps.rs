//! Maps and globals shared by every program.
//!
//! Owns: the ring buffer of events, the watch map (tgid -> tree), the set of
//! tracked trees' stdio inodes, the per-CPU counters and the `OFFSETS`, `EXEC_OFFSETS`, `FILE_OFFSETS`,
//! `CLOSE_SYSCALLS` and `SYSCALL_TP_ARGS` globals that userspace fills in
//! before load.
//! Must never: hold per-event state across calls beyond these maps.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use mcp_reaper_common::{
    CloseSyscalls, ExecOffsets, FileOffsets, SyscallTpArgs, TaskOffsets, WatchEntry, counter,
};

/// Events to userspace. Sized by userspace at load (`set_max_entries`); this
/// is the default.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Watched processes: tgid -> tree. Written by userspace to mark hosts and
/// tree roots, extended here on fork, pruned here on exit. Each entry names
/// its process (`self_start_ns`); read it through `watch`, which ignores an
/// entry left for an earlier holder of the PID.
#[map]
pub static WATCH: HashMap<u32, WatchEntry> = HashMap::with_max_entries(65_536, 0);

/// Inodes of tracked trees' stdio (the server side's socket, or the pipe),
/// written by userspace. A host's close of one of them wakes the reader at
/// once instead of waiting for its drain timer; other closes still reach it.
#[map]
pub static STDIO_INODES: HashMap<u64, u8> = HashMap::with_max_entries(16_384, 0);

/// `counter::*` slots.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Kernel structure offsets, resolved from BTF by userspace.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<TaskOffsets> = Global::new(TaskOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    task_comm: 0,
    task_exit_code: 0,
    valid: 0,
});

/// Offsets the exec program reads a watched process's new command line
/// through. `valid` stays 0 (execs are reported without argv) when any is
/// missing.
#[unsafe(no_mangle)]
pub static EXEC_OFFSETS: Global<ExecOffsets> = Global::new(ExecOffsets {
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    valid: 0,
});

/// Offsets for the close program, resolved from BTF by userspace. `valid`
/// stays 0 (and the close program is not loaded) when any is missing.
#[unsafe(no_mangle)]
pub static FILE_OFFSETS: Global<FileOffsets> = Global::new(FileOffsets {
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_ref: 0,
    ref_one: 0,
    file_inode: 0,
    file_mode: 0,
    file_private: 0,
    inode_mode: 0,
    inode_ino: 0,
    inode_pipe: 0,
    pipe_readers: 0,
    pipe_writers: 0,
    socket_sk: 0,
    sock_family: 0,
    sock_ino: 0,
    sock_socket: 0,
    socket_to_inode: 0,
    unix_peer: 0,
    regs_arg: [0; 3],
    valid: 0,
});

/// Syscall numbers the close program reacts to, from userspace's libc.
#[unsafe(no_mangle)]
pub static CLOSE_SYSCALLS: Global<CloseSyscalls> = Global::new(CloseSyscalls::NONE);

/// Argument offsets in the per-syscall tracepoints' records, from their
/// tracefs format files.
#[unsafe(no_mangle)]
pub static SYSCALL_TP_ARGS: Global<SyscallTpArgs> = Global::new(SyscallTpArgs::NONE);

/// Adds one to a counter slot.
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, programs do not preempt each other on a CPU.
        unsafe { *ptr += 1 };
    }
}
