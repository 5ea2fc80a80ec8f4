//! mcp-reaper: finds MCP server process trees, maps each to the host session
//! that owns its stdio, and reaps the trees whose owner has let go.
//!
//! Module map (each module's header says what it owns and must never do):
//! - `identity`, `event`: the vocabulary (process keys, process events).
//! - `procscan`: reading /proc, hostile contents included.
//! - `decode`: kernel ring-buffer records -> typed events.
//! - `kernel_btf`: struct offsets from the running kernel's BTF.
//! - `source`: event sources (eBPF, pidfd, poll) feeding the tracker.
//! - `stdin_watch`: the pidfd tier's root-exit and stdin-hangup wakes.
//! - `tracker`: the process table and fork lineage.
//! - `config`: the TOML configuration, host presets and server shapes.
//! - `classify`: which tree a server belongs to, rooted where, whose host.
//! - `ownership`: who holds the far end of a tree's stdio (sock_diag, fds).
//! - `trees`: MCP trees, their owners, states and memory.
//! - `scan`: the one-shot report.
//! - `policy`: what to do about a tree (pure decision table).
//! - `remnant`: the verdict on a tree whose root is gone (pure).
//! - `supervisor`: the daemon's live map of trees and its decisions.
//! - `reaper`: kills one tree through pidfds, completely and only it.
//! - `report`: audit records, metrics and log lines for every decision.
//! - `audit`, `control`, `metrics`, `http`: the daemon's outward surfaces.
//! - `doctor`: what this kernel and these privileges allow.
//! - `daemon`: the `run` command wiring it all together.
//! - `heap`: giving freed heap pages back to the kernel.

pub mod activity;
pub mod audit;
pub mod classify;
pub mod config;
pub mod control;
pub mod daemon;
pub mod decode;
pub mod doctor;
pub mod event;
pub mod heap;
pub mod http;
pub mod identity;
pub mod kernel_btf;
pub mod lineage;
pub mod metrics;
pub mod ownership;
pub mod persist;
pub mod policy;
pub mod procscan;
pub mod protect;
pub mod reaper;
pub mod release;
pub mod remnant;
pub mod report;
pub mod scan;
pub mod source;
pub mod stdin_watch;
pub mod stopped;
pub mod supervisor;
pub mod tracker;
pub mod trees;

/// For unit tests that need root: `true` when running as root; otherwise
/// prints why the test skips (`needs`), or fails when the privileged test
/// runner (`MCP_REAPER_REQUIRE_PRIVILEGED=1`) demands that nothing skip.
#[cfg(test)]
pub(crate) fn test_has_root(needs: &str) -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return true;
    }
    if std::env::var("MCP_REAPER_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("MCP_REAPER_REQUIRE_PRIVILEGED=1 but not running as root");
    }
    println!("skipped: needs root ({needs})");
    false
}
