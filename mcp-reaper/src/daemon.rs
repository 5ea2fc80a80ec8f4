//! The agent behind `mcp-reaper run`.
//!
//! Owns: starting the chosen event source, seeding the tracker from /proc,
//! feeding it events, resyncing after any loss or gap in lineage (a watch
//! not written, a kernel event skipped), periodic garbage collection (the
//! tracker's and the supervisor's, giving what it frees back to the
//! kernel), and a clean shutdown (dropping the eBPF source detaches every
//! program). `Agent` is also the library entry point the integration
//! tests drive.
//! Must never: let anything act on the process table while it is degraded
//! (lost events or lineage gaps not yet reconciled with /proc).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{
    config::Config,
    event::{GapCause, SourceMsg},
    policy::Decision,
    procscan,
    reaper::{self, ReapPlan, ReapReport},
    report::Reporter,
    source::{
        ActiveSource, CHANNEL_CAPACITY, CounterSnapshot, SourceChoice, SourceCounters,
        ebpf::{CloseTier, EbpfOptions, EbpfSource},
        poll::{self, PollOptions},
    },
    supervisor::{Action, Supervisor},
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
    /// Host rules, server shapes, protect rules and policy.
    pub config: Arc<Config>,
    /// How often pending execs are classified and due checks run.
    pub supervise_interval: Duration,
    /// Audit log and metrics (both optional).
    pub reporter: Reporter,
    /// Where reaps record what they stopped (`stopped`), so a restart after
    /// a death mid-reap continues them first; `None`: not recorded.
    pub state_dir: Option<PathBuf>,
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
        }
    }
}

/// What the agent publishes after every supervision tick, for the control
/// socket, metrics and tests: readers never touch the live tables.
#[derive(Debug, Default)]
pub struct Shared {
    pub trees: Vec<crate::supervisor::TreeRecord>,
    pub reaps: Vec<ReapSummary>,
    pub reported: Vec<ReportedSummary>,
    pub status: Option<AgentStatus>,
    /// Trees declared over by `release`, picked up at the next tick, each
    /// with the processes the release covers.
    pub pending_release: Vec<crate::release::Released>,
}

/// A finished reap, as published.
#[derive(Clone, Debug, Serialize)]
pub struct ReapSummary {
    pub root: crate::identity::ProcKey,
    pub reason: Option<String>,
    pub outcome: String,
    pub members: Vec<crate::identity::ProcKey>,
}

/// A decision that was only reported, as published.
#[derive(Clone, Debug, Serialize)]
pub struct ReportedSummary {
    pub root: crate::identity::ProcKey,
    pub reason: Option<String>,
    pub decision: Decision,
    pub members: Vec<crate::identity::ProcKey>,
}

/// A finished reap, sent back from its blocking task.
#[derive(Debug)]
pub struct ReapDone {
    pub root: crate::identity::ProcKey,
    pub reason: Option<String>,
    pub report: ReapReport,
    pub record: crate::supervisor::TreeRecord,
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
    /// Validated configurations to put in force (SIGHUP).
    reload_rx: Option<mpsc::Receiver<Arc<Config>>>,
    /// The tree table last written, and when it was last considered.
    trees_saved: Option<crate::persist::SavedTable>,
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
    stdin_watch: Option<crate::stdin_watch::StdinWatch>,
    wake_rx: Option<mpsc::UnboundedReceiver<crate::stdin_watch::Wake>>,
    shared: Arc<std::sync::Mutex<Shared>>,
    /// Members' memory figures for /metrics, read at most every
    /// `MEMORY_MAX_AGE`.
    memory: crate::trees::MemoryCache,
    opts: AgentOptions,
}

