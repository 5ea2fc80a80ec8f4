//! The agent behind `mcp-reaper run`.
//!
//! Owns: starting the chosen event source, seeding the tracker from /proc,
//! feeding it events, resyncing after any loss or gap in lineage (a watch
//! not written, a kernel event skipped), periodic garbage collection (the
//! tracker's and the supervisor's, giving what it frees back to the
//! kernel), a clean shutdown (dropping the eBPF source detaches every
//! program), and telling a service manager when it is ready, alive and
//! stopping (`notify`), and answering `scan` from its tables (`scan`).
//! `Agent` is also the library entry point the integration tests drive.
//! Must never: let anything act on the process table while it is degraded
//! (lost events or lineage gaps not yet reconciled with /proc).

mod act;
mod events;
pub mod heap;
pub mod notify;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod notify_tests;
pub mod persist;
mod run_loop;
mod scan;
pub mod service;
mod start;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    config::Config,
    judge::policy::Decision,
    judge::supervisor::Supervisor,
    outputs::report::Reporter,
    procs::tracker::{Tracker, TrackerStats},
    reap::reaper::ReapReport,
    source::event::SourceMsg,
    source::{
        ActiveSource, CounterSnapshot, SourceChoice, SourceCounters,
        ebpf::{EbpfOptions, EbpfSource},
        poll::PollOptions,
    },
};

/// Everything `run` can be told.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub source: SourceChoice,
    pub ebpf: EbpfOptions,
    pub poll: PollOptions,
    /// How often exited entries are collected and unreported exits checked.
    pub gc_interval: Duration,
    /// Most processes the tracker keeps before it declares itself degraded.
    pub max_processes: usize,
    pub proc_root: PathBuf,
    /// Host rules, server shapes, protect rules and policy.
    pub config: Arc<Config>,
    /// How often pending execs are classified and due checks run.
    pub supervise_interval: Duration,
    /// Audit log and metrics (both optional).
    pub reporter: Reporter,
    /// Where reaps record what they stopped (`stopped`), so a restart after
    /// a death mid-reap continues them first; `None`: not recorded.
    pub state_dir: Option<PathBuf>,
    /// Fault injection (tests; `MCP_REAPER_FAULT_CLASSIFY_DELAY_MS` for
    /// the binary): how long each exec waits before it is classified, as on
    /// a daemon starved of CPU. Zero in normal operation.
    pub classify_delay: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            source: SourceChoice::Auto,
            ebpf: EbpfOptions::default(),
            poll: PollOptions::default(),
            gc_interval: Duration::from_secs(10),
            max_processes: 1 << 20,
            proc_root: PathBuf::from("/proc"),
            config: Arc::new(Config::default()),
            supervise_interval: Duration::from_millis(50),
            reporter: Reporter::default(),
            state_dir: None,
            classify_delay: Duration::ZERO,
        }
    }
}

/// What the agent publishes after every supervision tick, for the control
/// socket, metrics and tests: readers never touch the live tables.
#[derive(Debug, Default)]
pub struct Shared {
    pub trees: Vec<crate::judge::supervisor::TreeRecord>,
    pub reaps: Vec<ReapSummary>,
    pub reported: Vec<ReportedSummary>,
    pub status: Option<AgentStatus>,
    /// Trees declared over by `release`, picked up at the next tick, each
    /// with the processes the release covers.
    pub pending_release: Vec<crate::judge::release::Released>,
}

/// A finished reap, as published.
#[derive(Clone, Debug, Serialize)]
pub struct ReapSummary {
    pub root: crate::procs::identity::ProcKey,
    pub reason: Option<String>,
    pub outcome: String,
    pub members: Vec<crate::procs::identity::ProcKey>,
}

/// A decision that was only reported, as published.
#[derive(Clone, Debug, Serialize)]
pub struct ReportedSummary {
    pub root: crate::procs::identity::ProcKey,
    pub reason: Option<String>,
    pub decision: Decision,
    pub members: Vec<crate::procs::identity::ProcKey>,
}

/// A finished reap, sent back from its blocking task.
#[derive(Debug)]
pub struct ReapDone {
    pub root: crate::procs::identity::ProcKey,
    pub reason: Option<String>,
    pub report: ReapReport,
    pub record: crate::judge::supervisor::TreeRecord,
    /// Resident memory of the members when the reap started.
    pub reclaimed_bytes: u64,
}

