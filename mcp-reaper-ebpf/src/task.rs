//! Reads of `task_struct` fields through the offsets in `OFFSETS`.
//!
//! Owns: every kernel memory read the programs do. Must never: dereference
//! kernel memory directly or assume a field offset.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use mcp_reaper_common::{COMM_LEN, TaskOffsets};

/// A kernel `task_struct *`.
#[derive(Clone, Copy)]
pub struct Task(pub *const u8);

#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad pointer is
    // an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T) }
}

impl Task {
    /// The calling task (`current`).
    #[inline(always)]
    pub fn current() -> Task {
        // SAFETY: helper without preconditions.
        Task(unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as *const u8)
    }

    #[inline(always)]
    pub fn pid(self, o: &TaskOffsets) -> Result<u32, i32> {
        read::<i32>(self.0, o.task_pid).map(|v| v as u32)
    }

    #[inline(always)]
    pub fn tgid(self, o: &TaskOffsets) -> Result<u32, i32> {
        read::<i32>(self.0, o.task_tgid).map(|v| v as u32)
    }

    #[inline(always)]
    pub fn real_parent(self, o: &TaskOffsets) -> Result<Task, i32> {
        read::<*const u8>(self.0, o.task_real_parent).map(Task)
    }

    #[inline(always)]
    pub fn group_leader(self, o: &TaskOffsets) -> Result<Task, i32> {
        read::<*const u8>(self.0, o.task_group_leader).map(Task)
    }

    /// This task's own `start_boottime`, ns.
    #[inline(always)]
    pub fn start_ns(self, o: &TaskOffsets) -> Result<u64, i32> {
        read::<u64>(self.0, o.task_start_boottime)
    }

    /// Start time of the process (its thread-group leader), which is what
    /// /proc/PID/stat reports and what identifies the process.
    #[inline(always)]
    pub fn process_start_ns(self, o: &TaskOffsets) -> Result<u64, i32> {
        self.group_leader(o)?.start_ns(o)
    }

    #[inline(always)]
    pub fn comm(self, o: &TaskOffsets) -> Result<[u8; COMM_LEN], i32> {
        read::<[u8; COMM_LEN]>(self.0, o.task_comm)
    }

    #[inline(always)]
    pub fn exit_code(self, o: &TaskOffsets) -> Result<u32, i32> {
        read::<i32>(self.0, o.task_exit_code).map(|v| v as u32)
    }
}
