//! mcp-reaper: finds MCP server process trees, maps each to the host session
//! that owns its stdio, and reaps the trees whose owner has let go.
//!
//! The folders follow the data path (ARCHITECTURE.md); each module's
//! header says what it owns and must never do:
//! - `source`: event sources (eBPF, pidfd, poll), record decoding, BTF
//!   offsets, and the typed events they feed the tracker.
//! - `procs`: process identity, /proc reading, the process table and
//!   lineage, capabilities.
//! - `ownership`: who holds the far end of a tree's stdio (fd tables,
//!   sock_diag, relay chains, the stdin watches).
//! - `judge`: classification, trees, the supervisor and its verdicts,
//!   policy, activity, release matching.
//! - `reap`: the reaper and the never-touch rules.
//! - `outputs`: report, audit log, metrics, HTTP endpoint, control socket.
//! - `config`: the TOML configuration, host presets and server shapes.
//! - `daemon`: the agent behind `run`, wiring the path together.
//! - `cli`: the command line (clap) and the one-shot commands (`scan`,
//!   `doctor`).

pub mod cli;
pub mod config;
pub mod daemon;
/// Entry points of the fuzz targets in fuzz/ (feature `fuzzing` only).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod judge;
pub mod outputs;
pub mod ownership;
pub mod procs;
pub mod reap;
pub mod source;

// What the binary and the integration tests name directly, at the paths
// they use.
pub use cli::{doctor, scan};
pub use daemon::heap;
pub use judge::{policy, release, supervisor, trees};
pub use outputs::{audit, control, metrics, report};
pub use ownership::stdin_watch;
pub use procs::{identity, procscan, tracker};
pub use reap::{protect, reaper};
pub use source::event;
