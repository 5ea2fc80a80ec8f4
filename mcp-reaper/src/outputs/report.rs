//! Reporting: every decision and action goes to the audit log, the
//! metrics and the log, from one place.
//!
//! Owns: turning the supervisor's records and the reaper's reports into
//! audit records, metric updates and one info line each (with the audit id),
//! and carrying the audit sink's written / dropped / failed counts into the
//! metrics (after every record queued and at every tree refresh, so write
//! failures on the writer thread show within one refresh). It also carries
//! the main loop's heartbeat from the daemon's start-up to the loop (which
//! beats it) and to the HTTP endpoint (whose `/livez` reads it).
//! Must never: block the daemon (the audit sink queues; metrics are
//! in-memory), or put a PID, session id or command line into a metric label.

use std::{sync::Arc, time::Duration};

use tracing::info;

use crate::{
    config::Reason,
    judge::policy::{self, Decision},
    judge::supervisor::TreeRecord,
    outputs::audit::{
        self, AuditEvent, AuditHost, AuditOwnerFd, AuditRecord, AuditSink, AuditTree,
    },
    outputs::http::Heartbeat,
    outputs::metrics::{Metrics, ReapOutcome, TreeSample},
    procs::identity::ProcKey,
    procs::procscan,
    reap::reaper::{Outcome, ReapReport},
};

/// Where reports go; metrics and audit are optional.
#[derive(Clone, Default)]
pub struct Reporter {
    pub metrics: Option<Arc<Metrics>>,
    pub audit: Option<Arc<AuditSink>>,
    /// Beaten by the agent's main loop on every turn; `/livez` reads it.
    pub heartbeat: Heartbeat,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("metrics", &self.metrics.is_some())
            .field("audit", &self.audit.is_some())
            .field("heartbeat", &self.heartbeat.since_last_beat())
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
            ns_pid: ns_pid(h),
        }),
        session_id: t.session_id.clone(),
        owner_fds: t.owner_fds.iter().map(AuditOwnerFd::from).collect(),
        chain: t.chain.iter().map(|k| (*k).into()).collect(),
        released_link: t.released_link.map(Into::into),
    }
}

/// The host's PID inside its own namespace, when it differs and the host
/// is still the process recorded.
fn ns_pid(key: ProcKey) -> Option<u32> {
    procscan::read_process(std::path::Path::new("/proc"), key.tgid)
        .ok()
        .filter(|p| p.key == key)
        .and_then(|p| p.ns_pid)
}

fn members(keys: &[ProcKey]) -> Vec<audit::AuditMember> {
    let root = std::path::Path::new("/proc");
    keys.iter()
        .take(audit::MAX_MEMBERS)
        .map(|k| {
            let info = procscan::read_process(root, k.tgid)
                .ok()
                .filter(|p| p.key == *k);
            let cmdline = info
                .as_ref()
                .map(procscan::display_cmdline)
                .unwrap_or_default();
            audit::AuditMember {
                ns_pid: info.and_then(|p| p.ns_pid),
                ..audit::AuditMember::new(k.tgid, k.start_ticks, &cmdline)
            }
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
        self.sync_audit_counts();
        id
    }

    /// The audit sink's counters, into the metrics.
    fn sync_audit_counts(&self) {
        if let (Some(m), Some(a)) = (&self.metrics, &self.audit) {
            m.observe_audit(&a.stats());
        }
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

    /// Refreshes the tree gauges (with memory) and the audit counters.
    pub fn trees(&self, trees: &[(TreeRecord, u64, u64, u64)]) {
        self.sync_audit_counts();
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::outputs::{
        audit::{AuditLog, AuditTarget},
        metrics::Registry,
    };

    fn counter(r: &Registry, name: &str) -> f64 {
        r.gather()
            .iter()
            .find(|mf| mf.name() == name)
            .map(|mf| mf.get_metric()[0].get_counter().get_value())
            .unwrap_or_else(|| panic!("{name} not registered"))
    }

    /// A real sink on /dev/full (every write fails): the failures, and the
    /// records dropped once the writer is stopped, reach the counters.
    #[test]
    fn audit_gaps_reach_the_metrics() {
        let registry = Registry::new();
        let metrics = Arc::new(Metrics::new(&registry, "t").unwrap());
        let Ok(log) = AuditLog::open(AuditTarget::File {
            path: "/dev/full".into(),
            max_bytes: 0,
            keep: 0,
        }) else {
            eprintln!("audit_gaps_reach_the_metrics: skipped: /dev/full cannot be opened");
            return;
        };
        let sink = Arc::new(AuditSink::spawn(log, 4).unwrap());
        let reporter = Reporter {
            metrics: Some(Arc::clone(&metrics)),
            audit: Some(Arc::clone(&sink)),
            heartbeat: Heartbeat::default(),
        };
        for name in [
            "mcp_reaper_audit_records_written_total",
            "mcp_reaper_audit_records_dropped_total",
            "mcp_reaper_audit_write_failures_total",
        ] {
            assert_eq!(counter(&registry, name), 0.0, "{name} from the start");
        }
        reporter.lifecycle(AuditEvent::Startup, "test");
        reporter.lifecycle(AuditEvent::Startup, "test");
        assert!(sink.flush(Duration::from_secs(5)));
        // Failures happen on the writer thread: the next refresh shows them.
        reporter.trees(&[]);
        let failures = counter(&registry, "mcp_reaper_audit_write_failures_total");
        assert_eq!(failures, 2.0);
        assert_eq!(
            counter(&registry, "mcp_reaper_audit_records_written_total"),
            0.0
        );
        sink.shutdown();
        // A record that cannot be queued counts at once.
        reporter.lifecycle(AuditEvent::Shutdown, "test");
        let dropped = counter(&registry, "mcp_reaper_audit_records_dropped_total");
        assert_eq!(dropped, 1.0);
    }
}