/// A running agent: source, channel and tracker.
pub struct Agent {
    tracker: Tracker,
    ebpf: Option<EbpfSource>,
    active: ActiveSource,
    why: String,
    rx: mpsc::Receiver<SourceMsg>,
    reader: JoinHandle<()>,
    /// When to abort the source (fault injection), if ever.
    fault_source_stop: Option<std::time::Instant>,
    /// When to hang the loop's thread (fault injection), if ever.
    fault_loop_hang: Option<std::time::Instant>,
    /// Validated configurations to put in force (SIGHUP).
    reload_rx: Option<mpsc::Receiver<Arc<Config>>>,
    /// `scan` requests from the control socket, answered by the loop (each
    /// where to send the encoded report: `scan::ScanAsk`).
    scan_rx: Option<mpsc::Receiver<tokio::sync::oneshot::Sender<Box<serde_json::value::RawValue>>>>,
    /// The tree table last written, and when it was last considered.
    trees_saved: Option<crate::daemon::persist::SavedTable>,
    trees_saved_at: Option<std::time::Instant>,
    counters: Arc<SourceCounters>,
    resyncs: u64,
    /// When a resync is due after a gap in lineage.
    gap_resync_at: Option<std::time::Instant>,
    /// When the last resync started.
    last_gap_resync: Option<std::time::Instant>,
    supervisor: Supervisor,
    reap_tx: mpsc::UnboundedSender<ReapDone>,
    reap_rx: mpsc::UnboundedReceiver<ReapDone>,
    /// The pidfd tier's per-tree watches (None in the other tiers).
    stdin_watch: Option<crate::ownership::stdin_watch::StdinWatch>,
    wake_rx: Option<mpsc::UnboundedReceiver<crate::ownership::stdin_watch::Wake>>,
    shared: Arc<std::sync::Mutex<Shared>>,
    /// Members' memory figures for /metrics, read at most every
    /// `MEMORY_MAX_AGE`.
    memory: crate::judge::trees::MemoryCache,
    /// Readiness, status and watchdog keep-alives for a service manager
    /// (nothing without one).
    heartbeat: notify::Heartbeat,
    opts: AgentOptions,
}

/// Least time between two resyncs after gaps in lineage.
const GAP_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How old a member's RSS and PSS may be in /metrics.
const MEMORY_MAX_AGE: Duration = Duration::from_secs(30);

/// What the agent reports about itself (logs now, metrics later).
#[derive(Clone, Debug, Serialize)]
pub struct AgentStatus {
    pub source: ActiveSource,
    pub degraded: bool,
    pub resyncs: u64,
    pub events: CounterSnapshot,
    pub tracker: TrackerStats,
}

impl Agent {
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The eBPF source, to mark hosts and trees (None in the poll tier).
    pub fn ebpf_mut(&mut self) -> Option<&mut EbpfSource> {
        self.ebpf.as_mut()
    }

    pub fn active_source(&self) -> ActiveSource {
        self.active
    }

    /// Whether tree roots' stdin is watched through pidfds (the pidfd
    /// tier, and the eBPF tier without its close tier).
    pub fn watches_stdin(&self) -> bool {
        self.stdin_watch.is_some()
    }

    /// Why this source runs (for `doctor`, logs and metrics).
    pub fn source_reason(&self) -> &str {
        &self.why
    }

    pub fn status(&self) -> AgentStatus {
        AgentStatus {
            source: self.active,
            degraded: self.tracker.degraded(),
            resyncs: self.resyncs,
            events: self.counters.snapshot(),
            tracker: self.tracker.stats(),
        }
    }

    /// The state published after every tick.
    pub fn shared(&self) -> Arc<std::sync::Mutex<Shared>> {
        self.shared.clone()
    }

    fn with_shared(&self, f: impl FnOnce(&mut Shared)) {
        // A poisoned lock only means a reader panicked; the data is plain.
        let mut guard = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard);
    }

    /// The live map of trees.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Declares the trees a resolved release names over: they are reaped
    /// as `session-ended` after the grace period, if the check before the
    /// reap still confirms it. Returns them.
    pub fn release(
        &mut self,
        query: &crate::judge::release::ReleaseQuery,
    ) -> Vec<crate::procs::identity::ProcKey> {
        let released = crate::judge::release::match_trees(self.supervisor.trees(), query);
        self.supervisor.release(&released);
        released.iter().map(|r| r.root).collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Why [`Agent::run_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The shutdown future resolved (a signal).
    Shutdown,
    /// The event source's task ended: nothing is tracked any more.
    SourceStopped,
}
