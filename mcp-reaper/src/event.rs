//! Process events as the rest of the agent sees them, whatever their source.
//!
//! Owns: the typed vocabulary between event sources (eBPF, poll) and the
//! tracker. Must never: carry raw kernel bytes (decoding is `decode`'s job).

use crate::identity::ProcKey;

/// The watch state the kernel attached to a process, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Watch {
    /// Root of the tree the process belongs to.
    pub root: Option<ProcKey>,
    /// The process is a host (its children start new trees).
    pub host: bool,
}

/// One change to the process table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// `key` replaced its image. Reported for every process.
    Exec {
        key: ProcKey,
        parent: ProcKey,
        comm: String,
        watch: Watch,
        /// Boot-time clock of the event, ns (0 when the source has none).
        ktime_ns: u64,
    },
    /// `parent` forked `child`. Reported for watched parents only.
    Fork {
        child: ProcKey,
        parent: ProcKey,
        comm: String,
        watch: Watch,
        ktime_ns: u64,
    },
    /// The last thread of `key` exited.
    Exit {
        key: ProcKey,
        exit_code: u32,
        watch: Watch,
        ktime_ns: u64,
    },
}

impl ProcessEvent {
    /// The process the event is about.
    pub fn key(&self) -> ProcKey {
        match self {
            Self::Exec { key, .. } | Self::Exit { key, .. } => *key,
            Self::Fork { child, .. } => *child,
        }
    }
}

/// What an event source hands to the tracker.
#[derive(Debug)]
pub enum SourceMsg {
    Event(ProcessEvent),
    /// The source dropped `n` events (ring buffer full): the tracker must
    /// resync from /proc before anything acts on its table.
    Lost(u64),
}
