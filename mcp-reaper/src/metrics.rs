//! Prometheus metrics of the daemon.
//!
//! Owns: every `mcp_reaper_*` series (names, help, labels, buckets), the
//! zero series exported from the first scrape so alerts see them, the
//! bounding of label values, and the text encoding. Everything is registered
//! into a `Registry` the caller injects; nothing is global.
//! Must never: use a PID, session id, command line or any other unbounded
//! value as a label; let a scrape observe a half-replaced tree table; act on
//! anything (it only counts what other modules did).
//!
//! Label values: `host` is a host rule name and `server` a server identity,
//! both from configuration; values that are empty become `none`, values with
//! unexpected characters or over 128 bytes become `other`, and after
//! [`MAX_IDENTITIES`] distinct `(host, server)` pairs every new pair becomes
//! `(other, other)`. `reason`, `outcome`, `state`, `kind`, `tier` and `cause` come
//! from closed sets.
//!
//! `mcp_reaper_trees` always carries one zero-valued series per state with
//! `host="none",server="none"`: `sum(mcp_reaper_trees{state="orphaned"})`
//! then exists (and is 0) before the first tree is seen, and the placeholder
//! adds nothing to any sum. Process metrics (`process_*`) keep the standard
//! unprefixed names every dashboard expects.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use prometheus::Registry;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder, core::Collector,
};

use crate::{config::Reason, event::GapCause, source::CounterSnapshot, trees::TreeState};

/// Prefix of every series this module defines.
pub const PREFIX: &str = "mcp_reaper_";
/// Content type of [`encode`]'s output (text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Most distinct `(host, server)` pairs before new ones collapse to `other`.
pub const MAX_IDENTITIES: usize = 256;
/// Longest label value kept as is.
const MAX_LABEL_LEN: usize = 128;
/// Placeholder host/server of the zero `mcp_reaper_trees` series.
pub const NONE: &str = "none";
/// What an out-of-bounds label value becomes.
pub const OTHER: &str = "other";

/// Tree states, in the order they are exported.
pub const STATES: [TreeState; 4] = [
    TreeState::Live,
    TreeState::Orphaned,
    TreeState::Suspect,
    TreeState::Unknown,
];
/// Event-source tiers `mcp_reaper_event_source_info` knows (others: `other`).
pub const TIERS: [&str; 3] = ["ebpf", "pidfd", "poll"];

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

/// How a reap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReapOutcome {
    /// Every member exited after SIGTERM.
    Terminated,
    /// SIGKILL was needed for at least one member.
    Killed,
    /// At least one member survived SIGKILL (D state); reported, not retried.
    Unkillable,
    /// The tree was gone before the reaper acted.
    Vanished,
    /// Observe mode: the tree would have been reaped.
    DryRun,
}

impl ReapOutcome {
    pub const ALL: [ReapOutcome; 5] = [
        ReapOutcome::Terminated,
        ReapOutcome::Killed,
        ReapOutcome::Unkillable,
        ReapOutcome::Vanished,
        ReapOutcome::DryRun,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminated => "terminated",
            Self::Killed => "killed",
            Self::Unkillable => "unkillable",
            Self::Vanished => "vanished",
            Self::DryRun => "dry_run",
        }
    }

    /// Whether the tree is gone because of (or despite) the reaper.
    fn is_success(self) -> bool {
        matches!(self, Self::Terminated | Self::Killed | Self::Vanished)
    }
}

/// Kinds of source events counted by `mcp_reaper_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Exec,
    Fork,
    Exit,
    Close,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [Self::Exec, Self::Fork, Self::Exit, Self::Close];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Close => "close",
        }
    }
}

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

/// Source counters as last synced, to turn absolute values into deltas.
#[derive(Default)]
struct SourceTotals {
    exec: u64,
    fork: u64,
    exit: u64,
    close: u64,
    lost: u64,
    decode_errors: u64,
}

