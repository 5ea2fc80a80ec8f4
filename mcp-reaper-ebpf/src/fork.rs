//! `raw_tp/sched_process_fork`: lineage of watched processes.
//!
//! Owns: extending the watch map to every new process forked by a watched
//! process, before the child runs its first instruction, and reporting the
//! fork. A child of a HOST becomes the root of a new candidate tree; a child
//! of a MEMBER joins its parent's tree. Threads are ignored. Every entry
//! written names the child itself (`self_start_ns`), so a later process on
//! the same PID never inherits it.
//! Must never: report or watch forks of unwatched processes (a parent
//! whose entry names an earlier holder of its PID is unwatched).

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use aya_log_ebpf::{debug, warn};
use mcp_reaper_common::{
    WatchEntry, counter, kind,
    watch::{HOST, MEMBER},
};

use crate::{
    events::emit,
    maps::{OFFSETS, WATCH, count},
    task::Task,
    watch,
};

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    match try_fork(&ctx) {
        Ok(()) => 0,
        Err(_) => {
            count(counter::READ_ERRORS);
            0
        }
    }
}

fn try_fork(ctx: &RawTracePointContext) -> Result<(), i32> {
    let o = OFFSETS.load();
    if o.valid == 0 {
        return Ok(());
    }
    let parent = Task(ctx.arg::<*const u8>(0));
    let child = Task(ctx.arg::<*const u8>(1));
    let parent_tgid = parent.tgid(&o)?;
    // SAFETY: map lookups are safe in BPF; the value is copied out at
    // once. Most forks on the machine stop here, before any further read.
    let Some(entry) = (unsafe { WATCH.get(parent_tgid) }).copied() else {
        return Ok(());
    };
    let parent_start = parent.process_start_ns(&o)?;
    if !watch::names(&entry, parent_start) {
        return Ok(()); // left for an earlier holder of the parent's PID
    }
    let child_pid = child.pid(&o)?;
    let child_tgid = child.tgid(&o)?;
    if child_pid != child_tgid {
        return Ok(()); // a new thread, not a new process
    }
    let child_start = child.start_ns(&o)?;
    let inherited = if entry.flags & HOST != 0 {
        WatchEntry {
            root_tgid: child_tgid,
            flags: MEMBER,
            root_start_ns: child_start,
            self_start_ns: child_start,
        }
    } else {
        WatchEntry {
            flags: MEMBER,
            self_start_ns: child_start,
            ..entry
        }
    };
    if WATCH.insert(child_tgid, inherited, 0).is_err() {
        // The map is full: userspace must learn that lineage is incomplete.
        count(counter::WATCH_FULL);
        warn!(ctx, "watch map full: pid {} not watched", child_tgid);
    }
    debug!(
        ctx,
        "fork {} -> {} (tree {})", parent_tgid, child_tgid, inherited.root_tgid
    );
    let comm = child.comm(&o)?;
    emit(|ev| {
        ev.kind = kind::FORK;
        ev.tgid = child_tgid;
        ev.start_ns = child_start;
        ev.ppid = parent_tgid;
        ev.parent_start_ns = parent_start;
        ev.watch = inherited;
        ev.comm = comm;
    });
    Ok(())
}
