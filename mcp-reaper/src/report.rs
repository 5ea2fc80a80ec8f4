//! Reporting: every decision and action goes to the audit log, the
//! metrics and the log, from one place.
//!
//! Owns: turning the supervisor's records and the reaper's reports into
//! audit records, metric updates and one info line each (with the audit id).
//! Must never: block the daemon (the audit sink queues; metrics are
//! in-memory), or put a PID, session id or command line into a metric label.

use std::{sync::Arc, time::Duration};

use tracing::info;

use crate::{
    audit::{self, AuditEvent, AuditHost, AuditOwnerFd, AuditRecord, AuditSink, AuditTree},
    config::Reason,
    identity::ProcKey,
    metrics::{Metrics, ReapOutcome, TreeSample},
    policy::{self, Decision},
    procscan,
    reaper::{Outcome, ReapReport},
    supervisor::TreeRecord,
};

/// Where reports go; each part is optional.
#[derive(Clone, Default)]
pub struct Reporter {
    pub metrics: Option<Arc<Metrics>>,
    pub audit: Option<Arc<AuditSink>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("metrics", &self.metrics.is_some())
            .field("audit", &self.audit.is_some())
            .finish()
    }
}

fn audit_tree(t: &TreeRecord) -> AuditTree {
    AuditTree {
        root: t.root.into(),
        server: t.server.clone(),
        host: t.host.map(|h| AuditHost {
            pid: h.tgid,
            start_ticks: h.start_ticks,
            rule: t.host_rule.clone(),
        }),
        session_id: t.session_id.clone(),
        owner_fds: t.owner_fds.iter().map(AuditOwnerFd::from).collect(),
        chain: t.chain.iter().map(|k| (*k).into()).collect(),
        released_link: t.released_link.map(Into::into),
    }
}

fn members(keys: &[ProcKey]) -> Vec<audit::AuditMember> {
    let root = std::path::Path::new("/proc");
    keys.iter()
        .take(audit::MAX_MEMBERS)
        .map(|k| {
            let cmdline = procscan::read_process(root, k.tgid)
                .ok()
                .filter(|p| p.key == *k)
                .map(|p| procscan::display_cmdline(&p))
                .unwrap_or_default();
            audit::AuditMember::new(k.tgid, k.start_ticks, &cmdline)
        })
        .collect()
}

fn outcome_label(o: &Outcome) -> ReapOutcome {
    match o {
        Outcome::Terminated => ReapOutcome::Terminated,
        Outcome::Killed => ReapOutcome::Killed,
        Outcome::Unkillable => ReapOutcome::Unkillable,
        Outcome::Vanished | Outcome::Refused(_) => ReapOutcome::Vanished,
        Outcome::DryRun => ReapOutcome::DryRun,
    }
}

impl Reporter {
    fn emit(&self, rec: AuditRecord) -> String {
        let id = rec.id.clone();
        if let Some(a) = &self.audit {
            a.record(rec);
        }
        id
    }

    /// A tree's owner let go (confirmed by the kernel's record).
    pub fn orphan_detected(
        &self,
        t: &TreeRecord,
        member_keys: &[ProcKey],
        latency: Option<Duration>,
    ) {
        let reason = t.reason.as_deref().and_then(policy::parse_reason);
        if let (Some(m), Some(r)) = (&self.metrics, reason) {
            m.orphan_detected(r, latency);
        }
        let mut rec = AuditRecord::new(AuditEvent::OrphanDetected);
        rec.tree = Some(audit_tree(t));
        rec.members = members(member_keys);
        rec.reason.clone_from(&t.reason);
        let id = self.emit(rec);
        info!(audit_id = %id, root = %t.root, server = %t.server, reason = t.reason.as_deref().unwrap_or("-"), "orphan detected");
    }

