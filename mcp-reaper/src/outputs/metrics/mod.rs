//! Prometheus metrics of the daemon.
//!
//! Owns: every `mcp_reaper_*` series (names, help, labels, buckets), the
//! zero series exported from the first scrape so alerts see them, the
//! bounding of label values, and the text encoding. Everything is registered
//! into a `Registry` the caller injects; nothing is global.
//! Must never: use a PID, session id, command line or any other unbounded
//! value as a label; let a scrape observe a half-replaced tree table; act on
//! anything (it only counts what other modules did).
//!
//! Label values: `host` is a host rule name and `server` a server identity,
//! both from configuration; values that are empty become `none`, values with
//! unexpected characters or over 128 bytes become `other`, and after
//! [`MAX_IDENTITIES`] distinct `(host, server)` pairs every new pair becomes
//! `(other, other)`. `reason`, `outcome`, `state`, `kind`, `tier` and `cause` come
//! from closed sets, every value spelled in snake_case.
//!
//! `mcp_reaper_event_source_info` is an info metric: one series, value 1,
//! its `tier` label the source in use (none before a source runs).
//!
//! `mcp_reaper_trees` always carries one zero-valued series per state with
//! `host="none",server="none"`: `sum(mcp_reaper_trees{state="orphaned"})`
//! then exists (and is 0) before the first tree is seen, and the placeholder
//! adds nothing to any sum. Process metrics (`process_*`) keep the standard
//! unprefixed names every dashboard expects.
//!
//! Layout, lowest first (each file uses only those above it):
//! - `labels`: closed label sets, placeholders and the bounding of values;
//! - `info`: the one-series tier info metric;
//! - `families`: every family's definition and registration, zero series;
//! - `update`: the per-event methods other modules call;
//! - `exposition`: the text encoding `/metrics` serves.
//!
//! Everything public is re-exported here: callers name `crate::outputs::metrics::X`.

mod exposition;
mod families;
mod info;
mod labels;
mod update;

#[cfg(test)]
mod tests;

pub use exposition::{CONTENT_TYPE, encode, try_encode};
pub use families::{Metrics, PREFIX};
pub use labels::{
    EventKind, MAX_IDENTITIES, NONE, OTHER, ReapOutcome, STATES, TIERS, reason_label,
};
pub use prometheus::Registry;
pub use update::TreeSample;
