//! `raw_tp/sched_process_exec`: every exec on the host.
//!
//! Owns: reporting each successful exec with the process identity and its
//! parent, so userspace can find hosts and servers by what they run, with
//! the process's watch entry when it names this very process. A watched
//! process (a host's child, a candidate root, or a tree member) is reported
//! with its new command line and uid (`ExecArgvEvent`): a root that exits
//! before userspace reads /proc is still classified from the record.
//! Must never: change the watch map (userspace decides what to watch), or
//! report an entry left for an earlier holder of the PID.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_uid_gid},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use mcp_reaper_common::{ProcEvent, counter, kind, watch::MEMBER};

use crate::{
    events::{emit, emit_exec_argv},
    maps::{EXEC_OFFSETS, OFFSETS, count},
    task::{Task, read},
    watch,
};

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    match try_exec(&ctx) {
        Ok(()) => 0,
        Err(_) => {
            count(counter::READ_ERRORS);
            0
        }
    }
}

fn try_exec(ctx: &RawTracePointContext) -> Result<(), i32> {
    let o = OFFSETS.load();
    if o.valid == 0 {
        return Ok(());
    }
    let task = Task(ctx.arg::<*const u8>(0));
    let tgid = task.tgid(&o)?;
    let start = task.process_start_ns(&o)?;
    let parent = task.real_parent(&o)?;
    let ppid = parent.tgid(&o)?;
    let parent_start = parent.process_start_ns(&o)?;
    // An entry for an earlier holder of the PID is ignored, not deleted:
    // userspace may be writing this process's own entry right now.
    let watch = watch::lookup(tgid, start).unwrap_or_default();
    let comm = bpf_get_current_comm()?;
    if watch.flags & MEMBER != 0 {
        let eo = EXEC_OFFSETS.load();
        if eo.valid != 0 {
            let header = ProcEvent {
                tgid,
                start_ns: start,
                ppid,
                parent_start_ns: parent_start,
                watch,
                comm,
                ..ProcEvent::default()
            };
            // The low half is the real uid.
            let uid = bpf_get_current_uid_gid() as u32;
            emit_exec_argv(&header, uid, arg_range(task, &eo));
            return Ok(());
        }
    }
    emit(|ev| {
        ev.kind = kind::EXEC;
        ev.tgid = tgid;
        ev.start_ns = start;
        ev.ppid = ppid;
        ev.parent_start_ns = parent_start;
        ev.watch = watch;
        ev.comm = comm;
    });
    Ok(())
}

/// `mm->arg_start` and `mm->arg_end` of `task` (the new image's command
/// line in user memory); `None` when there is no mm or a read fails.
#[inline(always)]
fn arg_range(task: Task, eo: &mcp_reaper_common::ExecOffsets) -> Option<(u64, u64)> {
    let mm = read::<*const u8>(task.0, eo.task_mm).ok()?;
    if mm.is_null() {
        return None;
    }
    let start = read::<u64>(mm, eo.mm_arg_start).ok()?;
    let end = read::<u64>(mm, eo.mm_arg_end).ok()?;
    Some((start, end))
}