    /// A decision that is only reported (observe, dry run, hold).
    pub fn decision(&self, t: &TreeRecord, member_keys: &[ProcKey], decision: Decision) {
        let (action, why) = match decision {
            Decision::Observe => (audit::Action::Observe, "configured to observe this reason"),
            Decision::DryRun => (audit::Action::DryRun, "dry run: would reap"),
            Decision::Hold => (
                audit::Action::Skip,
                "tracking degraded: holding until resync",
            ),
            Decision::Enforce => (audit::Action::Enforce, "orphan confirmed after grace"),
            Decision::None | Decision::Wait => return,
        };
        if decision == Decision::DryRun
            && let (Some(m), Some(r)) = (
                &self.metrics,
                t.reason.as_deref().and_then(policy::parse_reason),
            )
        {
            m.tree_reaped(r, ReapOutcome::DryRun, 0, Duration::ZERO);
        }
        let mut rec = AuditRecord::new(AuditEvent::Decision).with_action(action, why);
        rec.tree = Some(audit_tree(t));
        rec.members = members(member_keys);
        rec.reason.clone_from(&t.reason);
        let id = self.emit(rec);
        info!(audit_id = %id, root = %t.root, server = %t.server, reason = t.reason.as_deref().unwrap_or("-"), decision = ?decision, "tree reported, not reaped");
    }

    /// A reap finished.
    pub fn reaped(
        &self,
        t: &TreeRecord,
        reason: Option<&str>,
        report: &ReapReport,
        reclaimed: u64,
    ) {
        if let (Some(m), Some(r)) = (&self.metrics, reason.and_then(policy::parse_reason)) {
            m.tree_reaped(
                r,
                outcome_label(&report.outcome),
                reclaimed,
                report.duration,
            );
        }
        let mut rec = AuditRecord::new(AuditEvent::Reap)
            .with_action(audit::Action::Enforce, "orphan confirmed after grace")
            .with_outcome(&format!("{:?}", report.outcome));
        rec.tree = Some(audit_tree(t));
        rec.reason = reason.map(str::to_string);
        rec.members = report
            .members
            .iter()
            .map(|m| audit::AuditMember::new(m.key.tgid, m.key.start_ticks, &m.cmdline))
            .collect();
        rec.signals = report
            .members
            .iter()
            .flat_map(|m| {
                m.signals.iter().map(|s| audit::AuditSignal {
                    pid: m.key.tgid,
                    signal: (*s).to_string(),
                })
            })
            .collect();
        rec.timings = Some(audit::AuditTimings {
            reaped_ms: u64::try_from(report.duration.as_millis()).ok(),
            ..audit::AuditTimings::default()
        });
        let id = self.emit(rec);
        info!(audit_id = %id, root = %t.root, server = %t.server, outcome = ?report.outcome, signals = report.signals_sent, reclaimed_bytes = reclaimed, "tree reaped");
    }

    /// A `release` request arrived.
    pub fn release_request(&self, why: &str, matched: &[TreeRecord]) {
        for t in matched {
            let mut rec = AuditRecord::new(AuditEvent::ReleaseRequest)
                .with_action(audit::Action::Enforce, why);
            rec.tree = Some(audit_tree(t));
            rec.reason = Some(Reason::SessionEnded.as_str().to_string());
            self.emit(rec);
        }
    }

    pub fn lifecycle(&self, event: AuditEvent, why: &str) {
        let mut rec = AuditRecord::new(event);
        rec.why = why.to_string();
        self.emit(rec);
    }

    /// Refreshes the tree gauges (with memory) and the source gauges.
    pub fn trees(&self, trees: &[(TreeRecord, u64, u64, u64)]) {
        let Some(m) = &self.metrics else { return };
        let samples: Vec<TreeSample<'_>> = trees
            .iter()
            .map(|(t, processes, rss, pss)| TreeSample {
                host: &t.host_rule,
                server: &t.server,
                state: t.state,
                processes: *processes,
                rss: *rss,
                pss: *pss,
                orphaned_for: t.orphan_since.map(|s| s.elapsed()),
            })
            .collect();
        m.set_trees(&samples);
    }
}
