//! Process identity.
//!
//! Owns: `ProcKey`, the (tgid, start time) pair that names a process for its
//! whole life, and the conversion between the kernel's nanosecond start
//! times and /proc's clock ticks. Must never: let a bare PID stand for a
//! process anywhere a signal or a verdict could follow from it.

use serde::Serialize;

/// Nanoseconds per clock tick: /proc reports start times in USER_HZ ticks,
/// which is 100 on every Linux architecture the kernel exports to userspace.
/// The kernel programs compare watch entries at this granularity too, so
/// both sides use the one shared constant.
pub use mcp_reaper_common::NS_PER_TICK;

/// A process for its whole life: PIDs are reused, (tgid, start) is not.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct ProcKey {
    /// Thread-group id, what userspace calls the PID.
    pub tgid: u32,
    /// Start time since boot in clock ticks (field 22 of /proc/PID/stat).
    pub start_ticks: u64,
}

impl ProcKey {
    pub const fn new(tgid: u32, start_ticks: u64) -> Self {
        Self { tgid, start_ticks }
    }

    /// From a kernel `start_boottime` in ns.
    pub const fn from_kernel(tgid: u32, start_ns: u64) -> Self {
        Self {
            tgid,
            start_ticks: start_ns / NS_PER_TICK,
        }
    }
}

impl std::fmt::Display for ProcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.tgid, self.start_ticks)
    }
}

/// CLOCK_BOOTTIME, the clock of the kernel's records (`start_boottime`,
/// `ktime`), in ns.
pub fn boottime_ns() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_ns_map_to_proc_ticks() {
        // 12.345678901 s after boot is tick 1234 at USER_HZ=100.
        assert_eq!(
            ProcKey::from_kernel(7, 12_345_678_901),
            ProcKey::new(7, 1234)
        );
    }

    #[test]
    fn ticks_written_as_ns_come_back_as_the_same_ticks() {
        // What userspace writes into a watch entry, read the way the kernel
        // programs and `from_kernel` read it.
        for ticks in [0, 1, 99, 1234, 987_654_321] {
            assert_eq!(
                ProcKey::from_kernel(1, ticks * NS_PER_TICK).start_ticks,
                ticks
            );
        }
        assert_eq!(NS_PER_TICK, 1_000_000_000 / 100);
    }

    #[test]
    fn same_pid_different_start_is_another_process() {
        assert_ne!(ProcKey::new(42, 100), ProcKey::new(42, 101));
    }
}
