//! The agent's event loop: source messages, stdin wakes, follow-ups,
//! timers, reloads, `scan` requests and reap results, until shutdown or a
//! dead source.
//!
//! Owns: when each kind of work runs, the end of the loop (`RunEnd`), and
//! the service manager's keep-alives (`notify`), which come from this loop
//! and nowhere else.
//! Must never: return `Shutdown` when the source died (a dead source is
//! an exit non-zero, so a service manager restarts the daemon), or send a
//! keep-alive from anywhere but the loop itself: a loop that stops turning
//! must stop them, so the watchdog restarts it.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    Agent, RunEnd,
    notify::{Heartbeat, Notifier},
};
use crate::config::Config;

impl Agent {
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

    /// Fault injection (tests, `MCP_REAPER_FAULT_HANG_LOOP_MS`): `after`
    /// from now the loop blocks its thread for an hour, as a loop stuck in
    /// a system call would, so that its keep-alives and `/livez` stop.
    pub fn inject_loop_hang(&mut self, after: Duration) {
        self.fault_loop_hang = Some(std::time::Instant::now() + after);
    }

    /// Notifies `notifier`'s service manager from now on: `READY=1` at
    /// [`Agent::notify_ready`], then keep-alives and status changes from
    /// `run_until`.
    pub fn set_notifier(&mut self, notifier: Notifier) {
        self.heartbeat = Heartbeat::new(notifier);
    }

    /// `READY=1` with the status: tracking runs. The caller sends it once
    /// the source is attached and the table seeded (`Agent::start`) and
    /// its services are up; the loop sends it again after a reload.
    pub fn notify_ready(&mut self) {
        let status = self.service_status();
        self.heartbeat.ready(status);
    }

    /// The state a service manager shows (`STATUS=`): the tier, the trees
    /// followed, and whether reaping is paused.
    pub fn service_status(&self) -> String {
        let trees = self.supervisor.trees().count();
        if self.tracker.degraded() {
            format!(
                "degraded, reaping paused until /proc is reconciled ({} tier, {trees} trees)",
                self.active
            )
        } else {
            format!("tracking {trees} MCP server trees ({} tier)", self.active)
        }
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
        // Keep-alives are a branch of this select, not a task of their own:
        // they stop when the loop does.
        let mut beat = self.heartbeat.notifier().loop_period().map(|p| {
            let mut beat = tokio::time::interval(p);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            beat
        });
        tokio::pin!(shutdown);
        loop {
            self.opts.reporter.heartbeat.beat();
            let followup = self.supervisor.next_followup();
            tokio::select! {
                () = &mut shutdown => return RunEnd::Shutdown,
                () = sleep_until(followup) => self.supervise_now(),
                () = sleep_until(self.fault_source_stop) => {
                    warn!("fault injection: stopping the event source");
                    self.fault_source_stop = None;
                    self.reader.abort();
                }
                () = sleep_until(self.fault_loop_hang) => {
                    warn!("fault injection: the event loop hangs");
                    self.fault_loop_hang = None;
                    std::thread::sleep(Duration::from_secs(3600));
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
                    // Ends the RELOADING=1 the SIGHUP handler sent.
                    self.notify_ready();
                }
                () = next_tick(&mut beat) => {
                    let status = self.service_status();
                    self.heartbeat.beat(status);
                }
                Some(wake) = next_wake(&mut self.wake_rx) => self.wake(wake),
                Some(ask) = next_scan(&mut self.scan_rx) => self.answer_scan(ask),
                _ = supervise.tick() => self.supervise(),
                _ = gc.tick() => self.gc(),
                _ = refresh.tick() => self.refresh_metrics(),
            }
        }
    }

    /// A pidfd-tier wake: re-check that tree at this tick, and at once
    /// when it is the only thing to do.
    pub(super) fn wake(&mut self, wake: crate::ownership::stdin_watch::Wake) {
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
                    .and_then(crate::judge::policy::parse_reason)
                    .is_some_and(|r| {
                        t.state == crate::judge::trees::TreeState::Orphaned
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

/// The next tick of `interval`; never resolves without one.
async fn next_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_reload(rx: &mut Option<mpsc::Receiver<Arc<Config>>>) -> Option<Arc<Config>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_scan(
    rx: &mut Option<mpsc::Receiver<super::scan::ScanAsk>>,
) -> Option<super::scan::ScanAsk> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_wake(
    rx: &mut Option<mpsc::UnboundedReceiver<crate::ownership::stdin_watch::Wake>>,
) -> Option<crate::ownership::stdin_watch::Wake> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
