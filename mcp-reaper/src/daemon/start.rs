//! Starting the agent, in named steps: continue what a previous run left
//! stopped, choose the event source (and the close tier's `auto`), decide
//! on the stdin watches, seed the tracker and supervisor from /proc and the
//! saved tree table, and start the source's reader.
//!
//! Owns: the order of those steps (attach first, snapshot second).
//! Must never: start tracking from a /proc walk with errors, or let a
//! failure of an explicitly chosen source fall back silently.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Agent, AgentOptions, MEMORY_MAX_AGE, Shared};
use crate::{
    judge::supervisor::Supervisor,
    procs::procscan,
    procs::tracker::{ExitReporting, Tracker},
    source::{
        ActiveSource, CHANNEL_CAPACITY, SourceChoice, SourceCounters,
        ebpf::{CloseTier, EbpfSource},
        poll::{self},
    },
};

/// The event source chosen at start: the eBPF source when it loaded, the
/// tier that runs, and why.
struct Chosen {
    ebpf: Option<EbpfSource>,
    active: ActiveSource,
    why: String,
}

impl Agent {
    /// Starts the source and seeds the tracker. Must run inside a tokio
    /// runtime. With `auto`, an eBPF failure is logged with its cause and the
    /// poll source runs instead.
    pub fn start(mut opts: AgentOptions) -> anyhow::Result<Self> {
        raise_fd_limit();
        // Before anything else: a previous run that died mid-reap may have
        // left members stopped. Continue exactly those.
        continue_stopped(&opts);
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let counters = Arc::new(SourceCounters::default());
        // Whether the per-tree stdin watches can run here; it decides the
        // close tier's `auto`: the watches see the same releases as fast
        // and cost other processes nothing, while the close tier puts a
        // tracepoint on every process's syscalls.
        let stdin_probe = match opts.source {
            SourceChoice::Poll => Err("not used by the poll tier".to_owned()),
            _ => crate::ownership::stdin_watch::probe(),
        };
        if opts.ebpf.close_tier == CloseTier::Auto {
            opts.ebpf.close_tier = match &stdin_probe {
                Ok(()) => CloseTier::Off,
                Err(_) => CloseTier::On,
            };
        }
        let Chosen {
            mut ebpf,
            active,
            why,
        } = choose_source(&opts, &stdin_probe)?;
        let (stdin_watch, wake_rx) = stdin_watches(active, ebpf.as_ref(), &stdin_probe);
        let reporting = match active {
            ActiveSource::Ebpf => ExitReporting::WatchedOnly,
            ActiveSource::Pidfd | ActiveSource::Poll => ExitReporting::All,
        };
        let mut tracker = Tracker::new(opts.max_processes).with_exit_reporting(reporting);
        // Attach first, snapshot second: a process born in between is in
        // both, which the tracker treats as a duplicate, never a gap.
        let snapshot = procscan::snapshot(&opts.proc_root);
        if let Some(e) = &snapshot.error {
            anyhow::bail!("cannot read the process table: {e}");
        }
        tracker.seed(&snapshot.procs);
        let mut supervisor = seed_supervisor(&opts, &snapshot.procs, &mut tracker, ebpf.as_mut());
        let reader = match ebpf.as_mut() {
            Some(src) => {
                let reader = src.spawn_reader(tx, counters.clone())?;
                supervisor.wait_for_drain_marks();
                reader
            }
            None => poll::spawn(opts.poll.clone(), &snapshot.procs, tx, counters.clone()),
        };
        info!(
            source = %active,
            processes = snapshot.procs.len(),
            skipped = snapshot.skipped,
            "event source ready"
        );
        let (reap_tx, reap_rx) = mpsc::unbounded_channel();
        Ok(Self {
            tracker,
            ebpf,
            active,
            why,
            rx,
            reader,
            fault_source_stop: None,
            fault_loop_hang: None,
            reload_rx: None,
            scan_rx: None,
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
            memory: crate::judge::trees::MemoryCache::new(MEMORY_MAX_AGE),
            heartbeat: super::notify::Heartbeat::default(),
            opts,
        })
    }
}

/// Continues the processes a previous run stopped and never continued
/// (it died between SIGSTOP and SIGCONT), as its stop log names them.
fn continue_stopped(opts: &AgentOptions) {
    let Some(dir) = &opts.state_dir else {
        return;
    };
    for (key, what) in crate::reap::stopped::recover(dir, &opts.proc_root) {
        match what {
            crate::reap::stopped::Recovered::Continued => {
                warn!(%key, "continued a process a previous run stopped mid-reap");
            }
            crate::reap::stopped::Recovered::Failed => {
                warn!(%key, "could not continue a process a previous run stopped");
            }
            crate::reap::stopped::Recovered::Running | crate::reap::stopped::Recovered::Gone => {}
        }
    }
}