/// Raises the soft limit on open descriptors to the hard one. The stdin
/// watches hold a pidfd and a duplicate per tree (more behind relay
/// chains), so a thousand trees pass the usual soft limit of 1,024, and
/// running out would fail /proc reads too.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        match setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        ) {
            Ok(()) => debug!(limit = ?lim.maximum, "raised the open-descriptor limit"),
            Err(e) => warn!(
                soft = ?lim.current,
                "cannot raise the open-descriptor limit ({e}); many trees may exhaust it"
            ),
        }
    }
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
    /// Starts the source and seeds the tracker. Must run inside a tokio
    /// runtime. With `auto`, an eBPF failure is logged with its cause and the
    /// poll source runs instead.
    pub fn start(mut opts: AgentOptions) -> anyhow::Result<Self> {
        raise_fd_limit();
        // Before anything else: a previous run that died mid-reap may have
        // left members stopped. Continue exactly those.
        if let Some(dir) = &opts.state_dir {
            for (key, what) in crate::stopped::recover(dir, &opts.proc_root) {
                match what {
                    crate::stopped::Recovered::Continued => {
                        warn!(%key, "continued a process a previous run stopped mid-reap");
                    }
                    crate::stopped::Recovered::Failed => {
                        warn!(%key, "could not continue a process a previous run stopped");
                    }
                    crate::stopped::Recovered::Running | crate::stopped::Recovered::Gone => {}
                }
            }
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(SourceCounters::default());
        // Whether the per-tree stdin watches can run here; it decides the
        // close tier's `auto`: the watches see the same releases as fast
        // and cost other processes nothing, while the close tier puts a
        // tracepoint on every process's syscalls.
        let stdin_probe = match opts.source {
            SourceChoice::Poll => Err("not used by the poll tier".to_owned()),
            _ => crate::stdin_watch::probe(),
        };
        if opts.ebpf.close_tier == CloseTier::Auto {
            opts.ebpf.close_tier = match &stdin_probe {
                Ok(()) => CloseTier::Off,
                Err(_) => CloseTier::On,
            };
        }
        let (ebpf, active, why) = match opts.source {
            SourceChoice::Poll => (None, ActiveSource::Poll, "chosen with --source poll".into()),
            SourceChoice::Pidfd => {
                stdin_probe
                    .clone()
                    .map_err(|e| anyhow::anyhow!(e))
                    .context("pidfd event source")?;
                (
                    None,
                    ActiveSource::Pidfd,
                    "chosen with --source pidfd".into(),
                )
            }
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
                    "kernel event programs loaded".into(),
                ),
                Err(e) => match &stdin_probe {
                    Ok(()) => {
                        let why = format!(
                            "eBPF unavailable ({e:#}); polling /proc with pidfd and stdin wakes"
                        );
                        warn!("{why}");
                        (None, ActiveSource::Pidfd, why)
                    }
                    Err(p) => {
                        let why = format!(
                            "eBPF unavailable ({e:#}) and pidfd_getfd unusable ({p}); \
                             polling /proc instead"
                        );
                        warn!("{why}");
                        (None, ActiveSource::Poll, why)
                    }
                },
            },
        };
        let reporting = match active {
            ActiveSource::Ebpf => ExitReporting::WatchedOnly,
            ActiveSource::Pidfd | ActiveSource::Poll => ExitReporting::All,
        };
        // The pidfd tier runs the stdin watches; so does the eBPF tier
        // without its close tier (left out by `auto` or the option, or
        // refused by the kernel), which otherwise sees hosts' closes in the
        // kernel.
        let watch_stdin = match active {
            ActiveSource::Pidfd => true,
            ActiveSource::Ebpf => {
                !ebpf.as_ref().is_some_and(EbpfSource::close_tier)
                    && match &stdin_probe {
                        Ok(()) => {
                            info!(
                                "eBPF tier: releases seen through tree roots' stdin (pidfd_getfd \
                                 + epoll), not the close tier; --close-tier on attaches it"
                            );
                            true
                        }
                        Err(e) => {
                            warn!(
                                "eBPF close tier off and pidfd_getfd unusable ({e}): \
                                 releases are seen by the reconcile"
                            );
                            false
                        }
                    }
            }
            ActiveSource::Poll => false,
        };
        let (stdin_watch, wake_rx) = if watch_stdin {
            let (w, rx) = crate::stdin_watch::StdinWatch::new();
            // The eBPF tier reports exits itself, ordered after the forks
            // that came before them.
            let w = match active {
                ActiveSource::Ebpf => w.without_root_exit_wakes(),
                _ => w,
            };
            (Some(w), Some(rx))
        } else {
            (None, None)
        };
        let mut tracker = Tracker::new(opts.max_processes).with_exit_reporting(reporting);
        // Attach first, snapshot second: a process born in between is in
        // both, which the tracker treats as a duplicate, never a gap.
        let snapshot = procscan::snapshot(&opts.proc_root);
        if let Some(e) = &snapshot.error {
            anyhow::bail!("cannot read the process table: {e}");
        }
        tracker.seed(&snapshot.procs);
        let mut supervisor = Supervisor::new(opts.config.clone(), opts.proc_root.clone());
        if ebpf.as_ref().is_some_and(EbpfSource::close_tier) {
            // Closes and exits drive the checks; the reconcile is a backstop.
            supervisor.reconcile_interval = Duration::from_secs(5);
        }
        let mut ebpf = ebpf;
        supervisor.seed(&snapshot.procs, &tracker, ebpf.as_mut());
        // Lineage a killed predecessor kept in its kernel maps is gone; its
        // tree table says who belonged where (checked against /proc).
        if let Some(dir) = &opts.state_dir
            && let Some(table) = crate::persist::load(dir)
        {
            let saved = crate::persist::verify_in_proc(table, &opts.proc_root);
            supervisor.restore(saved, &mut tracker, ebpf.as_mut());
        }
        let (reap_tx, reap_rx) = mpsc::unbounded_channel();
        let (ebpf, reader) = match ebpf {
            Some(mut src) => {
                let reader = src.spawn_reader(tx, counters.clone())?;
                supervisor.wait_for_drain_marks();
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
            fault_source_stop: None,
            reload_rx: None,
            trees_saved: None,
            trees_saved_at: None,
            counters,
            resyncs: 0,
            gap_resync_at: None,
            last_gap_resync: None,
            supervisor,
            reap_tx,
            reap_rx,
            stdin_watch,
            wake_rx,
            shared: Arc::new(std::sync::Mutex::new(Shared::default())),
            memory: crate::trees::MemoryCache::new(MEMORY_MAX_AGE),
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
            SourceMsg::Event(ev) => {
                self.tracker.apply(&ev);
                self.supervisor.observe(&ev, &self.tracker);
                // A host's close or a member's exit is checked now, not at
                // the next tick: this is the detection latency.
                if matches!(
                    ev,
                    crate::event::ProcessEvent::Close { .. }
                        | crate::event::ProcessEvent::Exit { .. }
                ) && self.supervisor.has_due_checks()
                {
                    self.supervise_now();
                }
            }
            SourceMsg::Lost(n) => {
                warn!(lost = n, "kernel dropped events; resyncing from /proc");
                self.tracker.mark_lost(n);
                self.resync();
            }
            SourceMsg::Gap(cause, n) => self.lineage_gap(cause, n, true),
            SourceMsg::Drained(ns) => self.supervisor.drained_to(ns),
        }
    }

    /// Lineage may be incomplete (`n` times `cause`): nothing is reaped
    /// until a resync proves the table again. `resync_later`: schedule
    /// that resync (a gap found by a resync itself is retried after
    /// `GAP_RESYNC_INTERVAL`, not at once, so a watch map that stays full
    /// keeps the daemon degraded without rescanning /proc in a loop).
    fn lineage_gap(&mut self, cause: GapCause, n: u64, resync_later: bool) {
        warn!(
            cause = cause.as_str(),
            n, "lineage may be incomplete; degraded until a resync"
        );
        self.tracker.mark_gap(n);
        if let Some(m) = &self.opts.reporter.metrics {
            m.lineage_gap(cause, n);
        }
        if resync_later && self.gap_resync_at.is_none() {
            let earliest = self
                .last_gap_resync
                .map_or_else(std::time::Instant::now, |t| t + GAP_RESYNC_INTERVAL);
            self.gap_resync_at = Some(earliest.max(std::time::Instant::now()));
        }
    }

    /// Gaps the supervisor found writing watches (they degrade the table).
    fn take_watch_gaps(&mut self, resync_later: bool) {
        for cause in self.supervisor.take_gaps() {
            self.lineage_gap(cause, 1, resync_later);
        }
    }

    /// Makes the table agree with /proc again, writes every missing watch
    /// of the trees' live members and the hosts, and clears the degraded
    /// flag unless a watch could not be written (then another resync
    /// follows after `GAP_RESYNC_INTERVAL`).
    pub fn resync(&mut self) {
        // Messages queued before the resync describe the past: apply them
        // first so the snapshot, which is newer, has the last word. Losses
        // and gaps among them are counted; this resync covers them.
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                SourceMsg::Event(ev) => {
                    self.tracker.apply(&ev);
                    self.supervisor.observe(&ev, &self.tracker);
                }
                SourceMsg::Lost(n) => self.tracker.mark_lost(n),
                SourceMsg::Gap(cause, n) => self.lineage_gap(cause, n, false),
                SourceMsg::Drained(ns) => self.supervisor.drained_to(ns),
            }
        }
        self.gap_resync_at = None;
        self.last_gap_resync = Some(std::time::Instant::now());
        let snapshot = procscan::snapshot(&self.opts.proc_root);
        if let Some(e) = &snapshot.error {
            // Stay degraded: a partial table must not clear the flag.
            warn!("resync failed, tracking stays degraded: {e}");
            return;
        }
        self.tracker.resync(&snapshot.procs);
        self.supervisor
            .seed(&snapshot.procs, &self.tracker, self.ebpf.as_mut());
        if let Some(src) = self.ebpf.as_mut() {
            self.supervisor.rewatch(&self.tracker, src);
        }
        self.take_watch_gaps(true);
        self.resyncs += 1;
        if let Some(m) = &self.opts.reporter.metrics {
            m.resync();
        }
        info!(
            processes = snapshot.procs.len(),
            resyncs = self.resyncs,
            "process table resynced from /proc"
        );
    }

    /// Collects exited entries and checks exits the source does not report,
    /// in the tracker and in the supervisor's own tables.
    /// What a burst freed goes back to the kernel.
    pub fn gc(&mut self) {
        let root = self.opts.proc_root.clone();
        let removed = self.tracker.gc(|key| procscan::is_alive(&root, key));
        self.supervisor.gc(|key| procscan::is_alive(&root, key));
        if removed > 0 {
            crate::heap::release_freed();
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
        query: &crate::release::ReleaseQuery,
    ) -> Vec<crate::identity::ProcKey> {
        let released = crate::release::match_trees(self.supervisor.trees(), query);
        self.supervisor.release(&released);
        released.iter().map(|r| r.root).collect()
    }

    /// The timer's supervision: a reconcile batch, then [`Self::supervise_now`].
    /// It also hands the kernel the trees' stdio inodes, whose closes are
    /// worth an immediate wake-up.
    pub fn supervise(&mut self) {
        if self
            .gap_resync_at
            .is_some_and(|at| at <= std::time::Instant::now())
        {
            self.resync();
        }
        self.supervisor.reconcile_step();
        self.supervise_now();
        self.save_trees();
        if let Some(src) = self.ebpf.as_mut()
            && src.close_tier()
        {
            src.sync_stdio_inodes(&self.supervisor.stdio_inodes());
        }
    }

    /// Classifies new processes, runs due ownership checks, and acts on
    /// the decisions: reaps go to blocking tasks, the rest are reported.
    /// Event paths call this directly: only the checks the event asked for
    /// stand between a close and its verdict.
    pub fn supervise_now(&mut self) {
        let mut released = Vec::new();
        self.with_shared(|s| released = std::mem::take(&mut s.pending_release));
        if !released.is_empty() {
            self.supervisor.release(&released);
        }
        self.supervisor
            .classify_pending(&self.tracker, self.ebpf.as_mut());
        self.take_watch_gaps(true);
        let degraded = self.tracker.degraded();
        let actions = self.supervisor.tick(&self.tracker, degraded);
        for (record, members) in self.supervisor.take_detected() {
            self.opts.reporter.orphan_detected(&record, &members, None);
        }
        // Owners of trees are watched as hosts (unless the kernel already
        // tracks them), so their closes reach the close tier at once.
        for owner in self.supervisor.take_owner_hosts() {
            if let Some(src) = self.ebpf.as_mut()
                && src.watched(owner.tgid).is_none()
                && procscan::is_alive(&self.opts.proc_root, owner)
                && let Err(e) = src.watch_host(owner)
            {
                warn!("cannot watch owner {owner}: {e:#}");
                self.lineage_gap(e.cause(), 1, true);
            }
        }
        // Watches of forgotten trees: every member is gone; an entry that
        // still names one of them goes too.
        for key in self.supervisor.take_unwatch() {
            if let Some(src) = self.ebpf.as_mut()
                && !procscan::is_alive(std::path::Path::new("/proc"), key)
            {
                src.unwatch(key);
            }
        }
        if let Some(m) = &self.opts.reporter.metrics {
            for (host, server) in self.supervisor.take_respawns() {
                m.respawn(&host, &server);
            }
        }
        for action in actions {
            match action.decision {
                Decision::Enforce => self.start_reap(action),
                Decision::None | Decision::Wait => {}
                Decision::Observe | Decision::DryRun | Decision::Hold => {
                    self.opts
                        .reporter
                        .decision(&action.record, &action.members, action.decision);
                    let summary = ReportedSummary {
                        root: action.root,
                        reason: action.record.reason.clone(),
                        decision: action.decision,
                        members: action.members.clone(),
                    };
                    self.with_shared(|s| {
                        s.reported.push(summary);
                        if s.reported.len() > 1024 {
                            s.reported.remove(0);
                        }
                    });
                }
            }
        }
        if let Some(w) = &mut self.stdin_watch {
            // New trees get watches; forgotten ones lose theirs (and their
            // stdin duplicates) now.
            w.sync_links(self.supervisor.watch_links(), &self.opts.proc_root);
        }
        let trees: Vec<_> = self.supervisor.trees().cloned().collect();
        let status = self.status();
        self.with_shared(|s| {
            s.trees = trees;
            s.status = Some(status);
        });
    }

    fn start_reap(&mut self, action: Action) {
        let plan = ReapPlan {
            never: self.supervisor.never_touch(),
            grace_term: self.opts.config.policy.kill_after,
            stop_log: self.opts.state_dir.clone(),
            fault_die_after_stop: std::env::var_os("MCP_REAPER_FAULT_DIE_AFTER_STOP")
                .is_some_and(|v| v == "1"),
            proc_root: self.opts.proc_root.clone(),
            ..ReapPlan::new(action.root, action.members.clone())
        };
        let proc_root = self.opts.proc_root.clone();
        // In the eBPF tier the reap also asks the kernel's lineage, which
        // names members that double forked while the tree ran.
        let lineage = self.ebpf.as_ref().and_then(|e| match e.lineage_reader() {
            Ok(r) => Some(r),
            Err(err) => {
                warn!("reap without the kernel's lineage: {err:#}");
                None
            }
        });
        // Without the kernel's lineage, escapees are found by the stdio
        // they inherited from the root.
        let heirs = lineage.is_none().then(|| crate::lineage::StdioHeirs {
            proc_root: proc_root.clone(),
            root: action.root,
            inodes: action.record.stdio_inodes.clone(),
        });
        let config = self.opts.config.clone();
        let tx = self.reap_tx.clone();
        let reason = action.record.reason.clone();
        let record = action.record.clone();
        let reclaimed_bytes: u64 = action
            .members
            .iter()
            .filter_map(|k| {
                procscan::read_process(&proc_root, k.tgid)
                    .ok()
                    .filter(|p| p.key == *k)
            })
            .map(|p| p.rss_bytes)
            .sum();
        info!(
            root = %action.root,
            server = %action.record.server,
            reason = reason.as_deref().unwrap_or("-"),
            members = action.members.len(),
            "reaping tree"
        );
        tokio::task::spawn_blocking(move || {
            let procs = reaper::ProcDescendants::new(proc_root.clone(), plan.root, &plan.members);
            let root = plan.root;
            let kernel =
                lineage.map(|r| Box::new(move || r.members(root)) as crate::lineage::KernelMembers);
            let mut source = crate::lineage::Lineage::new(procs, kernel, heirs);
            // Fails closed: a live member whose identity or cgroup cannot be
            // read is not signalled.
            let protect = |key: crate::identity::ProcKey| {
                crate::protect::check(&config, &proc_root, key).refusal()
            };
            let report = reaper::reap(&plan, &mut source, &protect);
            let _ = tx.send(ReapDone {
                root: plan.root,
                reason,
                report,
                record,
                reclaimed_bytes,
            });
        });
    }

    fn finish_reap(&mut self, done: ReapDone) {
        self.opts.reporter.reaped(
            &done.record,
            done.reason.as_deref(),
            &done.report,
            done.reclaimed_bytes,
        );
        self.supervisor.reaped(done.root, &self.tracker);
        let summary = ReapSummary {
            root: done.root,
            reason: done.reason.clone(),
            outcome: format!("{:?}", done.report.outcome),
            members: done.report.members.iter().map(|m| m.key).collect(),
        };
        self.with_shared(|s| {
            s.reaps.push(summary);
            if s.reaps.len() > 1024 {
                s.reaps.remove(0);
            }
        });
    }

    /// Writes the tree table for the next start (`persist`), at most once a
    /// second and only when it changed.
    fn save_trees(&mut self) {
        let Some(dir) = &self.opts.state_dir else {
            return;
        };
        let now = std::time::Instant::now();
        if self
            .trees_saved_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.trees_saved_at = Some(now);
        let table = self.supervisor.saved_table(&self.tracker);
        if self.trees_saved.as_ref() == Some(&table) {
            return;
        }
        match crate::persist::save(dir, &table) {
            Ok(()) => self.trees_saved = Some(table),
            Err(e) => warn!("cannot save the tree table in {}: {e}", dir.display()),
        }
    }

    /// A sender for configurations to put in force while `run_until` runs
    /// (each already validated: a loader that fails never sends).
    pub fn reload_sender(&mut self) -> mpsc::Sender<Arc<Config>> {
        let (tx, rx) = mpsc::channel(4);
        self.reload_rx = Some(rx);
        tx
    }

    /// Puts a reloaded configuration in force (`Supervisor::set_config`):
    /// new trees, checks and reaps follow it; nothing is reaped because of
    /// the reload itself.
    pub fn reload_config(&mut self, config: Arc<Config>) {
        self.supervisor.set_config(config.clone());
        self.opts.config = config;
    }

    /// Fault injection (tests, `MCP_REAPER_FAULT_STOP_SOURCE_MS`): the
    /// event source's task is aborted `after` from now, as if it had died.
    pub fn inject_source_stop(&mut self, after: Duration) {
        self.fault_source_stop = Some(std::time::Instant::now() + after);
    }

    /// Runs until `shutdown` resolves or the source stops. A stopped source
    /// ends tracking: the caller must not report that as a clean exit.
    pub async fn run_until(&mut self, shutdown: impl std::future::Future<Output = ()>) -> RunEnd {
        let mut gc = tokio::time::interval(self.opts.gc_interval);
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(Duration::from_secs(2));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut supervise = tokio::time::interval(self.opts.supervise_interval);
        supervise.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let followup = self.supervisor.next_followup();
            tokio::select! {
                () = &mut shutdown => return RunEnd::Shutdown,
                () = sleep_until(followup) => self.supervise_now(),
                () = sleep_until(self.fault_source_stop) => {
                    warn!("fault injection: stopping the event source");
                    self.fault_source_stop = None;
                    self.reader.abort();
                }
                msg = self.rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => {
                        tracing::error!("event source stopped: nothing is tracked any more");
                        return RunEnd::SourceStopped;
                    }
                },
                Some(done) = self.reap_rx.recv() => self.finish_reap(done),
                Some(config) = next_reload(&mut self.reload_rx) => {
                    self.reload_config(config);
                    info!("configuration reloaded; grace periods start again");
                }
                Some(wake) = next_wake(&mut self.wake_rx) => self.wake(wake),
                _ = supervise.tick() => self.supervise(),
                _ = gc.tick() => self.gc(),
                _ = refresh.tick() => self.refresh_metrics(),
            }
        }
    }

    /// A pidfd-tier wake: re-check that tree at this tick, and at once
    /// when it is the only thing to do.
    fn wake(&mut self, wake: crate::stdin_watch::Wake) {
        debug!(?wake, "pidfd tier wake");
        self.supervisor.schedule_check(wake.root());
        while let Some(w) = self.wake_rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
            self.supervisor.schedule_check(w.root());
        }
        self.supervise_now();
    }

    /// Tree gauges with memory, and the source's health, for /metrics.
    pub fn refresh_metrics(&mut self) {
        let Some(m) = self.opts.reporter.metrics.clone() else {
            return;
        };
        m.set_tier(&self.active.to_string());
        m.set_degraded(self.tracker.degraded());
        m.set_tracked(self.tracker.live_count());
        m.observe_source_counters(&self.counters.snapshot());
        let now = std::time::Instant::now();
        let mut seen = std::collections::HashSet::new();
        let trees: Vec<_> = self
            .supervisor
            .trees()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| {
                let members = self.supervisor.members(t.root, &self.tracker);
                let (mut rss, mut pss) = (0u64, 0u64);
                for &k in &members {
                    seen.insert(k);
                    if let Some((r, p)) = self.memory.read(&self.opts.proc_root, k, now) {
                        rss += r;
                        pss += p;
                    }
                }
                // Only orphans that should be reaped age for alerting: an
                // observed or dry-run orphan is a leak report, not a
                // failing reap.
                let mut t = t;
                let enforced = t
                    .reason
                    .as_deref()
                    .and_then(crate::policy::parse_reason)
                    .is_some_and(|r| {
                        t.state == crate::trees::TreeState::Orphaned
                            && !self.opts.config.policy.dry_run
                            && self.opts.config.policy.actions.get(r)
                                == crate::config::Action::Enforce
                    });
                if !enforced {
                    t.orphan_since = None;
                }
                (t, members.len() as u64, rss, pss)
            })
            .collect();
        self.memory.retain(&seen);
        self.opts.reporter.trees(&trees);
    }
}

