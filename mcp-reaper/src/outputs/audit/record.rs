//! The audit record schema: one `AuditRecord` per line, and the parts it is
//! built from (tree, members, signals, timings).
//!
//! Owns: every field name and its JSON form (log consumers parse these, so
//! a rename is a breaking change), the bounds on listed members and free
//! text, and building a record from a tree view.
//! Must never: put unescaped or unbounded text from a process into a field
//! (everything goes through `bounded_text`), or write anything: the writer
//! and the sink do that.

use std::{io, time::SystemTime};

use serde::{Deserialize, Serialize};

use super::text::{bounded_text, next_id, rfc3339_micros};
use crate::{
    judge::trees::{MemberView, TreeView},
    procs::identity::ProcKey,
};

/// Longest command line kept per member, in bytes (after escaping).
pub const MAX_CMDLINE_BYTES: usize = 4096;
/// Longest other free-text field (`why`, `reason`, `outcome`, ids), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most members listed per record; the rest are counted in `members_omitted`.
pub const MAX_MEMBERS: usize = 256;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditEvent {
    /// A tree's owner let go (the detector's verdict, before confirmation).
    OrphanDetected,
    /// The policy decided what to do with a tree.
    Decision,
    /// The reaper signalled a tree; `signals` and `outcome` say how it went.
    Reap,
    /// A `release` request arrived on the control socket.
    ReleaseRequest,
    Startup,
    Shutdown,
}

/// What the policy chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Reap the tree.
    Enforce,
    /// Record and count only (heuristic verdicts, observe mode).
    Observe,
    /// Say what would be reaped, signal nothing.
    DryRun,
    /// Leave the tree alone (protected, degraded tracking, not orphaned).
    Skip,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Observe => "observe",
            Self::DryRun => "dry-run",
            Self::Skip => "skip",
        }
    }
}

/// A process by identity, as the audit log and the control socket write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcRef {
    pub tgid: u32,
    pub start_ticks: u64,
}

impl From<ProcKey> for ProcRef {
    fn from(k: ProcKey) -> Self {
        Self {
            tgid: k.tgid,
            start_ticks: k.start_ticks,
        }
    }
}

impl From<ProcRef> for ProcKey {
    fn from(r: ProcRef) -> Self {
        ProcKey::new(r.tgid, r.start_ticks)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHost {
    pub pid: u32,
    pub start_ticks: u64,
    pub rule: String,
    /// The PID inside the host's own PID namespace, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOwnerFd {
    pub pid: u32,
    #[serde(default)]
    pub start_ticks: u64,
    pub fd: u32,
    /// The socket or pipe inode behind `fd` when it was seen (0: unknown).
    #[serde(default)]
    pub inode: u64,
}

impl From<&crate::judge::trees::OwnerFd> for AuditOwnerFd {
    fn from(o: &crate::judge::trees::OwnerFd) -> Self {
        Self {
            pid: o.pid,
            start_ticks: o.start_ticks,
            fd: o.fd,
            inode: o.inode,
        }
    }
}

/// The tree a record is about. `host` and `session_id` are written as
/// `null` when unknown (a stable schema for log consumers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTree {
    pub root: ProcRef,
    pub server: String,
    pub host: Option<AuditHost>,
    pub session_id: Option<String>,
    pub owner_fds: Vec<AuditOwnerFd>,
    /// Relay chain, session owner first, down to the hop holding the
    /// tree's stdio (empty when the host holds it directly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ProcRef>,
    /// The link whose upstream end was released, when orphaned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_link: Option<ProcRef>,
}

impl From<&TreeView> for AuditTree {
    fn from(t: &TreeView) -> Self {
        Self {
            root: t.root.into(),
            server: bounded_text(&t.server, MAX_TEXT_BYTES),
            host: t.host.as_ref().map(|h| AuditHost {
                pid: h.pid,
                start_ticks: h.start_ticks,
                rule: bounded_text(&h.rule, MAX_TEXT_BYTES),
                ns_pid: h.ns_pid,
            }),
            session_id: t
                .session_id
                .as_deref()
                .map(|s| bounded_text(s, MAX_TEXT_BYTES)),
            owner_fds: t.owner_fds.iter().map(AuditOwnerFd::from).collect(),
            chain: t
                .chain
                .iter()
                .map(|h| ProcRef {
                    tgid: h.pid,
                    start_ticks: h.start_ticks,
                })
                .collect(),
            released_link: t.released_link.map(Into::into),
        }
    }
}

/// One member of the tree, with its command line escaped and bounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditMember {
    pub pid: u32,
    pub start_ticks: u64,
    /// The PID inside the member's own PID namespace, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    pub cmdline: String,
}

