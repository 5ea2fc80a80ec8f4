//! What the daemon tells the world: audit records, metrics, log lines,
//! the HTTP endpoint and the control socket.
//!
//! - `report`: one record, metric and log line for every decision.
//! - `audit`: the audit log (JSON lines, rotation, a bounded writer).
//! - `metrics`: the Prometheus families and their updates.
//! - `http`: `/metrics`, the probes (`/livez`, `/readyz`, `/healthz`) and `/`,
//!   with per-client connection limits.
//! - `control`: the root-only control socket (`status`, `release`).
//!
//! Owns: the formats operators and machines read.
//! Must never: decide or signal anything; a control request only asks the
//! daemon, which judges it like any other evidence.

pub mod audit;
pub mod control;
pub mod http;
pub mod metrics;
pub mod report;
