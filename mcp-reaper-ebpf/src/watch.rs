//! Reads of the watch map that check whose entry it is.
//!
//! Owns: the rule every program follows when it reads `WATCH`: an entry
//! counts only for the process it was written for, compared as
//! (tgid, start tick); an entry left behind for an earlier holder of the
//! PID is treated as absent. Must never: hand a program an entry whose
//! `self_start_ns` does not match the task, or delete an entry that may
//! name a live process (only `forget_stale` deletes, and only where the
//! caller knows the tgid's current holder is exiting).

use mcp_reaper_common::{NS_PER_TICK, WatchEntry};

use crate::maps::WATCH;

/// Whether `entry` was written for the process that started at
/// `start_ns` (its thread-group leader's `start_boottime`).
#[inline(always)]
pub fn names(entry: &WatchEntry, start_ns: u64) -> bool {
    entry.self_start_ns / NS_PER_TICK == start_ns / NS_PER_TICK
}

/// The entry for `tgid` when it names the process that started at
/// `start_ns`; `None` when there is none or it is stale.
#[inline(always)]
pub fn lookup(tgid: u32, start_ns: u64) -> Option<WatchEntry> {
    // SAFETY: map lookup; the value is copied out at once.
    let entry = unsafe { WATCH.get(tgid) }.copied()?;
    names(&entry, start_ns).then_some(entry)
}