type TreeKey = (String, String, &'static str);

/// Every series of the daemon. Share it behind an `Arc`.
pub struct Metrics {
    trees: IntGaugeVec,
    tree_processes: IntGaugeVec,
    tree_rss: IntGaugeVec,
    tree_pss: IntGaugeVec,
    tracked: IntGauge,
    degraded: IntGauge,
    source_info: IntGaugeVec,
    last_reap: prometheus::Gauge,
    oldest_orphan_age: prometheus::Gauge,
    orphans_detected: IntCounterVec,
    trees_reaped: IntCounterVec,
    reclaimed: IntCounter,
    events: IntCounterVec,
    lost: IntCounter,
    resyncs: IntCounter,
    reload_failures: IntCounter,
    respawns: IntCounterVec,
    decode_errors: IntCounter,
    lineage_gaps: IntCounterVec,
    detection_latency: Histogram,
    reap_duration: Histogram,
    /// `(host, server, state)` series set by the previous `set_trees`.
    tree_keys: Mutex<HashSet<TreeKey>>,
    identities: Mutex<HashSet<(String, String)>>,
    source_totals: Mutex<SourceTotals>,
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

/// A label value as exported: `none` when empty, `other` when it is too
/// long or holds characters a rule or package name would not.
fn bounded(value: &str) -> &str {
    if value.is_empty() {
        NONE
    } else if value.len() > MAX_LABEL_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@/+:".contains(&b))
    {
        OTHER
    } else {
        value
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
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
            source_info: gauge_vec(
                r,
                "event_source_info",
                "1 for the event-source tier in use, 0 for the others.",
                &["tier"],
            )?,
            last_reap: float_gauge(
                r,
                "last_successful_reap_timestamp_seconds",
                "Unix time of the last reap that left the tree gone (0: none yet).",
            )?,
            oldest_orphan_age: float_gauge(
                r,
                "oldest_orphan_age_seconds",
                "How long the oldest tree still orphaned has been orphaned (0: none).",
            )?,
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
            resyncs: counter(
                r,
                "resyncs_total",
                "Reconciliations of the process table with /proc after lost events.",
            )?,
            reload_failures: counter(
                r,
                "config_reload_failures_total",
                "Configuration reloads rejected (the previous configuration stays).",
            )?,
            respawns: counter_vec(
                r,
                "respawns_total",
                "Trees started to replace one just reaped, by host rule and server identity.",
                &["host", "server"],
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
            tree_keys: Mutex::new(HashSet::new()),
            identities: Mutex::new(HashSet::new()),
            source_totals: Mutex::new(SourceTotals::default()),
        };
        m.export_zeros();
        Ok(m)
    }

    fn export_zeros(&self) {
        for state in STATES {
            let s = state.as_str();
            self.trees.with_label_values(&[NONE, NONE, s]).set(0);
            self.tree_processes.with_label_values(&[s]).set(0);
            self.tree_rss.with_label_values(&[s]).set(0);
            self.tree_pss.with_label_values(&[s]).set(0);
        }
        for tier in TIERS {
            self.source_info.with_label_values(&[tier]).set(0);
        }
        for cause in GapCause::ALL {
            self.lineage_gaps.with_label_values(&[cause.as_str()]);
        }
        for reason in Reason::ALL {
            self.orphans_detected.with_label_values(&[reason.as_str()]);
            for outcome in ReapOutcome::ALL {
                self.trees_reaped
                    .with_label_values(&[reason.as_str(), outcome.as_str()]);
            }
        }
        for kind in EventKind::ALL {
            self.events.with_label_values(&[kind.as_str()]);
        }
    }

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
            self.trees
                .with_label_values(&[host.as_str(), server.as_str(), state])
                .set(saturating_i64(*n));
        }
        for stale in keys.iter().filter(|k| !counts.contains_key(*k)) {
            let (host, server, state) = stale;
            // Already gone is fine: the series just was not there.
            let _ = self
                .trees
                .remove_label_values(&[host.as_str(), server.as_str(), state]);
        }
        // The per-state placeholders stay, whatever the refresh held.
        for state in STATES {
            self.trees
                .with_label_values(&[NONE, NONE, state.as_str()])
                .add(0);
        }
        *keys = counts.into_keys().collect();
        for state in STATES {
            let s = state.as_str();
            let sum = by_state.remove(s).unwrap_or_default();
            self.tree_processes
                .with_label_values(&[s])
                .set(saturating_i64(sum.processes));
            self.tree_rss
                .with_label_values(&[s])
                .set(saturating_i64(sum.rss));
            self.tree_pss
                .with_label_values(&[s])
                .set(saturating_i64(sum.pss));
        }
        self.oldest_orphan_age.set(secs(oldest));
    }

    /// A tree was confirmed orphaned; `latency` runs from the host's release
    /// to the confirmation, when the release time is known.
    pub fn orphan_detected(&self, reason: Reason, latency: Option<Duration>) {
        self.orphans_detected
            .with_label_values(&[reason.as_str()])
            .inc();
        if let Some(l) = latency {
            self.detection_latency.observe(secs(l));
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
        self.trees_reaped
            .with_label_values(&[reason.as_str(), outcome.as_str()])
            .inc();
        if outcome == ReapOutcome::DryRun {
            return;
        }
        self.reap_duration.observe(secs(duration));
        if outcome.is_success() {
            self.reclaimed.inc_by(reclaimed_bytes);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.last_reap.set(secs(now));
        }
    }

    /// Counts one event the source counters do not cover (`close`).
    pub fn event(&self, kind: EventKind) {
        self.events.with_label_values(&[kind.as_str()]).inc();
    }

    /// Brings the event, loss and decode counters up to a source's
    /// cumulative counters. A value lower than the last one means a new
    /// source (a restart or fallback): its whole value is counted.
    pub fn observe_source_counters(&self, c: &CounterSnapshot) {
        let mut last = self
            .source_totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let delta = |prev: &mut u64, now: u64| {
            let d = if now >= *prev { now - *prev } else { now };
            *prev = now;
            d
        };
        let pairs = [
            (EventKind::Exec, delta(&mut last.exec, c.exec)),
            (EventKind::Fork, delta(&mut last.fork, c.fork)),
            (EventKind::Exit, delta(&mut last.exit, c.exit)),
            (EventKind::Close, delta(&mut last.close, c.close)),
        ];
        for (kind, d) in pairs {
            self.events.with_label_values(&[kind.as_str()]).inc_by(d);
        }
        self.lost.inc_by(delta(&mut last.lost, c.lost));
        self.decode_errors
            .inc_by(delta(&mut last.decode_errors, c.decode_errors));
    }

    /// `n` gaps in lineage of this cause.
    pub fn lineage_gap(&self, cause: GapCause, n: u64) {
        self.lineage_gaps
            .with_label_values(&[cause.as_str()])
            .inc_by(n);
    }

    /// One reconciliation with /proc happened.
    pub fn resync(&self) {
        self.resyncs.inc();
    }

    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.set(i64::from(degraded));
    }

    /// Marks `tier` (`ebpf`, `pidfd`, `poll`; anything else is `other`) as
    /// the one in use.
    pub fn set_tier(&self, tier: &str) {
        let active = if TIERS.contains(&tier) { tier } else { OTHER };
        for t in TIERS {
            self.source_info.with_label_values(&[t]).set(0);
        }
        self.source_info.with_label_values(&[active]).set(1);
    }

    pub fn set_tracked(&self, processes: usize) {
        self.tracked
            .set(i64::try_from(processes).unwrap_or(i64::MAX));
    }

    /// A tree for `(host, server)` started right after one was reaped.
    pub fn respawn(&self, host: &str, server: &str) {
        let (host, server) = self.identity(host, server);
        self.respawns
            .with_label_values(&[host.as_str(), server.as_str()])
            .inc();
    }

    pub fn config_reload_failed(&self) {
        self.reload_failures.inc();
    }
}

