//! MCP trees: which server trees exist, who owns each, and their state.
//!
//! Owns: grouping processes into MCP trees (a root the host spawned plus
//! every descendant), naming the host and session that own each tree,
//! asking `ownership` for the stdio verdict, and turning it into a tree
//! state with a reason. Also the per-tree memory (RSS and PSS) figures.
//! Must never: signal anything, or call a tree orphaned on less than the
//! kernel's word (an `Unknown` ownership stays `unknown`, never orphaned).
//!
//! Layout, lowest first (each file uses only those above it in this list):
//! - `state`: `TreeState` and the state an ownership verdict gives.
//! - `view`: what is shown of a tree, and `OwnerFd`, a named holder.
//! - `roots`: which processes are roots, and their members.
//! - `memory`: RSS and PSS, cached.
//! - `build`: every tree of one /proc snapshot, for `scan`.
//! - `report`: the report `scan` prints, from either source.

mod build;
mod memory;
mod report;
mod roots;
mod state;
mod view;

pub use build::{build, session_from_env, session_in_environ, uptime_ticks};
pub use memory::{MemoryCache, parse_pss, pss_bytes};
pub use report::{
    DaemonInfo, ReportRows, SCHEMA_VERSION, SOURCE_DAEMON, SOURCE_STANDALONE, ScanReport, Totals,
    TreeRow, now_unix, totals,
};
pub use roots::{find_roots, members_of};
pub use state::{TreeState, classify};
pub use view::{DaemonVerdict, HostView, MemberView, OwnerFd, TreeView, still_holds};
