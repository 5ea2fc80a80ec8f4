//! Every metric family of the daemon: its name, help text, labels and
//! buckets, registered into the caller's `Registry`, with the zero series
//! alerts rely on.
//!
//! Owns: the `Metrics` struct, its families grouped by topic (the tree
//! table, the event source, verdicts and reaps, the audit log) with each
//! group's registration, the `mcp_reaper_` prefix, the histogram buckets and
//! `export_zeros`. The registry sorts families by name when gathered, so
//! the grouping changes nothing a scrape sees.
//! Must never: register anything globally (the registry is injected), or
//! declare a label outside the closed sets of `labels` and the bounded
//! `host` / `server` pair. The per-event updates live in `update`.

use std::{collections::HashSet, sync::Mutex};

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    core::Collector,
};

use super::{
    info::TierInfo,
    labels::{EventKind, NONE, ReapOutcome, STATES, reason_label},
};
use crate::{config::Reason, outputs::audit::AuditStatsSnapshot, source::event::GapCause};

/// Prefix of every series this module defines.
pub const PREFIX: &str = "mcp_reaper_";

/// Buckets of `mcp_reaper_detection_latency_seconds`: 100 us to 10 s.
const DETECTION_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets of `mcp_reaper_reap_duration_seconds`: the grace period and the
/// TERM/KILL wait dominate, so 1 ms to 2 min.
const REAP_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Source counters as last synced, to turn absolute values into deltas.
#[derive(Default)]
pub(super) struct SourceTotals {
    pub(super) exec: u64,
    pub(super) fork: u64,
    pub(super) exit: u64,
    pub(super) close: u64,
    pub(super) lost: u64,
    pub(super) decode_errors: u64,
}

pub(super) type TreeKey = (String, String, &'static str);

/// Every series of the daemon, in four groups by topic. Share it behind
/// an `Arc`.
pub struct Metrics {
    pub(super) tree: TreeFamilies,
    pub(super) source: SourceFamilies,
    pub(super) reap: ReapFamilies,
    pub(super) audit: AuditFamilies,
    pub(super) reload_failures: IntCounter,
    /// `(host, server, state)` series set by the previous `set_trees`.
    pub(super) tree_keys: Mutex<HashSet<TreeKey>>,
    pub(super) identities: Mutex<HashSet<(String, String)>>,
    pub(super) source_totals: Mutex<SourceTotals>,
    /// The audit sink's counters as last synced.
    pub(super) audit_totals: Mutex<AuditStatsSnapshot>,
}

fn name(suffix: &str) -> String {
    format!("{PREFIX}{suffix}")
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(
    r: &Registry,
    n: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    register(r, IntGaugeVec::new(Opts::new(name(n), help), labels)?)
}

fn counter_vec(
    r: &Registry,
    n: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    register(r, IntCounterVec::new(Opts::new(name(n), help), labels)?)
}

fn counter(r: &Registry, n: &str, help: &str) -> prometheus::Result<IntCounter> {
    register(r, IntCounter::with_opts(Opts::new(name(n), help))?)
}

fn histogram(r: &Registry, n: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name(n), help).buckets(buckets.to_vec()))?,
    )
}

fn float_gauge(r: &Registry, n: &str, help: &str) -> prometheus::Result<prometheus::Gauge> {
    register(r, prometheus::Gauge::with_opts(Opts::new(name(n), help))?)
}

/// The tree table as gauges: trees by identity and state; processes and
/// memory by state; the oldest orphan's age.
pub(super) struct TreeFamilies {
    pub(super) trees: IntGaugeVec,
    pub(super) tree_processes: IntGaugeVec,
    pub(super) tree_rss: IntGaugeVec,
    pub(super) tree_pss: IntGaugeVec,
    pub(super) oldest_orphan_age: prometheus::Gauge,
}

impl TreeFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            trees: gauge_vec(
                r,
                "trees",
                "MCP server trees by host rule, server identity and state.",
                &["host", "server", "state"],
            )?,
            tree_processes: gauge_vec(
                r,
                "tree_processes",
                "Processes in MCP server trees, by tree state.",
                &["state"],
            )?,
            tree_rss: gauge_vec(
                r,
                "tree_resident_memory_bytes",
                "Resident memory of MCP server trees, by tree state.",
                &["state"],
            )?,
            tree_pss: gauge_vec(
                r,
                "tree_proportional_memory_bytes",
                "Proportional set size of MCP server trees, by tree state.",
                &["state"],
            )?,
            oldest_orphan_age: float_gauge(
                r,
                "oldest_orphan_age_seconds",
                "How long the oldest tree still orphaned has been orphaned (0: none).",
            )?,
        })
    }
}

/// What the event source delivers and how well: the tier in use, events,
/// losses, decode errors, lineage gaps, resyncs, the table size and the
/// degraded flag.
pub(super) struct SourceFamilies {
    pub(super) source_info: TierInfo,
    pub(super) tracked: IntGauge,
    pub(super) degraded: IntGauge,
    pub(super) events: IntCounterVec,
    pub(super) lost: IntCounter,
    pub(super) decode_errors: IntCounter,
    pub(super) lineage_gaps: IntCounterVec,
    pub(super) resyncs: IntCounter,
}

