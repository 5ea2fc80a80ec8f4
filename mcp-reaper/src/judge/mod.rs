//! Judging trees: which processes form an MCP tree, whose session owns it,
//! and whether that owner has let go.
//!
//! - `classify`: the role of a process and the tree a server belongs to.
//! - `trees`: tree states, owners and memory (also the one-shot build
//!   `scan` uses).
//! - `remnant`: the verdict on a tree whose root is gone (pure).
//! - `activity`: idle clocks from members' I/O.
//! - `policy`: what to do about a verdict (pure decision table).
//! - `release`: what a host's `release` names, by identity.
//! - `supervisor`: the daemon's live map of trees, its checks and its
//!   decisions (`supervisor::verdict` is the pure weighing of evidence).
//!
//! Owns: every verdict and every decision.
//! Must never: signal a process (that is `reap`), or call a tree released
//! on evidence it could not read.

pub mod activity;
pub mod classify;
pub mod policy;
pub mod release;
pub mod remnant;
pub mod supervisor;
pub mod trees;
