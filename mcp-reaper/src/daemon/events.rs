//! Feeding the tracker: source messages in order, lineage gaps, resyncs
//! with /proc, and garbage collection.
//!
//! Owns: applying each event to the tracker and then the supervisor, and
//! the degraded state until a resync reconciles a loss or a gap.
//! Must never: drop a loss or a gap without degrading, or act on the
//! table while degraded.

use tracing::{info, warn};

use super::{Agent, GAP_RESYNC_INTERVAL};
use crate::{
    procs::procscan,
    source::event::{GapCause, SourceMsg},
};

impl Agent {
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

    pub(super) fn handle(&mut self, msg: SourceMsg) {
        match msg {
            SourceMsg::Event(ev) => {
                self.tracker.apply(&ev);
                self.supervisor.observe(&ev, &self.tracker);
                // A host's close or a member's exit is checked now, not at
                // the next tick: this is the detection latency.
                if matches!(
                    ev,
                    crate::source::event::ProcessEvent::Close { .. }
                        | crate::source::event::ProcessEvent::Exit { .. }
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
    pub(super) fn lineage_gap(&mut self, cause: GapCause, n: u64, resync_later: bool) {
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
    pub(super) fn take_watch_gaps(&mut self, resync_later: bool) {
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
        // A gone container's network namespace is not kept alive by the
        // sock_diag socket the daemon made in it.
        crate::ownership::netns::expire();
        if removed > 0 {
            crate::daemon::heap::release_freed();
        }
    }
}
