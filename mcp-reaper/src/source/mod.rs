//! Event sources: where process events come from.
//!
//! Owns: choosing a source (`auto` takes the best that works), the shared
//! counters every source keeps, and the bounded channel to the tracker.
//! Must never: interpret events (the tracker does) or act on them.

pub mod decode;
pub mod ebpf;
pub mod event;
pub mod kernel_btf;
pub mod poll;
pub mod tracefs;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Which event source to run (`--source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceChoice {
    /// eBPF if it loads, otherwise pidfd if `pidfd_getfd` works, otherwise
    /// poll.
    Auto,
    /// Kernel tracepoints; fail if they cannot be loaded.
    Ebpf,
    /// Periodic /proc scans, plus a wake on each tree root's exit (pidfd)
    /// and on its stdin's hangup (a `pidfd_getfd` duplicate in epoll).
    /// Needs CAP_SYS_PTRACE; fail if `pidfd_getfd` does not work.
    Pidfd,
    /// Periodic /proc scans; works anywhere /proc is readable.
    Poll,
}

/// The source actually running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveSource {
    Ebpf,
    /// Poll tracking plus per-tree pidfd and stdin wakes (`stdin_watch`).
    Pidfd,
    Poll,
}

impl std::fmt::Display for ActiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ebpf => "ebpf",
            Self::Pidfd => "pidfd",
            Self::Poll => "poll",
        })
    }
}

/// Counters kept by a source, read by the daemon (and later by metrics).
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub exec: AtomicU64,
    pub fork: AtomicU64,
    pub exit: AtomicU64,
    /// Close records from the eBPF close tier (hosts releasing sockets or
    /// pipes, or calling close_range).
    pub close: AtomicU64,
    /// Records that failed to decode (counted and skipped).
    pub decode_errors: AtomicU64,
    /// Records the kernel dropped because the ring buffer was full.
    pub lost: AtomicU64,
    /// Kernel-side read failures (event skipped in the kernel).
    pub kernel_read_errors: AtomicU64,
}

/// A point-in-time copy of [`SourceCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub exec: u64,
    pub fork: u64,
    pub exit: u64,
    pub close: u64,
    pub decode_errors: u64,
    pub lost: u64,
    pub kernel_read_errors: u64,
}

impl SourceCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            exec: l(&self.exec),
            fork: l(&self.fork),
            exit: l(&self.exit),
            close: l(&self.close),
            decode_errors: l(&self.decode_errors),
            lost: l(&self.lost),
            kernel_read_errors: l(&self.kernel_read_errors),
        }
    }

    pub(crate) fn count_event(&self, ev: &crate::source::event::ProcessEvent) {
        use crate::source::event::ProcessEvent as E;
        let c = match ev {
            E::Exec { .. } => &self.exec,
            E::Fork { .. } => &self.fork,
            E::Exit { .. } => &self.exit,
            E::Close { .. } => &self.close,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Capacity of the channel from a source to the tracker. When the tracker
/// falls behind, the source waits and the kernel ring buffer absorbs the
/// burst; past that the kernel counts losses and the tracker resyncs.
pub const CHANNEL_CAPACITY: usize = 16_384;
