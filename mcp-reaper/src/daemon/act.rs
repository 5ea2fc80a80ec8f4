//! Acting on the supervisor's decisions: reports, reaps on blocking tasks,
//! their results, and the tree table kept for a restart.
//!
//! Owns: handing reap plans (with the never-touch list and the kernel's
//! lineage) to `reaper`, and publishing what happened.
//! Must never: start a reap the supervisor did not re-confirm, or leave a
//! finished reap unrecorded.

use std::time::Duration;

use tracing::{info, warn};

use super::{Agent, ReapDone, ReapSummary, ReportedSummary};
use crate::{
    judge::policy::Decision,
    judge::supervisor::Action,
    procs::procscan,
    reap::reaper::{self, ReapPlan},
};

impl Agent {
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

    pub(super) fn start_reap(&mut self, action: Action) {
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
        let heirs = lineage.is_none().then(|| crate::reap::lineage::StdioHeirs {
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
            let kernel = lineage
                .map(|r| Box::new(move || r.members(root)) as crate::reap::lineage::KernelMembers);
            let mut source = crate::reap::lineage::Lineage::new(procs, kernel, heirs);
            // Fails closed: a live member whose identity or cgroup cannot be
            // read is not signalled.
            let protect = |key: crate::procs::identity::ProcKey| {
                crate::reap::protect::check(&config, &proc_root, key).refusal()
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

    pub(super) fn finish_reap(&mut self, done: ReapDone) {
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
    pub(super) fn save_trees(&mut self) {
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
        match crate::daemon::persist::save(dir, &table) {
            Ok(()) => self.trees_saved = Some(table),
            Err(e) => warn!("cannot save the tree table in {}: {e}", dir.display()),
        }
    }
}
