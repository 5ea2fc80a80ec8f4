//! The agent behind `mcp-reaper run`.
//!
//! Owns: starting the chosen event source, seeding the tracker from /proc,
//! feeding it events, resyncing after any loss, periodic garbage
//! collection, and a clean shutdown (dropping the eBPF source detaches
//! every program). `Agent` is also the library entry point the integration
//! tests drive.
//! Must never: let anything act on the process table while it is degraded
//! (lost events not yet reconciled with /proc).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    event::SourceMsg,
    procscan,
    source::{
        ActiveSource, CHANNEL_CAPACITY, CounterSnapshot, SourceChoice, SourceCounters,
        ebpf::{EbpfOptions, EbpfSource},
        poll::{self, PollOptions},
    },
    tracker::{ExitReporting, Tracker, TrackerStats},
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
        }
    }
}

/// A running agent: source, channel and tracker.
pub struct Agent {
    tracker: Tracker,
    ebpf: Option<EbpfSource>,
    active: ActiveSource,
    why: String,
    rx: mpsc::Receiver<SourceMsg>,
    reader: JoinHandle<()>,
    counters: Arc<SourceCounters>,
    resyncs: u64,
    opts: AgentOptions,
}

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
    /// Starts the source and seeds the tracker. Must run inside a tokio
    /// runtime. With `auto`, an eBPF failure is logged with its cause and the
    /// poll source runs instead.
    pub fn start(opts: AgentOptions) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(SourceCounters::default());
        let (ebpf, active, why) = match opts.source {
            SourceChoice::Poll => (None, ActiveSource::Poll, "chosen with --source poll".into()),
            SourceChoice::Ebpf => {
                let src = EbpfSource::load(&opts.ebpf).context("eBPF event source")?;
                (
                    Some(src),
                    ActiveSource::Ebpf,
                    "chosen with --source ebpf".into(),
                )
            }
            SourceChoice::Auto => match EbpfSource::load(&opts.ebpf) {
                Ok(src) => (
                    Some(src),
                    ActiveSource::Ebpf,
                    "tp_btf programs loaded".into(),
                ),
                Err(e) => {
                    let why = format!("eBPF unavailable ({e:#}); polling /proc instead");
                    warn!("{why}");
                    (None, ActiveSource::Poll, why)
                }
            },
        };
        let reporting = match active {
            ActiveSource::Ebpf => ExitReporting::WatchedOnly,
            ActiveSource::Poll => ExitReporting::All,
        };
        let mut tracker = Tracker::new(opts.max_processes).with_exit_reporting(reporting);
        // Attach first, snapshot second: a process born in between is in
        // both, which the tracker treats as a duplicate, never a gap.
        let snapshot = procscan::snapshot(&opts.proc_root);
        if let Some(e) = &snapshot.error {
            anyhow::bail!("cannot read the process table: {e}");
        }
        tracker.seed(&snapshot.procs);
        let (ebpf, reader) = match ebpf {
            Some(mut src) => {
                let reader = src.spawn_reader(tx, counters.clone())?;
                (Some(src), reader)
            }
            None => {
                let reader = poll::spawn(opts.poll.clone(), &snapshot.procs, tx, counters.clone());
                (None, reader)
            }
        };
        info!(
            source = %active,
            processes = snapshot.procs.len(),
            skipped = snapshot.skipped,
            "event source ready"
        );
        Ok(Self {
            tracker,
            ebpf,
            active,
            why,
            rx,
            reader,
            counters,
            resyncs: 0,
            opts,
        })
    }

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

    /// Waits for the next message from the source and applies it. Returns
    /// false when the source has stopped.
    pub async fn step(&mut self) -> bool {
        match self.rx.recv().await {
            Some(msg) => {
                self.handle(msg);
                true
            }
            None => false,
        }
    }

    /// Applies every message already queued, without waiting.
    pub fn drain_ready(&mut self) -> usize {
        let mut n = 0;
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg);
            n += 1;
        }
        n
    }

    fn handle(&mut self, msg: SourceMsg) {
        match msg {
            SourceMsg::Event(ev) => self.tracker.apply(&ev),
            SourceMsg::Lost(n) => {
                warn!(lost = n, "kernel dropped events; resyncing from /proc");
                self.tracker.mark_lost(n);
                self.resync();
            }
        }
    }

    /// Makes the table agree with /proc again and clears the degraded flag.
    pub fn resync(&mut self) {
        // Events queued before the resync describe the past: apply them
        // first so the snapshot, which is newer, has the last word.
        while let Ok(SourceMsg::Event(ev)) = self.rx.try_recv() {
            self.tracker.apply(&ev);
        }
        let snapshot = procscan::snapshot(&self.opts.proc_root);
        if let Some(e) = &snapshot.error {
            // Stay degraded: a partial table must not clear the flag.
            warn!("resync failed, tracking stays degraded: {e}");
            return;
        }
        self.tracker.resync(&snapshot.procs);
        self.resyncs += 1;
        info!(
            processes = snapshot.procs.len(),
            resyncs = self.resyncs,
            "process table resynced from /proc"
        );
    }

    /// Collects exited entries and checks exits the source does not report.
    pub fn gc(&mut self) {
        let root = self.opts.proc_root.clone();
        self.tracker.gc(|key| procscan::is_alive(&root, key));
    }

    /// Runs until `shutdown` resolves or the source stops.
    pub async fn run_until(&mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut gc = tokio::time::interval(self.opts.gc_interval);
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                more = self.step() => if !more {
                    warn!("event source stopped");
                    break;
                },
                _ = gc.tick() => self.gc(),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// `mcp-reaper run`: start, run until SIGINT or SIGTERM, shut down cleanly.
pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let mut agent = Agent::start(opts)?;
    info!(source = %agent.active_source(), reason = agent.source_reason(), "ready");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!("cannot listen for SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
            _ = term.recv() => info!("SIGTERM: shutting down"),
        }
    };
    agent.run_until(shutdown).await;
    let status = agent.status();
    drop(agent); // detaches the kernel programs
    info!(
        exec = status.events.exec,
        fork = status.events.fork,
        exit = status.events.exit,
        lost = status.events.lost,
        resyncs = status.resyncs,
        "stopped; kernel programs detached"
    );
    Ok(())
}
