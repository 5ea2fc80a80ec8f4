//! The local control socket and its client (`mcp-reaper release`).
//!
//! Owns: the wire protocol (newline-delimited JSON over a UNIX stream
//! socket, default `/run/mcp-reaper/control.sock`), the server loop that
//! checks each peer's credentials before passing its requests to the
//! daemon's handler, and the blocking client the CLI uses.
//! Must never: act on a request from a peer other than root or the daemon's
//! own uid (checked with SO_PEERCRED on every connection, whatever the
//! socket's file mode says), let the configured read group (`[control]
//! read_group`) send anything but a read-only request (`scan`), replace a
//! socket a live daemon answers on, or
//! let one connection's bad input (oversized, malformed, slow) crash the
//! server or stall other connections. It decides nothing itself: the
//! handler matches trees and the policy acts on them.
//!
//! Protocol, one JSON object per line each way, several per connection:
//! - `{"release": {"owner": {"pid": 123, "fd": 5}}, "dry_run": false}`
//!   (`fd` optional: any fd of that host), or
//!   `{"release": {"session": "abc"}, "dry_run": true}`;
//! - `{"status": {}}`;
//! - `{"scan": {}}` (read-only: the read group may send it).
//!
//! Responses: `{"ok": true, "matched": [{"root": {"tgid", "start_ticks"},
//! "server", "state", "action"}], "message": "..."}` (status replies carry a
//! `status` object instead of `matched`, scan replies a `scan` object: the
//! document `scan --json` prints), or `{"ok": false, "error": "..."}`.
//!
//! `mcp-reaper release` exit codes: 0 at least one tree matched, 1 nothing
//! matched, 2 usage (bad arguments, or the daemon rejected the request as
//! invalid), 3 daemon unreachable (no socket, not answering, timed out) or
//! it refused this caller (permission denied).
//!
//! Layout, lowest first (each file uses only those above it):
//! - `protocol`: request and response types, their wire form, validation;
//! - `socket`: the socket file (directory, mode, stale sockets);
//! - `server`: the accept loop, peer checks and per-connection handling;
//! - `client`: the blocking client, its errors and exit codes.
//!
//! Everything public is re-exported here: callers name `crate::outputs::control::X`.

mod client;
mod peer;
mod protocol;
mod server;
mod socket;

#[cfg(test)]
mod tests;

pub use client::{
    ControlError, EXIT_MATCHED, EXIT_NO_MATCH, EXIT_UNREACHABLE, EXIT_USAGE, MAX_RESPONSE_BYTES,
    exit_code, parse_owner, permission_denied, request, request_line,
};
pub use peer::Peer;
pub use protocol::{
    DEFAULT_SOCKET, MAX_REQUEST_BYTES, MAX_SESSION_BYTES, MatchedTree, OwnerRef, PERMISSION_DENIED,
    READ_ONLY_DENIED, ReleaseTarget, Request, Response,
};
pub use server::{
    Access, ControlStats, Handler, IDLE_TIMEOUT, MAX_CONNECTIONS, Rights, rights, serve,
    serve_counted, serve_with,
};
