//! The text exposition of a registry, as `/metrics` serves it.
//!
//! Owns: the content type and the encoding of everything in a `Registry`.
//! Must never: change a series, or fail without saying so (a failed
//! encoding becomes a comment line in `encode`, an error in `try_encode`).

use prometheus::{Encoder as _, Registry, TextEncoder};

/// Content type of [`encode`]'s output (text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything in `registry`, in the text exposition format.
///
/// # Errors
/// When a collector produced an invalid metric family.
pub fn try_encode(registry: &Registry) -> prometheus::Result<String> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// [`try_encode`], with a failure rendered as a comment line.
#[must_use]
pub fn encode(registry: &Registry) -> String {
    try_encode(registry).unwrap_or_else(|e| format!("# mcp-reaper: encoding failed: {e}\n"))
}
