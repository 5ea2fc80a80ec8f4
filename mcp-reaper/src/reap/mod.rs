//! Reaping: killing one released tree, completely and only it.
//!
//! - `reaper`: the plan and its pidfd signalling (stop, term, kill).
//! - `protect`: the `[[protect]]` check, failing closed.
//! - `lineage`: where a reap finds members each round (the kernel's
//!   lineage, fork descendants, stdio heirs).
//! - `stopped`: the record of what a reap stopped, for a restart.
//!
//! Owns: every signal the daemon sends.
//! Must never: signal anything but a member of the tree it was handed, a
//! protected process, a host or a relay; or signal by PID alone.

pub mod lineage;
/// Property: the plan never holds what a reap must leave alone.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod props;
pub mod protect;
pub mod reaper;
pub mod stopped;
