//! `raw_tp/sched_process_exit`: the end of a watched process.
//!
//! Owns: reporting the exit of the last thread of a watched process and
//! removing its tgid from the watch map (also an entry left there for an
//! earlier holder of the PID), so a reused PID never inherits a watch.
//! Must never: report thread exits, or exits of unwatched processes (an
//! entry that names another process does not make this one watched).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use mcp_reaper_common::{counter, kind};

use crate::{
    events::emit,
    maps::{OFFSETS, WATCH, count},
    task::Task,
    watch,
};

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    match try_exit(&ctx) {
        Ok(()) => 0,
        Err(_) => {
            count(counter::READ_ERRORS);
            0
        }
    }
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i32> {
    let o = OFFSETS.load();
    if o.valid == 0 {
        return Ok(());
    }
    let task = Task(ctx.arg::<*const u8>(0));
    // `group_dead` (arg 1): true when the last thread of the group exits.
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return Ok(());
    }
    let tgid = task.tgid(&o)?;
    // SAFETY: map lookup; the value is copied out at once.
    let Some(watch) = (unsafe { WATCH.get(tgid) }).copied() else {
        return Ok(());
    };
    // Deleted whoever it names: this tgid's holder is exiting, and no later
    // process can hold the PID before this exit completes.
    let _ = WATCH.remove(tgid);
    let start = task.process_start_ns(&o)?;
    if !watch::names(&watch, start) {
        return Ok(()); // left for an earlier holder: this one was unwatched
    }
    let exit_code = task.exit_code(&o)?;
    let comm = task.comm(&o)?;
    emit(|ev| {
        ev.kind = kind::EXIT;
        ev.tgid = tgid;
        ev.start_ns = start;
        ev.exit_code = exit_code;
        ev.watch = watch;
        ev.comm = comm;
    });
    Ok(())
}
