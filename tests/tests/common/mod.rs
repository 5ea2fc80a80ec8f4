//! The in-process daemon the scenario tests drive: an `Agent` on its own
//! thread, its published state readable from the test thread.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mcp_reaper::{
    config::Config,
    daemon::{Agent, AgentOptions, Shared},
    source::{SourceChoice, ebpf::EbpfOptions, poll::PollOptions},
};
use mcp_reaper_tests::wait_until;

/// The agent running on its own thread, as the daemon would.
pub struct Daemon {
    _serial: std::sync::MutexGuard<'static, ()>,
    shared: Arc<Mutex<Shared>>,
    /// The daemon's metrics, when started with them.
    registry: Option<mcp_reaper::metrics::Registry>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One daemon at a time: two would see (and act on) each other's trees.
static ONE_DAEMON: Mutex<()> = Mutex::new(());

impl Daemon {
    pub fn start(source: SourceChoice, config: Config) -> Self {
        Self::start_with(source, config, EbpfOptions::default())
    }

    /// As `start`, with these eBPF options (say, without the close tier).
    pub fn start_with(source: SourceChoice, config: Config, ebpf: EbpfOptions) -> Self {
        Self::start_inner(source, config, ebpf, false, Duration::ZERO)
    }

    /// As `start_with`, with the daemon's metrics (`metrics_text`).
    pub fn start_with_metrics(source: SourceChoice, config: Config, ebpf: EbpfOptions) -> Self {
        Self::start_inner(source, config, ebpf, true, Duration::ZERO)
    }

    /// As `start`, with every exec classified only `delay` after it came
    /// (fault injection: a daemon starved of CPU).
    pub fn start_slow_to_classify(source: SourceChoice, config: Config, delay: Duration) -> Self {
        Self::start_inner(source, config, EbpfOptions::default(), false, delay)
    }

    fn start_inner(
        source: SourceChoice,
        config: Config,
        ebpf: EbpfOptions,
        metrics: bool,
        classify_delay: Duration,
    ) -> Self {
        let registry = metrics.then(mcp_reaper::metrics::Registry::new);
        let mut reporter = mcp_reaper::report::Reporter::default();
        if let Some(r) = &registry {
            reporter.metrics = Some(Arc::new(
                mcp_reaper::metrics::Metrics::new(r, "test").expect("metrics register"),
            ));
        }
        let serial = ONE_DAEMON
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut agent = Agent::start(AgentOptions {
                    source,
                    poll: PollOptions {
                        interval: Duration::from_millis(100),
                        ..PollOptions::default()
                    },
                    config: Arc::new(config),
                    ebpf,
                    reporter,
                    classify_delay,
                    ..AgentOptions::default()
                })
                .expect("agent starts");
                ready_tx.send(agent.shared()).unwrap();
                agent
                    .run_until(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let shared = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("agent ready");
        Self {
            _serial: serial,
            shared,
            registry,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The daemon's /metrics text (empty when started without metrics).
    pub fn metrics_text(&self) -> String {
        self.registry
            .as_ref()
            .map(mcp_reaper::metrics::encode)
            .unwrap_or_default()
    }

    /// The value of one series in `metrics_text`, by its exact text
    /// (`name{labels}` as exported).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }

    pub fn read<T>(&self, f: impl FnOnce(&Shared) -> T) -> T {
        f(&self.shared.lock().unwrap())
    }

    /// Waits until the daemon knows the tree rooted at `pid` and has found
    /// its owner (state live).
    pub fn wait_tracked_live(&self, pid: u32) {
        let ok = wait_until(Duration::from_secs(15), || {
            self.read(|s| {
                s.trees
                    .iter()
                    .any(|t| t.root.tgid == pid && t.state == mcp_reaper::trees::TreeState::Live)
            })
        });
        assert!(
            ok,
            "tree {pid} never tracked live: {:?}",
            self.read(|s| s
                .trees
                .iter()
                .map(|t| (t.root, t.state, t.reason.clone()))
                .collect::<Vec<_>>())
        );
    }

    pub fn release_session(&self, session: &str) {
        let mut g = self.shared.lock().unwrap();
        let released = mcp_reaper::release::match_trees(
            g.trees.iter(),
            &mcp_reaper::release::ReleaseQuery::Session(session.to_string()),
        );
        g.pending_release.extend(released);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Daemon {
    /// The daemon's record of the tree rooted at `root`.
    pub fn tree(&self, root: u32) -> Option<mcp_reaper::supervisor::TreeRecord> {
        self.read(|s| s.trees.iter().find(|t| t.root.tgid == root).cloned())
    }

    /// The reaps so far, once there are at least `n` (or after 5 s): a
    /// reap's members are gone a moment before the reaper files its record.
    /// More than `n` are returned as they are, for the caller to reject.
    pub fn wait_reaps(&self, n: usize) -> Vec<mcp_reaper::daemon::ReapSummary> {
        let _ = wait_until(Duration::from_secs(5), || self.read(|s| s.reaps.len()) >= n);
        self.read(|s| s.reaps.clone())
    }

    /// Every process any reap so far included.
    pub fn reaped_pids(&self) -> Vec<u32> {
        self.read(|s| {
            s.reaps
                .iter()
                .flat_map(|r| r.members.iter().map(|m| m.tgid))
                .collect()
        })
    }
}