/// The event source: the one asked for (an error when it cannot run), or
/// with `auto` the best that runs here, with the reason logged.
fn choose_source(opts: &AgentOptions, stdin_probe: &Result<(), String>) -> anyhow::Result<Chosen> {
    let chosen = |ebpf, active, why: &str| Chosen {
        ebpf,
        active,
        why: why.to_owned(),
    };
    Ok(match opts.source {
        SourceChoice::Poll => chosen(None, ActiveSource::Poll, "chosen with --source poll"),
        SourceChoice::Pidfd => {
            stdin_probe
                .clone()
                .map_err(|e| anyhow::anyhow!(e))
                .context("pidfd event source")?;
            chosen(None, ActiveSource::Pidfd, "chosen with --source pidfd")
        }
        SourceChoice::Ebpf => {
            let src = EbpfSource::load(&opts.ebpf).context("eBPF event source")?;
            chosen(Some(src), ActiveSource::Ebpf, "chosen with --source ebpf")
        }
        SourceChoice::Auto => match EbpfSource::load(&opts.ebpf) {
            Ok(src) => chosen(
                Some(src),
                ActiveSource::Ebpf,
                "kernel event programs loaded",
            ),
            Err(e) => {
                let (active, why) = match stdin_probe {
                    Ok(()) => (
                        ActiveSource::Pidfd,
                        format!(
                            "eBPF unavailable ({e:#}); polling /proc with pidfd and stdin wakes"
                        ),
                    ),
                    Err(p) => (
                        ActiveSource::Poll,
                        format!(
                            "eBPF unavailable ({e:#}) and pidfd_getfd unusable ({p}); \
                             polling /proc instead"
                        ),
                    ),
                };
                warn!("{why}");
                chosen(None, active, &why)
            }
        },
    })
}

/// The per-tree stdin watches: the pidfd tier runs them; so does the eBPF
/// tier without its close tier (left out by `auto` or the option, or
/// refused by the kernel), which otherwise sees hosts' closes in the
/// kernel.
fn stdin_watches(
    active: ActiveSource,
    ebpf: Option<&EbpfSource>,
    stdin_probe: &Result<(), String>,
) -> (
    Option<crate::ownership::stdin_watch::StdinWatch>,
    Option<mpsc::UnboundedReceiver<crate::ownership::stdin_watch::Wake>>,
) {
    let watch_stdin = match active {
        ActiveSource::Pidfd => true,
        ActiveSource::Ebpf => {
            !ebpf.is_some_and(EbpfSource::close_tier)
                && match stdin_probe {
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
    if !watch_stdin {
        return (None, None);
    }
    let (w, rx) = crate::ownership::stdin_watch::StdinWatch::new();
    // The eBPF tier reports exits itself, ordered after the forks that
    // came before them.
    let w = match active {
        ActiveSource::Ebpf => w.without_root_exit_wakes(),
        _ => w,
    };
    (Some(w), Some(rx))
}

/// The supervisor, seeded from the start-up snapshot (hosts and trees
/// that already exist are found and watched) and from the tree table a
/// previous run saved (lineage a killed predecessor kept in its kernel
/// maps is gone; its table says who belonged where, checked against
/// /proc).
fn seed_supervisor(
    opts: &AgentOptions,
    procs: &[procscan::ProcInfo],
    tracker: &mut Tracker,
    mut ebpf: Option<&mut EbpfSource>,
) -> Supervisor {
    let mut supervisor = Supervisor::new(opts.config.clone(), opts.proc_root.clone());
    supervisor.classify_delay = opts.classify_delay;
    if ebpf.as_deref().is_some_and(EbpfSource::close_tier) {
        // Closes and exits drive the checks; the reconcile is a backstop.
        supervisor.reconcile_interval = Duration::from_secs(5);
    }
    supervisor.seed(procs, tracker, ebpf.as_deref_mut());
    if let Some(dir) = &opts.state_dir
        && let Some(table) = crate::daemon::persist::load(dir)
    {
        let saved = crate::daemon::persist::verify_in_proc(table, &opts.proc_root);
        supervisor.restore(saved, tracker, ebpf);
    }
    supervisor
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
