//! What other modules tell the metrics: one method per thing that happened
//! (a tree refresh, a verdict, a reap, source counters, a tier change, the
//! audit sink's counters).
//!
//! Owns: turning those calls into series updates, the `(host, server)`
//! admission cap, and replacing the tree gauges without a gap.
//! Must never: label a series with anything but bounded or closed-set
//! values, let a scrape see the tree table half replaced (new values are
//! set before stale series are removed), or act on what it counts.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    families::{Metrics, TreeKey},
    labels::{
        EventKind, MAX_IDENTITIES, NONE, OTHER, ReapOutcome, STATES, TIERS, bounded, reason_label,
    },
};
use crate::{
    config::Reason, judge::trees::TreeState, outputs::audit::AuditStatsSnapshot,
    source::CounterSnapshot, source::event::GapCause,
};

/// One tree as a refresh reports it.
#[derive(Clone, Copy, Debug)]
pub struct TreeSample<'a> {
    /// Host rule name (`TreeView::host.rule`), or `none` without a host.
    pub host: &'a str,
    /// Bounded server identity (`TreeView::server`).
    pub server: &'a str,
    pub state: TreeState,
    pub processes: u64,
    pub rss: u64,
    pub pss: u64,
    /// How long the tree has been orphaned, when it is.
    pub orphaned_for: Option<Duration>,
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// How far a cumulative counter moved since `prev` (updated to `now`). A
/// value lower than the last one means a new counter (a restarted source):
/// its whole value counts.
fn delta(prev: &mut u64, now: u64) -> u64 {
    let d = if now >= *prev { now - *prev } else { now };
    *prev = now;
    d
}

