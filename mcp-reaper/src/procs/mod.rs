//! The process table: what runs on the machine, by identity.
//!
//! - `identity`: a process is (tgid, start time), never a PID alone.
//! - `procscan`: reading /proc, hostile contents included.
//! - `tracker`: the process table and fork lineage, fed by the sources.
//! - `pidns`: PID namespaces (the daemon's own, `NSpid`, translation).
//! - `caps`: what this process may do (capabilities, `pidfd_getfd`).
//!
//! Owns: knowing which processes exist and who forked whom.
//! Must never: name a process by PID alone, or judge a tree (that is
//! `ownership` and `judge`, above this layer).

pub mod caps;
pub mod identity;
pub mod pidns;
pub mod procscan;
pub mod tracker;
