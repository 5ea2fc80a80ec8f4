//! The process table.
//!
//! Owns: every process the agent knows of, keyed by (tgid, start time); the
//! fork lineage between them (who forked whom, kept after the child is
//! reparented and after the forking process exits); the MCP tree each one
//! belongs to; and the table's health: degraded after lost events or a full
//! table, until a resync from /proc.
//!
//! Must never: do I/O (liveness comes in as a closure, /proc as snapshots
//! read by `procscan`), let a bare PID stand for a process (the tgid index
//! is a lookup aid that always yields a full key), grow without bound, or
//! forget an exited process while one of its descendants lives: lineage,
//! and so tree membership, runs through it.
//!
//! Events may arrive late, twice, or out of order (an exit before the fork
//! that created the process). Every handler is idempotent, an exit for an
//! unknown process is parked until the process appears, and a fork whose
//! parent is unknown still records the child under the parent's key, so the
//! lineage joins up when the parent shows up.
//!
//! A tree admits only members whose lineage the table shows: the kernel's
//! word that a process belongs to a tree (its watch entry) is taken only
//! when the chain of lineage parents leads from the process to that tree's
//! root. A claim the table cannot show is refused and counted
//! (`lineage_rejected`); it is kept on the entry and admitted should the
//! missing lineage arrive later (events out of order). A watch entry the
//! kernel kept for an earlier holder of a PID therefore never pulls an
//! unrelated process into a tree.
//!
//! Layout, lowest first (each file uses only those above it in this list):
//! - `entry`: what an entry holds; `bounds`: sizes and the shrink rule.
//! - `parked`: exits waiting for their process.
//! - `table`: the `Tracker` struct and the index operations under it.
//! - `query`: every read-only question.
//! - `admit`: inserting entries, lineage parents, tree membership.
//! - `apply`: the event handlers; `snapshot`: /proc scans; `gc`: clean-up
//!   (these three on top; `snapshot`'s resync reuses `gc`'s prune).

mod admit;
mod apply;
mod bounds;
mod entry;
mod gc;
mod parked;
mod query;
mod snapshot;
mod table;

pub use bounds::TableSizes;
pub(crate) use bounds::shrink;
pub use entry::{EXIT_CODE_UNKNOWN, ExitReporting, Origin, ProcEntry, TrackerStats};
pub use table::Tracker;

/// Property: a resync makes the table agree with /proc, whatever became
/// of the events.
#[cfg(test)]
mod props;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
