//! `tracepoint/syscalls/sys_enter_{close,close_range,dup2,dup3}`: the
//! per-syscall entry points of the close program.
//!
//! Owns: reading each syscall's arguments from its tracepoint record at the
//! offsets userspace read from tracefs (`SYSCALL_TP_ARGS`) and handing them
//! to `close::host_close`. Preferred over `raw_tp/sys_enter` because the
//! kernel runs these only for their own syscall, so the rest of the
//! machine's syscalls pay no program run.
//! Must never: read an offset userspace did not fill in (`valid` is 0 until
//! it has).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{
    close::{Call, host_close, pick},
    maps::SYSCALL_TP_ARGS,
};

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn close_tp(ctx: TracePointContext) -> u32 {
    entered(&ctx, Call::Close, |a| a.close);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_close_range")]
pub fn close_range_tp(ctx: TracePointContext) -> u32 {
    entered(&ctx, Call::CloseRange, |a| a.close_range);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_dup2")]
pub fn dup2_tp(ctx: TracePointContext) -> u32 {
    entered(&ctx, Call::Dup, |a| a.dup2);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_dup3")]
pub fn dup3_tp(ctx: TracePointContext) -> u32 {
    entered(&ctx, Call::Dup, |a| a.dup3);
    0
}

#[inline(always)]
fn entered(
    ctx: &TracePointContext,
    call: Call,
    offsets: impl Fn(&mcp_reaper_common::SyscallTpArgs) -> [u32; 3],
) {
    let args = SYSCALL_TP_ARGS.load();
    if args.valid == 0 {
        return;
    }
    let at = offsets(&args);
    host_close(call, |i| {
        // SAFETY: bpf_probe_read_kernel of the tracepoint record; a bad
        // offset fails the read, it cannot fault.
        unsafe { ctx.read_at::<u64>(pick(&at, i) as usize) }.map(|v| v as u32)
    });
}
