//! Feature probes for `mcp-reaper doctor`: one empty program per attach type.
//!
//! Owns: the smallest program of each kind the daemon might use (classic,
//! raw and BTF tracepoint, fentry, LSM, kprobe), so that userspace can
//! learn which of them this kernel lets it load and attach.
//! Must never: read memory, touch a map, emit an event, or return anything
//! but 0 (for the LSM hook, 0 means "allow": a probe must never deny).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, lsm, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, ProbeContext, RawTracePointContext,
        TracePointContext,
    },
};

/// Classic tracepoint: attached to `sched/sched_process_fork` through tracefs.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn doctor_tp(_ctx: TracePointContext) -> u32 {
    0
}

/// Raw tracepoint (`raw_tp`), the kind the event programs use.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn doctor_raw_tp(_ctx: RawTracePointContext) -> i32 {
    0
}

/// BTF tracepoint (`tp_btf`).
#[btf_tracepoint(function = "sched_process_fork")]
pub fn doctor_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// fentry on UNIX socket release (the optional release hook).
#[fentry(function = "unix_release")]
pub fn doctor_fentry(_ctx: FEntryContext) -> i32 {
    0
}

/// BPF LSM hook; always allows.
#[lsm(hook = "file_open")]
pub fn doctor_lsm(_ctx: LsmContext) -> i32 {
    0
}

/// kprobe on UNIX socket release (the fallback where fentry is refused).
#[kprobe(function = "unix_release")]
pub fn doctor_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
