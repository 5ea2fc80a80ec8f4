//! Submission of `ProcEvent`, `ExecArgvEvent` and `CloseEvent` records to the ring buffer.
//!
//! Owns: the wake-up policy. Records are submitted without waking the reader
//! unless the buffer holds more than `WAKEUP_THRESHOLD_BYTES`; userspace
//! drains on a short timer, so a spawn storm costs no wake-up per event. The
//! one exception is a close the caller marks urgent (a tracked tree's stdio
//! released): detection latency is the point of that record.
//! Must never: block or retry; a full buffer is counted as lost.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::helpers::generated::{bpf_ktime_get_boot_ns, bpf_probe_read_user};
use mcp_reaper_common::{
    ARGV_LEN, CloseEvent, ExecArgvEvent, ProcEvent, WAKEUP_THRESHOLD_BYTES, argv_flag, counter,
    kind,
};

use crate::maps::{EVENTS, count};

/// Reserves, fills through `fill`, and submits one event.
#[inline(always)]
pub fn emit(fill: impl FnOnce(&mut ProcEvent)) {
    let Some(mut entry) = EVENTS.reserve::<ProcEvent>(0) else {
        count(counter::LOST);
        return;
    };
    let mut ev = ProcEvent {
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        ..ProcEvent::default()
    };
    fill(&mut ev);
    entry.write(ev);
    entry.submit(wake_flags());
}

/// Reserves and submits one exec record of a watched process, with its
/// command line read from user memory at `arg_start..arg_end` (`None`:
/// not readable, the record says so). The 600-byte record is written in
/// place: it does not fit on the BPF stack.
#[inline(always)]
pub fn emit_exec_argv(header: &ProcEvent, uid: u32, args: Option<(u64, u64)>) {
    let Some(mut entry) = EVENTS.reserve::<ExecArgvEvent>(0) else {
        count(counter::LOST);
        return;
    };
    let p = entry.as_mut_ptr();
    let mut head = *header;
    head.kind = kind::EXEC_ARGV;
    // SAFETY: bpf_ktime_get_boot_ns has no preconditions.
    head.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    let (len, flags) = match args {
        Some((start, end)) if end > start => {
            let full = end - start;
            // Clamped and masked so the verifier sees the bound.
            let n = (if full > ARGV_MAX { ARGV_MAX } else { full }) & ARGV_MAX;
            // SAFETY: `p` is the reserved record; `n` <= ARGV_LEN - 1 bytes
            // are written inside its `argv`; the helper checks the source.
            let read = unsafe {
                bpf_probe_read_user(
                    addr_of_mut!((*p).argv).cast::<c_void>(),
                    n as u32,
                    start as *const c_void,
                )
            };
            if read != 0 {
                (0, argv_flag::UNREAD)
            } else if full > n {
                (n as u32, argv_flag::TRUNCATED)
            } else {
                (n as u32, 0)
            }
        }
        Some(_) => (0, 0),
        None => (0, argv_flag::UNREAD),
    };
    // SAFETY: every field is written through the record's own pointer.
    unsafe {
        addr_of_mut!((*p).ev).write(head);
        addr_of_mut!((*p).uid).write(uid);
        addr_of_mut!((*p).argv_len).write(len);
        addr_of_mut!((*p).flags).write(flags);
        addr_of_mut!((*p)._pad).write(0);
    }
    entry.submit(wake_flags());
}

/// Most bytes of a command line read (one less than `ARGV_LEN`, a mask).
const ARGV_MAX: u64 = ARGV_LEN as u64 - 1;

/// Reserves, fills through `fill`, and submits one close record; `urgent`
/// wakes the reader now.
#[inline(always)]
pub fn emit_close(urgent: bool, fill: impl FnOnce(&mut CloseEvent)) {
    let Some(mut entry) = EVENTS.reserve::<CloseEvent>(0) else {
        count(counter::LOST);
        return;
    };
    let mut ev = CloseEvent {
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        ..CloseEvent::default()
    };
    fill(&mut ev);
    entry.write(ev);
    entry.submit(if urgent {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        wake_flags()
    });
}

#[inline(always)]
fn wake_flags() -> u64 {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_THRESHOLD_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}