/// The next pidfd-tier wake; never resolves in the other tiers.
/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn next_reload(rx: &mut Option<mpsc::Receiver<Arc<Config>>>) -> Option<Arc<Config>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_wake(
    rx: &mut Option<mpsc::UnboundedReceiver<crate::stdin_watch::Wake>>,
) -> Option<crate::stdin_watch::Wake> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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

/// The daemon's outward services, each optional.
#[derive(Clone, Default)]
pub struct Services {
    /// `/metrics`, `/healthz` and `/` (read-only).
    pub listen: Option<std::net::SocketAddr>,
    /// The audit log.
    pub audit: Option<crate::audit::AuditTarget>,
    /// The root-only control socket for `release`.
    pub control_socket: Option<PathBuf>,
    /// Loads the configuration again on SIGHUP (the file, with the command
    /// line's overrides); `None`: SIGHUP is acknowledged, nothing reloads.
    pub reload: Option<ConfigLoader>,
}

/// How the daemon reads its configuration again (`Services::reload`).
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Answers a control request from the published state.
fn control_handler(
    shared: Arc<std::sync::Mutex<Shared>>,
    reporter: Reporter,
    proc_root: PathBuf,
) -> crate::control::Handler {
    use crate::control::{MatchedTree, Request, Response};
    Arc::new(move |req: Request| {
        let mut guard = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match req {
            Request::Status => Response::status(
                serde_json::json!({ "agent": &guard.status, "trees": &guard.trees }),
                format!("{} trees tracked", guard.trees.len()),
            ),
            Request::Release { target, dry_run } => {
                // Resolved now, against the live system: a recycled PID or
                // a reused fd number must not name an old record.
                let query = match crate::release::resolve(&target, &proc_root) {
                    Ok(q) => q,
                    Err(why) => {
                        return Response::matched(Vec::new(), format!("{why}: nothing matched"));
                    }
                };
                let what = query.describe();
                let released = crate::release::match_trees(guard.trees.iter(), &query);
                let roots: Vec<_> = released.iter().map(|r| r.root).collect();
                let records: Vec<_> = guard
                    .trees
                    .iter()
                    .filter(|t| roots.contains(&t.root))
                    .cloned()
                    .collect();
                let action = if dry_run {
                    crate::audit::Action::DryRun
                } else {
                    crate::audit::Action::Enforce
                };
                let matched: Vec<MatchedTree> = records
                    .iter()
                    .map(|t| MatchedTree {
                        root: t.root.into(),
                        server: t.server.clone(),
                        state: t.state.as_str().to_owned(),
                        action,
                    })
                    .collect();
                if !dry_run {
                    guard.pending_release.extend(released);
                    reporter.release_request(&format!("release {what}"), &records);
                }
                let verb = if dry_run {
                    "would reap"
                } else {
                    "reaping after grace"
                };
                Response::matched(matched, format!("{what}: {} trees, {verb}", records.len()))
            }
        }
    })
}

