//! Submission of `ProcEvent` and `CloseEvent` records to the ring buffer.
//!
//! Owns: the wake-up policy. Records are submitted without waking the reader
//! unless the buffer holds more than `WAKEUP_THRESHOLD_BYTES`; userspace
//! drains on a short timer, so a spawn storm costs no wake-up per event. The
//! one exception is a close the caller marks urgent (a tracked tree's stdio
//! released): detection latency is the point of that record.
//! Must never: block or retry; a full buffer is counted as lost.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;
use mcp_reaper_common::{CloseEvent, ProcEvent, WAKEUP_THRESHOLD_BYTES, counter};

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
