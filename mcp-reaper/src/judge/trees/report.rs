//! The report `scan` prints, whoever answers it: a /proc walk of its own
//! (`standalone`) or a running daemon from its tables (`daemon`).
//!
//! Owns: `ScanReport` (the JSON document, schema in `cli::scan`), its
//! `Totals`, the names of the two sources, and `ReportRows`, the part of
//! the document a client reads back to render a table or an exit code.
//! Must never: read /proc or ask anything: both sources fill it in.

use serde::{Deserialize, Serialize};

use super::{
    state::TreeState,
    view::{DaemonVerdict, HostView, OwnerFd, TreeView},
};
use crate::procs::identity::ProcKey;

/// Version of the JSON document; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// `source` of a report answered by a running daemon.
pub const SOURCE_DAEMON: &str = "daemon";
/// `source` of a report from a walk of /proc by `scan` itself.
pub const SOURCE_STANDALONE: &str = "standalone";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub trees: usize,
    pub live: usize,
    pub orphaned: usize,
    pub suspect: usize,
    pub unknown: usize,
    pub orphaned_rss_bytes: u64,
    pub orphaned_pss_bytes: u64,
    pub total_rss_bytes: u64,
    pub total_pss_bytes: u64,
}

/// The daemon that answered a scan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    /// The event source in use (`ebpf`, `pidfd`, `poll`).
    pub tier: String,
    /// Events were lost and not yet reconciled: reaping is paused.
    pub degraded: bool,
    /// Age of the memory figures at most, in seconds: the daemon reads
    /// them in the background, never while answering.
    pub memory_max_age_seconds: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    pub schema_version: u32,
    /// [`SOURCE_DAEMON`] or [`SOURCE_STANDALONE`].
    pub source: &'static str,
    /// The daemon that answered (only when `source` is `daemon`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonInfo>,
    pub generated_at_unix: u64,
    /// Processes read from /proc, or (from a daemon) tracked live.
    pub processes_scanned: usize,
    pub processes_skipped: u64,
    pub trees: Vec<TreeView>,
    pub totals: Totals,
}

/// One tree of a report as a client reads it back: what the table and
/// `--check` need.
#[derive(Clone, Debug, Deserialize)]
pub struct TreeRow {
    pub root: ProcKey,
    pub server: String,
    pub host: Option<HostView>,
    pub session_id: Option<String>,
    pub owner_fds: Vec<OwnerFd>,
    pub state: TreeState,
    pub reason: Option<String>,
    pub age_seconds: u64,
    /// Only counted.
    pub members: Vec<serde::de::IgnoredAny>,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    #[serde(default)]
    pub daemon: Option<DaemonVerdict>,
}

/// A report as a client reads it back.
#[derive(Clone, Debug, Deserialize)]
pub struct ReportRows {
    pub schema_version: u32,
    pub source: String,
    #[serde(default)]
    pub daemon: Option<DaemonInfo>,
    pub processes_scanned: usize,
    pub trees: Vec<TreeRow>,
    pub totals: Totals,
}

impl ReportRows {
    /// `report` as a client would read it back, without the round trip.
    pub fn of(report: &ScanReport) -> Self {
        Self {
            schema_version: report.schema_version,
            source: report.source.to_owned(),
            daemon: report.daemon.clone(),
            processes_scanned: report.processes_scanned,
            trees: report.trees.iter().map(TreeRow::of).collect(),
            totals: report.totals.clone(),
        }
    }
}

impl TreeRow {
    fn of(t: &TreeView) -> Self {
        Self {
            root: t.root,
            server: t.server.clone(),
            host: t.host.clone(),
            session_id: t.session_id.clone(),
            owner_fds: t.owner_fds.clone(),
            state: t.state,
            reason: t.reason.clone(),
            age_seconds: t.age_seconds,
            members: vec![serde::de::IgnoredAny; t.members.len()],
            rss_bytes: t.rss_bytes,
            pss_bytes: t.pss_bytes,
            daemon: t.daemon.clone(),
        }
    }
}

pub fn totals(trees: &[TreeView]) -> Totals {
    let mut t = Totals {
        trees: trees.len(),
        ..Totals::default()
    };
    for tree in trees {
        t.total_rss_bytes += tree.rss_bytes;
        t.total_pss_bytes += tree.pss_bytes;
        match tree.state {
            TreeState::Live => t.live += 1,
            TreeState::Orphaned => {
                t.orphaned += 1;
                t.orphaned_rss_bytes += tree.rss_bytes;
                t.orphaned_pss_bytes += tree.pss_bytes;
            }
            TreeState::Suspect => t.suspect += 1,
            TreeState::Unknown => t.unknown += 1,
        }
    }
    t
}

/// The current time for `generated_at_unix`.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