impl SourceFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            source_info: register(
                r,
                TierInfo::new(
                    &name("event_source_info"),
                    "Always 1; the tier label names the event source in use (one series).",
                )?,
            )?,
            tracked: register(
                r,
                IntGauge::with_opts(Opts::new(
                    name("tracked_processes"),
                    "Processes in the tracker's table.",
                ))?,
            )?,
            degraded: register(
                r,
                IntGauge::with_opts(Opts::new(
                    name("degraded"),
                    "1 while tracking is degraded (events lost and not yet reconciled); nothing is reaped then.",
                ))?,
            )?,
            events: counter_vec(
                r,
                "events_total",
                "Process events received from the event source, by kind.",
                &["kind"],
            )?,
            lost: counter(
                r,
                "lost_events_total",
                "Events the kernel dropped (ring buffer full); each loss forces a resync.",
            )?,
            decode_errors: counter(
                r,
                "decode_errors_total",
                "Event records that failed to decode (counted and skipped).",
            )?,
            lineage_gaps: counter_vec(
                r,
                "lineage_gaps_total",
                "Gaps in lineage by cause (a watch not written: watch_full, watch_error; a kernel event skipped: kernel_read_error, decode_error); each degrades tracking until a resync.",
                &["cause"],
            )?,
            resyncs: counter(
                r,
                "resyncs_total",
                "Reconciliations of the process table with /proc after lost events.",
            )?,
        })
    }
}

/// Verdicts and reaps: orphans detected, reaps by outcome, memory
/// reclaimed, the last successful reap, respawns and the two latencies.
pub(super) struct ReapFamilies {
    pub(super) orphans_detected: IntCounterVec,
    pub(super) trees_reaped: IntCounterVec,
    pub(super) reclaimed: IntCounter,
    pub(super) last_reap: prometheus::Gauge,
    pub(super) respawns: IntCounterVec,
    pub(super) detection_latency: Histogram,
    pub(super) reap_duration: Histogram,
}

impl ReapFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            orphans_detected: counter_vec(
                r,
                "orphans_detected_total",
                "Trees found orphaned, by reason.",
                &["reason"],
            )?,
            trees_reaped: counter_vec(
                r,
                "trees_reaped_total",
                "Reaps of orphaned trees, by reason and outcome.",
                &["reason", "outcome"],
            )?,
            reclaimed: counter(
                r,
                "reclaimed_memory_bytes_total",
                "Memory (PSS, else RSS) of the trees reaped.",
            )?,
            last_reap: float_gauge(
                r,
                "last_successful_reap_timestamp_seconds",
                "Unix time of the last reap that left the tree gone (0: none yet).",
            )?,
            respawns: counter_vec(
                r,
                "respawns_total",
                "Trees started to replace one just reaped, by host rule and server identity.",
                &["host", "server"],
            )?,
            detection_latency: histogram(
                r,
                "detection_latency_seconds",
                "Time from the host releasing a tree to the orphan verdict being confirmed.",
                &DETECTION_BUCKETS,
            )?,
            reap_duration: histogram(
                r,
                "reap_duration_seconds",
                "Time from a confirmed orphan verdict to every member being gone.",
                &REAP_BUCKETS,
            )?,
        })
    }
}

/// The audit log's completeness: records written, and the two ways a
/// record can be lost (each a gap in the log of what the daemon did).
pub(super) struct AuditFamilies {
    pub(super) written: IntCounter,
    pub(super) dropped: IntCounter,
    pub(super) write_failures: IntCounter,
}

impl AuditFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            written: counter(
                r,
                "audit_records_written_total",
                "Audit records written to the audit log.",
            )?,
            dropped: counter(
                r,
                "audit_records_dropped_total",
                "Audit records dropped before the writer (its queue full, or the writer stopped): each one is missing from the audit log.",
            )?,
            write_failures: counter(
                r,
                "audit_write_failures_total",
                "Audit records the log target refused (disk full, permissions, ...): each one is missing from the audit log.",
            )?,
        })
    }
}

impl Metrics {
    /// Registers every series into `registry` (and the daemon's process
    /// collector), with the zero series alerts rely on.
    ///
    /// # Errors
    /// When a series is already registered in `registry` (a second
    /// `Metrics` on the same registry) or a definition is invalid.
    pub fn new(registry: &Registry, version: &str) -> prometheus::Result<Self> {
        let r = registry;
        let build_info = gauge_vec(
            r,
            "build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let m = Self {
            tree: TreeFamilies::register(r)?,
            source: SourceFamilies::register(r)?,
            reap: ReapFamilies::register(r)?,
            audit: AuditFamilies::register(r)?,
            reload_failures: counter(
                r,
                "config_reload_failures_total",
                "Configuration reloads rejected (the previous configuration stays).",
            )?,
            tree_keys: Mutex::new(HashSet::new()),
            identities: Mutex::new(HashSet::new()),
            source_totals: Mutex::new(SourceTotals::default()),
            audit_totals: Mutex::new(AuditStatsSnapshot::default()),
        };
        m.export_zeros();
        Ok(m)
    }

    fn export_zeros(&self) {
        for state in STATES {
            let s = state.as_str();
            self.tree.trees.with_label_values(&[NONE, NONE, s]).set(0);
            self.tree.tree_processes.with_label_values(&[s]).set(0);
            self.tree.tree_rss.with_label_values(&[s]).set(0);
            self.tree.tree_pss.with_label_values(&[s]).set(0);
        }
        for cause in GapCause::ALL {
            self.source
                .lineage_gaps
                .with_label_values(&[cause.as_str()]);
        }
        for reason in Reason::ALL {
            let reason = reason_label(reason);
            self.reap.orphans_detected.with_label_values(&[reason]);
            for outcome in ReapOutcome::ALL {
                self.reap
                    .trees_reaped
                    .with_label_values(&[reason, outcome.as_str()]);
            }
        }
        for kind in EventKind::ALL {
            self.source.events.with_label_values(&[kind.as_str()]);
        }
    }
}
