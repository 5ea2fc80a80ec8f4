//! What the process table holds: one entry per process, where it came
//! from, and the counts the table reports.
//!
//! Owns: `ProcEntry`, `Origin`, `ExitReporting`, `TrackerStats` and the
//! exit code that stands for "found dead, code unknown".
//! Must never: hold behaviour beyond plain accessors: every rule about
//! how entries change lives in the modules above it.

use serde::Serialize;

use crate::procs::identity::ProcKey;

/// Exit code recorded for a process found dead without an exit event (gone
/// from /proc, PID reused, a zombie in a snapshot). Kernel exit codes are
/// wait statuses below 2^16, so this never collides with one.
pub const EXIT_CODE_UNKNOWN: u32 = u32::MAX;

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A /proc scan (`seed` or `resync`): lineage is the parent at the time
    /// of the scan, which may be a reaper the process was reparented to.
    Snapshot,
    /// A process event: lineage is exact.
    Event,
}

/// Which exits the event source reports, so `gc` knows which processes it
/// must check itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitReporting {
    /// The eBPF source: exits of watched processes only.
    #[default]
    WatchedOnly,
    /// The poll source: exits of every process it has seen.
    All,
}

/// One process in the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcEntry {
    pub key: ProcKey,
    /// The lineage parent: the process that forked this one (for snapshot
    /// entries, the parent /proc showed). Never updated on reparenting.
    pub parent: Option<ProcKey>,
    pub comm: String,
    /// The command line /proc showed at the last seed, resync or `refresh`
    /// (empty when none did, and cleared by an exec that changes `comm`).
    pub cmdline: Vec<String>,
    pub origin: Origin,
    /// Exit code once the process has exited (`EXIT_CODE_UNKNOWN` when it
    /// was found dead rather than reported).
    pub exited: Option<u32>,
    /// Root of the MCP tree the process belongs to, if any.
    pub tree_root: Option<ProcKey>,
    /// The process is a host: the processes it forks start new trees.
    pub host: bool,
    /// An exit event will arrive for it (watched in the kernel, or a source
    /// that reports every exit); otherwise `gc` checks its liveness.
    pub exit_reported: bool,
    /// A tree the kernel said the process belongs to, not (yet) shown by
    /// its lineage: not a membership.
    pub unproven_root: Option<ProcKey>,
}

impl ProcEntry {
    pub fn is_live(&self) -> bool {
        self.exited.is_none()
    }
}

/// Counts for metrics and `scan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    /// Entries not exited.
    pub live: usize,
    /// Exited entries kept because a descendant lives (or not yet collected).
    pub exited_kept: usize,
    /// New entries refused because the table was full.
    pub dropped: u64,
    /// Exits waiting for their process to appear.
    pub parked: usize,
    /// Parked exits pushed out by newer ones (the table degrades).
    pub parked_evicted: u64,
    /// Events the sources reported lost.
    pub lost: u64,
    /// Gaps in lineage the sources reported (a watch not written, an event
    /// skipped); each degrades the table like a loss.
    pub lineage_gaps: u64,
    /// Tree memberships the kernel claimed that lineage did not show when
    /// they arrived (refused; admitted later only if lineage joins up).
    pub lineage_rejected: u64,
    /// The table may disagree with the kernel until the next resync.
    pub degraded: bool,
}