impl AuditMember {
    pub fn new(pid: u32, start_ticks: u64, cmdline: &str) -> Self {
        Self {
            pid,
            start_ticks,
            ns_pid: None,
            cmdline: bounded_text(cmdline, MAX_CMDLINE_BYTES),
        }
    }

    /// From raw /proc bytes (NUL-separated, maybe not UTF-8): converted
    /// lossily, NULs shown as spaces, then escaped and bounded.
    pub fn from_raw(pid: u32, start_ticks: u64, raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches('\0').replace('\0', " ");
        Self::new(pid, start_ticks, &text)
    }
}

impl From<&MemberView> for AuditMember {
    fn from(m: &MemberView) -> Self {
        Self {
            ns_pid: m.ns_pid,
            ..Self::new(m.pid, m.start_ticks, &m.cmdline)
        }
    }
}

/// A signal the reaper sent, by name (`SIGSTOP`, `SIGTERM`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSignal {
    pub pid: u32,
    pub signal: String,
}

/// Milliseconds since the tree's owner let go (as first observed), for each
/// stage reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTimings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaped_ms: Option<u64>,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC with microseconds.
    pub ts: String,
    /// Unique per daemon run (`<run>-<counter>`).
    pub id: String,
    pub event: AuditEvent,
    /// Absent for `startup` and `shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<AuditTree>,
    #[serde(default)]
    pub members: Vec<AuditMember>,
    /// Members beyond `MAX_MEMBERS`, not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub members_omitted: u32,
    /// The tree's state reason (`peer-released`, `host-exited`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Why this action (policy rule, protection, dry run, degraded, ...).
    #[serde(default)]
    pub why: String,
    #[serde(default)]
    pub signals: Vec<AuditSignal>,
    /// How it ended (`reaped`, `partial: 1 in D state`, `failed: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<AuditTimings>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AuditRecord {
    /// A record stamped now with a fresh id.
    pub fn new(event: AuditEvent) -> Self {
        Self {
            ts: rfc3339_micros(SystemTime::now()),
            id: next_id(),
            event,
            tree: None,
            members: Vec::new(),
            members_omitted: 0,
            reason: None,
            action: None,
            why: String::new(),
            signals: Vec::new(),
            outcome: None,
            timings: None,
        }
    }

    /// Fills `tree`, `members` (bounded) and `reason` from a tree view.
    pub fn with_tree(mut self, t: &TreeView) -> Self {
        self.tree = Some(AuditTree::from(t));
        self.members = t
            .members
            .iter()
            .take(MAX_MEMBERS)
            .map(AuditMember::from)
            .collect();
        self.members_omitted =
            u32::try_from(t.members.len().saturating_sub(MAX_MEMBERS)).unwrap_or(u32::MAX);
        self.reason = t.reason.as_deref().map(|r| bounded_text(r, MAX_TEXT_BYTES));
        self
    }

    pub fn with_action(mut self, action: Action, why: &str) -> Self {
        self.action = Some(action);
        self.why = bounded_text(why, MAX_TEXT_BYTES);
        self
    }

    pub fn with_outcome(mut self, outcome: &str) -> Self {
        self.outcome = Some(bounded_text(outcome, MAX_TEXT_BYTES));
        self
    }

    /// The record as one line, newline included. Every string is escaped by
    /// JSON, so no field can end the line early.
    pub fn to_line(&self) -> io::Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self).map_err(io::Error::other)?;
        line.push(b'\n');
        Ok(line)
    }
}
