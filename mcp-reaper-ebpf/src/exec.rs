//! `raw_tp/sched_process_exec`: every exec on the host.
//!
//! Owns: reporting each successful exec with the process identity and its
//! parent, so userspace can find hosts and servers by what they run, with
//! the process's watch entry when it names this very process.
//! Must never: change the watch map (userspace decides what to watch), or
//! report an entry left for an earlier holder of the PID.

use aya_ebpf::{
    helpers::bpf_get_current_comm, macros::raw_tracepoint, programs::RawTracePointContext,
};
use mcp_reaper_common::{counter, kind};

use crate::{
    events::emit,
    maps::{OFFSETS, count},
    task::Task,
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
