//! The JSON-lines audit log: one line per decision and action.
//!
//! Owns: the audit record schema (`AuditRecord`), the file, stdout or no-op
//! target with size-based rotation (`AuditLog`), and the writer thread that
//! takes records off the async runtime (`AuditSink`), with its counters.
//! Must never: panic or block the runtime on a slow disk (records go
//! through a bounded channel; a full channel drops and counts), let a
//! process's command line break or forge a line (every free-text field is
//! escaped and bounded), or decide anything: it records what others did.
//!
//! Layout, lowest first (each file uses only those above it):
//! - `text`: escaping and bounding free text, timestamps, record ids;
//! - `record`: the record schema and its JSON form;
//! - `writer`: the synchronous target (file with rotation, stdout, off);
//! - `sink`: the writer thread, its bounded channel and its counters.
//!
//! Everything public is re-exported here: callers name `crate::outputs::audit::X`.

mod record;
mod sink;
mod text;
mod writer;

#[cfg(test)]
mod tests;

pub use record::{
    Action, AuditEvent, AuditHost, AuditMember, AuditOwnerFd, AuditRecord, AuditSignal,
    AuditTimings, AuditTree, MAX_CMDLINE_BYTES, MAX_MEMBERS, MAX_TEXT_BYTES, ProcRef,
};
pub use sink::{AuditSink, AuditStats, AuditStatsSnapshot, DEFAULT_SINK_CAPACITY};
pub use text::{bounded_text, next_id, rfc3339_micros};
pub use writer::{AuditLog, AuditTarget};