/// Everything in `registry`, in the text exposition format.
///
/// # Errors
/// When a collector produced an invalid metric family.
pub fn try_encode(registry: &Registry) -> prometheus::Result<String> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// [`try_encode`], with a failure rendered as a comment line.
#[must_use]
pub fn encode(registry: &Registry) -> String {
    try_encode(registry).unwrap_or_else(|e| format!("# mcp-reaper: encoding failed: {e}\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    fn fresh() -> (Registry, Metrics) {
        let r = Registry::new();
        let m = Metrics::new(&r, "1.2.3").unwrap();
        (r, m)
    }

    fn value(r: &Registry, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        for mf in r.gather() {
            if mf.name() != metric {
                continue;
            }
            for m in mf.get_metric() {
                let ok = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if ok && m.get_label().len() == labels.len() {
                    return Some(match mf.get_field_type() {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        MetricType::GAUGE => m.get_gauge().get_value(),
                        _ => f64::NAN,
                    });
                }
            }
        }
        None
    }

    #[test]
    fn names_labels_and_units_conform() {
        let (r, _m) = fresh();
        let forbidden = ["pid", "tgid", "session", "session_id", "cmdline", "command"];
        let allowed = [
            "host", "server", "reason", "outcome", "state", "kind", "tier", "version", "cause",
        ];
        let families = r.gather();
        assert!(families.len() > 20, "{} families", families.len());
        for mf in &families {
            let n = mf.name();
            if n.starts_with("process_") {
                continue;
            }
            assert!(n.starts_with(PREFIX), "{n}: prefix");
            match mf.get_field_type() {
                MetricType::COUNTER => assert!(n.ends_with("_total"), "{n}: counter"),
                _ => assert!(!n.ends_with("_total"), "{n}: non-counter ending _total"),
            }
            for bad in [
                "_ms",
                "_milliseconds",
                "_kb",
                "_mb",
                "_kilobytes",
                "_megabytes",
            ] {
                assert!(!n.contains(bad), "{n}: not a base unit");
            }
            if n.contains("memory") {
                assert!(n.ends_with("_bytes") || n.ends_with("_bytes_total"), "{n}");
            }
            // ("_age", not "age": lineage_gaps_total is a count.)
            if n.contains("latency") || n.contains("duration") || n.contains("_age") {
                assert!(n.ends_with("_seconds"), "{n}");
            }
            for m in mf.get_metric() {
                for l in m.get_label() {
                    assert!(!forbidden.contains(&l.name()), "{n}: label {}", l.name());
                    assert!(allowed.contains(&l.name()), "{n}: label {}", l.name());
                }
            }
        }
    }

    #[test]
    fn zeros_exported_from_the_start() {
        let (r, _m) = fresh();
        for reason in Reason::ALL {
            let reason = reason.as_str();
            let detected = "mcp_reaper_orphans_detected_total";
            assert_eq!(value(&r, detected, &[("reason", reason)]), Some(0.0));
            for outcome in ReapOutcome::ALL {
                let labels = [("reason", reason), ("outcome", outcome.as_str())];
                assert_eq!(
                    value(&r, "mcp_reaper_trees_reaped_total", &labels),
                    Some(0.0),
                    "{labels:?}"
                );
            }
        }
        for state in STATES {
            let s = state.as_str();
            let labels = [("host", NONE), ("server", NONE), ("state", s)];
            assert_eq!(value(&r, "mcp_reaper_trees", &labels), Some(0.0));
            for g in [
                "mcp_reaper_tree_processes",
                "mcp_reaper_tree_resident_memory_bytes",
                "mcp_reaper_tree_proportional_memory_bytes",
            ] {
                assert_eq!(value(&r, g, &[("state", s)]), Some(0.0), "{g}");
            }
        }
        for kind in EventKind::ALL {
            let labels = [("kind", kind.as_str())];
            assert_eq!(value(&r, "mcp_reaper_events_total", &labels), Some(0.0));
        }
        for tier in TIERS {
            let labels = [("tier", tier)];
            assert_eq!(
                value(&r, "mcp_reaper_event_source_info", &labels),
                Some(0.0)
            );
        }
        for cause in GapCause::ALL {
            let labels = [("cause", cause.as_str())];
            assert_eq!(
                value(&r, "mcp_reaper_lineage_gaps_total", &labels),
                Some(0.0),
                "{labels:?}"
            );
        }
        for n in [
            "mcp_reaper_lost_events_total",
            "mcp_reaper_degraded",
            "mcp_reaper_oldest_orphan_age_seconds",
            "mcp_reaper_last_successful_reap_timestamp_seconds",
        ] {
            assert_eq!(value(&r, n, &[]), Some(0.0), "{n}");
        }
    }

    #[test]
    fn text_encoding_has_build_info_and_histograms() {
        let (r, m) = fresh();
        m.orphan_detected(Reason::PeerReleased, Some(Duration::from_micros(300)));
        let text = encode(&r);
        assert!(
            text.contains("mcp_reaper_build_info{version=\"1.2.3\"} 1"),
            "{text}"
        );
        assert!(text.contains("mcp_reaper_detection_latency_seconds_bucket{le=\"0.0001\"} 0"));
        assert!(text.contains("mcp_reaper_detection_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("# TYPE mcp_reaper_reap_duration_seconds histogram"));
        assert!(
            text.contains("process_resident_memory_bytes"),
            "process collector"
        );
        assert!(Metrics::new(&r, "again").is_err(), "double registration");
    }

    #[test]
    fn set_trees_replaces_and_keeps_placeholders() {
        let (r, m) = fresh();
        let t = |host, server, state, orphaned_for| TreeSample {
            host,
            server,
            state,
            processes: 3,
            rss: 100,
            pss: 60,
            orphaned_for,
        };
        m.set_trees(&[
            t("claude-code", "server-everything", TreeState::Live, None),
            t("claude-code", "server-everything", TreeState::Live, None),
            t(
                "cursor",
                "fs",
                TreeState::Orphaned,
                Some(Duration::from_secs(7)),
            ),
            t("", "bad\"name", TreeState::Suspect, None),
        ]);
        let live = [
            ("host", "claude-code"),
            ("server", "server-everything"),
            ("state", "live"),
        ];
        assert_eq!(value(&r, "mcp_reaper_trees", &live), Some(2.0));
        let odd = [("host", NONE), ("server", OTHER), ("state", "suspect")];
        assert_eq!(value(&r, "mcp_reaper_trees", &odd), Some(1.0));
        let live_procs = value(&r, "mcp_reaper_tree_processes", &[("state", "live")]);
        assert_eq!(live_procs, Some(6.0));
        let orphan_pss = [("state", "orphaned")];
        let pss = value(&r, "mcp_reaper_tree_proportional_memory_bytes", &orphan_pss);
        assert_eq!(pss, Some(60.0));
        assert_eq!(
            value(&r, "mcp_reaper_oldest_orphan_age_seconds", &[]),
            Some(7.0)
        );

        m.set_trees(&[t("cursor", "fs", TreeState::Live, None)]);
        assert_eq!(
            value(&r, "mcp_reaper_trees", &live),
            None,
            "stale series removed"
        );
        let orphaned = [("host", "cursor"), ("server", "fs"), ("state", "orphaned")];
        assert_eq!(value(&r, "mcp_reaper_trees", &orphaned), None);
        let none_live = [("host", NONE), ("server", NONE), ("state", "live")];
        assert_eq!(value(&r, "mcp_reaper_trees", &none_live), Some(0.0));
        assert_eq!(
            value(&r, "mcp_reaper_tree_processes", &[("state", "live")]),
            Some(3.0)
        );
        assert_eq!(
            value(&r, "mcp_reaper_oldest_orphan_age_seconds", &[]),
            Some(0.0)
        );
    }

    #[test]
    fn identities_are_capped() {
        let (r, m) = fresh();
        for i in 0..MAX_IDENTITIES + 10 {
            m.respawn("host", &format!("server-{i}"));
        }
        let other = [("host", OTHER), ("server", OTHER)];
        assert_eq!(value(&r, "mcp_reaper_respawns_total", &other), Some(10.0));
        let n = r
            .gather()
            .iter()
            .find(|mf| mf.name() == "mcp_reaper_respawns_total")
            .map(|mf| mf.get_metric().len());
        assert_eq!(n, Some(MAX_IDENTITIES + 1));
    }

    #[test]
    fn source_counters_sync_by_delta_and_survive_resets() {
        let (r, m) = fresh();
        let snap = |exec, lost| CounterSnapshot {
            exec,
            fork: 0,
            exit: 0,
            close: 0,
            decode_errors: 0,
            lost,
            kernel_read_errors: 0,
        };
        m.observe_source_counters(&snap(10, 1));
        m.observe_source_counters(&snap(15, 1));
        m.observe_source_counters(&snap(4, 0)); // a new source started at zero
        m.event(EventKind::Close);
        let exec = value(&r, "mcp_reaper_events_total", &[("kind", "exec")]);
        assert_eq!(exec, Some(19.0));
        assert_eq!(value(&r, "mcp_reaper_lost_events_total", &[]), Some(1.0));
        assert_eq!(
            value(&r, "mcp_reaper_events_total", &[("kind", "close")]),
            Some(1.0)
        );
    }

    #[test]
    fn reaps_tiers_and_flags() {
        let (r, m) = fresh();
        m.tree_reaped(
            Reason::HostExited,
            ReapOutcome::Killed,
            4096,
            Duration::from_secs(3),
        );
        m.tree_reaped(
            Reason::HostExited,
            ReapOutcome::DryRun,
            1 << 20,
            Duration::ZERO,
        );
        let killed = [("reason", "host-exited"), ("outcome", "killed")];
        assert_eq!(
            value(&r, "mcp_reaper_trees_reaped_total", &killed),
            Some(1.0)
        );
        let reclaimed = value(&r, "mcp_reaper_reclaimed_memory_bytes_total", &[]);
        assert_eq!(reclaimed, Some(4096.0));
        let ts = value(&r, "mcp_reaper_last_successful_reap_timestamp_seconds", &[]);
        assert!(ts.is_some_and(|t| t > 1.0e9));

        m.set_tier("ebpf");
        m.set_tier("poll");
        assert_eq!(
            value(&r, "mcp_reaper_event_source_info", &[("tier", "poll")]),
            Some(1.0)
        );
        assert_eq!(
            value(&r, "mcp_reaper_event_source_info", &[("tier", "ebpf")]),
            Some(0.0)
        );
        m.set_degraded(true);
        assert_eq!(value(&r, "mcp_reaper_degraded", &[]), Some(1.0));
        m.set_tracked(42);
        m.resync();
        m.lineage_gap(GapCause::WatchFull, 2);
        m.lineage_gap(GapCause::WatchFull, 1);
        assert_eq!(
            value(
                &r,
                "mcp_reaper_lineage_gaps_total",
                &[("cause", "watch_full")]
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &r,
                "mcp_reaper_lineage_gaps_total",
                &[("cause", "decode_error")]
            ),
            Some(0.0)
        );
        m.config_reload_failed();
        assert_eq!(value(&r, "mcp_reaper_tracked_processes", &[]), Some(42.0));
        assert_eq!(value(&r, "mcp_reaper_resyncs_total", &[]), Some(1.0));
        assert_eq!(
            value(&r, "mcp_reaper_config_reload_failures_total", &[]),
            Some(1.0)
        );
    }
}