/// SIGHUP: load the configuration again, validate it, and hand it to the
/// agent. A configuration that fails is logged and counted
/// (`mcp_reaper_config_reload_failures_total`), and the one in force stays.
/// Without a loader (no `--config`), SIGHUP is acknowledged and ignored:
/// it never ends the daemon.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    loader: Option<ConfigLoader>,
    tx: mpsc::Sender<Arc<Config>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let Some(load) = loader.clone() else {
            info!("SIGHUP: no configuration file to reload (started without --config)");
            continue;
        };
        match tokio::task::spawn_blocking(move || load()).await {
            Ok(Ok(config)) => {
                info!("SIGHUP: configuration valid, putting it in force");
                if tx.send(Arc::new(config)).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "SIGHUP: configuration rejected, the previous one stays in force:\n{e}"
                );
                if let Some(m) = &metrics {
                    m.config_reload_failed();
                }
            }
            Err(e) => warn!("SIGHUP: the reload task failed: {e}"),
        }
    }
}

/// `mcp-reaper run`: start, run until SIGINT or SIGTERM, shut down cleanly.
/// A service that cannot start (port taken, another daemon on the control
/// socket, audit log not writable) is an error before anything is tracked.
pub async fn run(mut opts: AgentOptions, services: Services) -> anyhow::Result<()> {
    let registry = crate::metrics::Registry::new();
    let metrics = Arc::new(crate::metrics::Metrics::new(
        &registry,
        env!("CARGO_PKG_VERSION"),
    )?);
    opts.reporter.metrics = Some(metrics.clone());
    if let Some(target) = services.audit.clone() {
        let log = crate::audit::AuditLog::open(target).context("opening the audit log")?;
        let sink = crate::audit::AuditSink::spawn(log, crate::audit::DEFAULT_SINK_CAPACITY)
            .context("starting the audit writer")?;
        opts.reporter.audit = Some(Arc::new(sink));
    }
    let reporter = opts.reporter.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let proc_root = opts.proc_root.clone();
    let mut agent = Agent::start(opts)?;
    let shared = agent.shared();
    let mut tasks = Vec::new();
    if let Some(addr) = services.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint {addr}"))?;
        let health_shared = shared.clone();
        let health: crate::http::HealthFn = Arc::new(move || {
            let g = health_shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::http::Health {
                source_attached: g.status.is_some(),
                degraded: g.status.as_ref().is_some_and(|s| s.degraded),
                detail: None,
            }
        });
        tasks.push(tokio::spawn(crate::http::serve_on(
            listener,
            registry.clone(),
            health,
            stopped(stop_rx.clone()),
        )));
        info!(%addr, "metrics endpoint listening");
    }
    if let Some(path) = services.control_socket.clone() {
        let handler = control_handler(shared.clone(), reporter.clone(), proc_root.clone());
        let stop = stopped(stop_rx.clone());
        // Bind now, so "another mcp-reaper is running" stops this one.
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        tasks.push(tokio::spawn(async move {
            let res = crate::control::serve(&path, handler, stop).await;
            if let Err(e) = res {
                let _ = bound_tx.send(Err(e));
            }
        }));
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(300), bound_rx).await {
            anyhow::bail!("control socket: {e}");
        }
    }
    // SIGHUP is handled from before `ready`: its default action would end
    // the daemon.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            let reload_tx = agent.reload_sender();
            tasks.push(tokio::spawn(reload_on_sighup(
                hup,
                services.reload.clone(),
                reload_tx,
                reporter.metrics.clone(),
                stopped(stop_rx.clone()),
            )));
        }
        Err(e) => warn!("cannot listen for SIGHUP, reload is off: {e}"),
    }
    // SIGTERM is handled from before `ready` too: a stop request that
    // arrives before the loop first runs still shuts down cleanly.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    reporter.lifecycle(crate::audit::AuditEvent::Startup, agent.source_reason());
    info!(source = %agent.active_source(), reason = agent.source_reason(), "ready");
    let shutdown = async {
        let mut term = match term {
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
    if let Some(ms) = std::env::var("MCP_REAPER_FAULT_STOP_SOURCE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        agent.inject_source_stop(Duration::from_millis(ms));
    }
    let end = agent.run_until(shutdown).await;
    let _ = stop_tx.send(true);
    let status = agent.status();
    drop(agent); // detaches the kernel programs
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let why = match end {
        RunEnd::Shutdown => "signal",
        RunEnd::SourceStopped => "event source stopped",
    };
    reporter.lifecycle(crate::audit::AuditEvent::Shutdown, why);
    if let Some(a) = reporter.audit.clone() {
        let _ = tokio::task::spawn_blocking(move || a.shutdown()).await;
    }
    info!(
        exec = status.events.exec,
        fork = status.events.fork,
        exit = status.events.exit,
        lost = status.events.lost,
        resyncs = status.resyncs,
        "stopped; kernel programs detached"
    );
    match end {
        RunEnd::Shutdown => Ok(()),
        // Exit non-zero: a service manager restarts a daemon whose source
        // died (`Restart=on-failure`), instead of it idling unnoticed.
        RunEnd::SourceStopped => {
            anyhow::bail!("the event source stopped; exiting so the daemon is restarted")
        }
    }
}
