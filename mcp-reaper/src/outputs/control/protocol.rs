//! The control protocol: requests, responses and their wire form.
//!
//! Owns: the request and response types, the one-JSON-object-per-line
//! encoding both sides use (see the module above for its shape), the
//! validation a request must pass before any handler sees it (no pid 0, a
//! bounded session id, exactly one of `release` / `status` / `scan`, no
//! unknown fields, `dry_run` only with `release`), which requests are
//! read-only, and the protocol's limits and fixed messages.
//! Must never: accept a request that is ambiguous or carries fields it does
//! not know, or do I/O: the server and the client do that.

use serde::{Deserialize, Serialize};

use crate::{
    judge::trees::TreeView,
    outputs::audit::{Action, ProcRef},
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mcp-reaper/control.sock";
/// Longest request line, newline excluded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The error a peer that is neither root nor the daemon's uid gets.
pub const PERMISSION_DENIED: &str = "permission denied: only root may release sessions";
/// The error a member of the read group gets for a request that acts.
pub const READ_ONLY_DENIED: &str =
    "permission denied: the control read group may only scan; release needs root";
/// Longest session id accepted.
pub const MAX_SESSION_BYTES: usize = 1024;

/// A host fd (or every fd of a host, with `fd` unset) whose trees to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRef {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
}

/// Which trees a `release` names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ReleaseTarget {
    Owner(OwnerRef),
    Session(String),
}

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireRequest", into = "WireRequest")]
pub enum Request {
    /// The host says these trees' session is over: treat them as
    /// `session-ended` (or, with `dry_run`, say what that would do).
    Release {
        target: ReleaseTarget,
        dry_run: bool,
    },
    Status,
    /// The daemon's trees as `scan` shows them (read-only).
    Scan,
}

impl Request {
    /// Whether the request only reads the daemon's state: a peer with
    /// read-only access (the configured read group) may send only these.
    pub fn is_read_only(&self) -> bool {
        match self {
            Self::Scan => true,
            // `status` carries the daemon's internals, `release` acts.
            Self::Status | Self::Release { .. } => false,
        }
    }
}

/// The argument of `status` and `scan`: exactly `{}` (not `[]`, which
/// serde would otherwise take for an empty struct, nor `{"any": ...}`).
#[derive(Default, Serialize)]
struct NoArgs {}

impl<'de> Deserialize<'de> for NoArgs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Empty;
        impl<'de> serde::de::Visitor<'de> for Empty {
            type Value = NoArgs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an empty object {}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<NoArgs, A::Error> {
                match m.next_key::<String>()? {
                    None => Ok(NoArgs {}),
                    Some(k) => Err(serde::de::Error::unknown_field(&k, &[])),
                }
            }
        }
        d.deserialize_map(Empty)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    release: Option<ReleaseTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<NoArgs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scan: Option<NoArgs>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
}

impl TryFrom<WireRequest> for Request {
    type Error = String;

    fn try_from(w: WireRequest) -> Result<Self, String> {
        let named = [w.release.is_some(), w.status.is_some(), w.scan.is_some()];
        match named.iter().filter(|n| **n).count() {
            0 => return Err("a request needs `release`, `status` or `scan`".into()),
            1 => {}
            _ => return Err("a request is one of `release`, `status` or `scan`".into()),
        }
        if w.dry_run && w.release.is_none() {
            return Err("`dry_run` goes only with `release`".into());
        }
        let Some(target) = w.release else {
            return Ok(if w.scan.is_some() {
                Self::Scan
            } else {
                Self::Status
            });
        };
        match &target {
            ReleaseTarget::Owner(o) if o.pid == 0 => {
                return Err("owner pid must be a positive number".into());
            }
            ReleaseTarget::Session(s) if s.is_empty() || s.len() > MAX_SESSION_BYTES => {
                return Err(format!("session id must be 1 to {MAX_SESSION_BYTES} bytes"));
            }
            _ => {}
        }
        Ok(Self::Release {
            target,
            dry_run: w.dry_run,
        })
    }
}

impl From<Request> for WireRequest {
    fn from(r: Request) -> Self {
        match r {
            Request::Release { target, dry_run } => Self {
                release: Some(target),
                status: None,
                scan: None,
                dry_run,
            },
            Request::Status => Self {
                release: None,
                status: Some(NoArgs {}),
                scan: None,
                dry_run: false,
            },
            Request::Scan => Self {
                release: None,
                status: None,
                scan: Some(NoArgs {}),
                dry_run: false,
            },
        }
    }
}

/// One tree a release matched, and what the daemon does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedTree {
    pub root: ProcRef,
    pub server: String,
    /// The tree's state when matched (`live`, `orphaned`, ...).
    pub state: String,
    pub action: Action,
}

impl MatchedTree {
    pub fn from_view(t: &TreeView, action: Action) -> Self {
        Self {
            root: t.root.into(),
            server: t.server.clone(),
            state: t.state.as_str().to_owned(),
            action,
        }
    }
}

/// A control response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<Vec<MatchedTree>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    /// A scan's answer: the document `scan --json` prints, already encoded
    /// (the daemon encodes it once; the client need not parse it to print it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A release's answer (an empty `matched` is still `ok`).
    pub fn matched(matched: Vec<MatchedTree>, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            matched: Some(matched),
            message: Some(message.into()),
            status: None,
            scan: None,
            error: None,
        }
    }

    /// A scan's answer: `document` is the report, already encoded.
    pub fn scan(document: Box<serde_json::value::RawValue>, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            matched: None,
            message: Some(message.into()),
            status: None,
            scan: Some(document),
            error: None,
        }
    }

    pub fn status(status: serde_json::Value, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            matched: None,
            message: Some(message.into()),
            status: Some(status),
            scan: None,
            error: None,
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            matched: None,
            message: None,
            status: None,
            scan: None,
            error: Some(error.into()),
        }
    }

    pub(super) fn to_line(&self) -> Vec<u8> {
        // Room for a scan's document at once: no copy as the line grows.
        let room = self.scan.as_ref().map_or(0, |s| s.get().len()) + 512;
        let mut line = Vec::with_capacity(room);
        if serde_json::to_writer(&mut line, self).is_err() {
            line = br#"{"ok":false,"error":"internal error: cannot encode the response"}"#.to_vec();
        }
        line.push(b'\n');
        line
    }
}
