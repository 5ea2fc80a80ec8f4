//! The label values metrics may carry: the closed sets and the bounding of
//! the open ones.
//!
//! Owns: the tree states, tiers, reasons, reap outcomes and event kinds as
//! exported, the `none` / `other` placeholders, and `bounded`, which turns a
//! host rule or server identity into a label value that cannot grow without
//! limit. Every value of a closed set is spelled in snake_case
//! (`peer_released`, `dry_run`, `watch_full`), as Prometheus label values
//! conventionally are; the configuration file and the audit log keep their
//! own kebab-case names for reasons and actions.
//! Must never: pass through a value it has not checked (empty, too long or
//! odd characters), or know about series: the families use these values.

use crate::{config::Reason, judge::trees::TreeState};

/// Most distinct `(host, server)` pairs before new ones collapse to `other`.
pub const MAX_IDENTITIES: usize = 256;
/// Longest label value kept as is.
const MAX_LABEL_LEN: usize = 128;
/// Placeholder host/server of the zero `mcp_reaper_trees` series.
pub const NONE: &str = "none";
/// What an out-of-bounds label value becomes.
pub const OTHER: &str = "other";

/// Tree states, in the order they are exported.
pub const STATES: [TreeState; 4] = [
    TreeState::Live,
    TreeState::Orphaned,
    TreeState::Suspect,
    TreeState::Unknown,
];
/// Event-source tiers `mcp_reaper_event_source_info` knows (others: `other`).
pub const TIERS: [&str; 3] = ["ebpf", "pidfd", "poll"];

/// The `reason` label of a verdict: the configuration's name in snake_case.
#[must_use]
pub fn reason_label(reason: Reason) -> &'static str {
    match reason {
        Reason::PeerReleased => "peer_released",
        Reason::HostExited => "host_exited",
        Reason::SessionEnded => "session_ended",
        Reason::Remnant => "remnant",
        Reason::Idle => "idle",
        Reason::Superseded => "superseded",
    }
}

/// How a reap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReapOutcome {
    /// Every member exited after SIGTERM.
    Terminated,
    /// SIGKILL was needed for at least one member.
    Killed,
    /// At least one member survived SIGKILL (D state); reported, not retried.
    Unkillable,
    /// The tree was gone before the reaper acted.
    Vanished,
    /// Observe mode: the tree would have been reaped.
    DryRun,
}

impl ReapOutcome {
    pub const ALL: [ReapOutcome; 5] = [
        ReapOutcome::Terminated,
        ReapOutcome::Killed,
        ReapOutcome::Unkillable,
        ReapOutcome::Vanished,
        ReapOutcome::DryRun,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminated => "terminated",
            Self::Killed => "killed",
            Self::Unkillable => "unkillable",
            Self::Vanished => "vanished",
            Self::DryRun => "dry_run",
        }
    }

    /// Whether the tree is gone because of (or despite) the reaper.
    pub(super) fn is_success(self) -> bool {
        matches!(self, Self::Terminated | Self::Killed | Self::Vanished)
    }
}

/// Kinds of source events counted by `mcp_reaper_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Exec,
    Fork,
    Exit,
    Close,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [Self::Exec, Self::Fork, Self::Exit, Self::Close];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Close => "close",
        }
    }
}

/// A label value as exported: `none` when empty, `other` when it is too
/// long or holds characters a rule or package name would not.
pub(super) fn bounded(value: &str) -> &str {
    if value.is_empty() {
        NONE
    } else if value.len() > MAX_LABEL_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@/+:".contains(&b))
    {
        OTHER
    } else {
        value
    }
}