impl Metrics {
    /// The exported `(host, server)` for a pair, admitting it while fewer
    /// than [`MAX_IDENTITIES`] pairs have been seen.
    fn identity(&self, host: &str, server: &str) -> (String, String) {
        let pair = (bounded(host).to_string(), bounded(server).to_string());
        let mut seen = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&pair) {
            return pair;
        }
        if seen.len() < MAX_IDENTITIES {
            seen.insert(pair.clone());
            return pair;
        }
        (OTHER.to_string(), OTHER.to_string())
    }

    /// Replaces every tree gauge with this refresh's trees. New values are
    /// set before stale series are removed, so no scrape sees an empty table.
    pub fn set_trees(&self, samples: &[TreeSample<'_>]) {
        #[derive(Default)]
        struct Sum {
            processes: u64,
            rss: u64,
            pss: u64,
        }
        let mut counts: HashMap<TreeKey, u64> = HashMap::new();
        let mut by_state: HashMap<&'static str, Sum> = HashMap::new();
        let mut oldest = Duration::ZERO;
        for t in samples {
            let (host, server) = self.identity(t.host, t.server);
            let state = t.state.as_str();
            *counts.entry((host, server, state)).or_default() += 1;
            let sum = by_state.entry(state).or_default();
            sum.processes = sum.processes.saturating_add(t.processes);
            sum.rss = sum.rss.saturating_add(t.rss);
            sum.pss = sum.pss.saturating_add(t.pss);
            if t.state == TreeState::Orphaned {
                oldest = oldest.max(t.orphaned_for.unwrap_or_default());
            }
        }
        let mut keys = self
            .tree_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((host, server, state), n) in &counts {
            self.tree
                .trees
                .with_label_values(&[host.as_str(), server.as_str(), state])
                .set(saturating_i64(*n));
        }
        for stale in keys.iter().filter(|k| !counts.contains_key(*k)) {
            let (host, server, state) = stale;
            // Already gone is fine: the series just was not there.
            let _ = self
                .tree
                .trees
                .remove_label_values(&[host.as_str(), server.as_str(), state]);
        }
        // The per-state placeholders stay, whatever the refresh held.
        for state in STATES {
            self.tree
                .trees
                .with_label_values(&[NONE, NONE, state.as_str()])
                .add(0);
        }
        *keys = counts.into_keys().collect();
        for state in STATES {
            let s = state.as_str();
            let sum = by_state.remove(s).unwrap_or_default();
            self.tree
                .tree_processes
                .with_label_values(&[s])
                .set(saturating_i64(sum.processes));
            self.tree
                .tree_rss
                .with_label_values(&[s])
                .set(saturating_i64(sum.rss));
            self.tree
                .tree_pss
                .with_label_values(&[s])
                .set(saturating_i64(sum.pss));
        }
        self.tree.oldest_orphan_age.set(secs(oldest));
    }

    /// A tree was confirmed orphaned; `latency` runs from the host's release
    /// to the confirmation, when the release time is known.
    pub fn orphan_detected(&self, reason: Reason, latency: Option<Duration>) {
        self.reap
            .orphans_detected
            .with_label_values(&[reason_label(reason)])
            .inc();
        if let Some(l) = latency {
            self.reap.detection_latency.observe(secs(l));
        }
    }

    /// A reap ended. `duration` runs from the confirmed verdict to the last
    /// member gone; `reclaimed_bytes` is the tree's memory before the reap.
    pub fn tree_reaped(
        &self,
        reason: Reason,
        outcome: ReapOutcome,
        reclaimed_bytes: u64,
        duration: Duration,
    ) {
        self.reap
            .trees_reaped
            .with_label_values(&[reason_label(reason), outcome.as_str()])
            .inc();
        if outcome == ReapOutcome::DryRun {
            return;
        }
        self.reap.reap_duration.observe(secs(duration));
        if outcome.is_success() {
            self.reap.reclaimed.inc_by(reclaimed_bytes);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.reap.last_reap.set(secs(now));
        }
    }

    /// Counts one event the source counters do not cover (`close`).
    pub fn event(&self, kind: EventKind) {
        self.source.events.with_label_values(&[kind.as_str()]).inc();
    }

    /// Brings the event, loss and decode counters up to a source's
    /// cumulative counters. A value lower than the last one means a new
    /// source (a restart or fallback): its whole value is counted.
    pub fn observe_source_counters(&self, c: &CounterSnapshot) {
        let mut last = self
            .source_totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pairs = [
            (EventKind::Exec, delta(&mut last.exec, c.exec)),
            (EventKind::Fork, delta(&mut last.fork, c.fork)),
            (EventKind::Exit, delta(&mut last.exit, c.exit)),
            (EventKind::Close, delta(&mut last.close, c.close)),
        ];
        for (kind, d) in pairs {
            self.source
                .events
                .with_label_values(&[kind.as_str()])
                .inc_by(d);
        }
        self.source.lost.inc_by(delta(&mut last.lost, c.lost));
        self.source
            .decode_errors
            .inc_by(delta(&mut last.decode_errors, c.decode_errors));
    }

    /// `n` gaps in lineage of this cause.
    pub fn lineage_gap(&self, cause: GapCause, n: u64) {
        self.source
            .lineage_gaps
            .with_label_values(&[cause.as_str()])
            .inc_by(n);
    }

    /// One reconciliation with /proc happened.
    pub fn resync(&self) {
        self.source.resyncs.inc();
    }

    pub fn set_degraded(&self, degraded: bool) {
        self.source.degraded.set(i64::from(degraded));
    }

    /// Makes `tier` (`ebpf`, `pidfd`, `poll`; anything else is `other`)
    /// the one series of `mcp_reaper_event_source_info`.
    pub fn set_tier(&self, tier: &str) {
        let active = if TIERS.contains(&tier) { tier } else { OTHER };
        self.source.source_info.set(active);
    }

    /// Brings the audit counters up to the sink's cumulative ones.
    pub fn observe_audit(&self, s: &AuditStatsSnapshot) {
        let mut last = self
            .audit_totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.audit
            .written
            .inc_by(delta(&mut last.written, s.written));
        self.audit
            .dropped
            .inc_by(delta(&mut last.dropped, s.dropped));
        self.audit
            .write_failures
            .inc_by(delta(&mut last.write_failures, s.write_failures));
    }

    pub fn set_tracked(&self, processes: usize) {
        self.source
            .tracked
            .set(i64::try_from(processes).unwrap_or(i64::MAX));
    }

    /// A tree for `(host, server)` started right after one was reaped.
    pub fn respawn(&self, host: &str, server: &str) {
        let (host, server) = self.identity(host, server);
        self.reap
            .respawns
            .with_label_values(&[host.as_str(), server.as_str()])
            .inc();
    }

    pub fn config_reload_failed(&self) {
        self.reload_failures.inc();
    }
}
