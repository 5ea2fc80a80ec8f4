//! What a soak measured, its verdict, and its one JSON line.
//!
//! Owns: `SoakResult` and the verdict rule: a pass is no false kill, no
//! leak and no harness error. Must never: do I/O.
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::stats::percentile;

/// Everything a run measured.
pub struct SoakResult {
    pub seed: u64,
    pub by_kind: BTreeMap<&'static str, u32>,
    pub false_kills: Vec<String>,
    pub leaks: Vec<String>,
    /// Let-go trees still alive past their allowance, let go while the
    /// daemon reported degraded tracking: withheld by design (incomplete
    /// evidence is never a release), reported, not failed.
    pub withheld: Vec<String>,
    /// The share of the daemon's answers that said degraded.
    pub degraded_share: f64,
    /// Harness errors and audit disagreements.
    pub problems: Vec<String>,
    pub reap_ms: Vec<u64>,
    /// Verdict and reap records of this run's trees, all checked.
    pub audit_reaps: u64,
    /// Audit lines that were not JSON (not counted against the daemon).
    pub audit_unparsable: u64,
    pub restarts: u32,
    pub release_calls: u32,
    pub start_retries: u32,
    pub burst_spawns: u64,
    pub pid_reuse: (u32, u32),
    pub lost_events: u64,
    pub resyncs: u64,
    pub peak_hwm_kib: u64,
    pub elapsed: Duration,
}

impl SoakResult {
    pub fn passed(&self) -> bool {
        self.false_kills.is_empty() && self.leaks.is_empty() && self.problems.is_empty()
    }
}

impl SoakResult {
    pub fn json_line(&self) -> String {
        let p = |q| percentile(&self.reap_ms, q);
        json!({
            "verdict": if self.passed() { "pass" } else { "fail" },
            "seed": self.seed,
            "lifecycles": self.by_kind.values().sum::<u32>(),
            "by_kind": self.by_kind,
            "false_kills": self.false_kills.len(),
            "leaks": self.leaks.len(),
            "withheld_while_degraded": self.withheld.len(),
            "degraded_share": (self.degraded_share * 1000.0).round() / 1000.0,
            "problems": self.problems.len(),
            "trees_let_go": self.reap_ms.len(),
            "reap_ms": { "p50": p(50.0), "p99": p(99.0), "max": self.reap_ms.last() },
            "audit_records_checked": self.audit_reaps,
            "audit_unparsable_lines": self.audit_unparsable,
            "daemon_restarts": self.restarts,
            "daemon_start_retries": self.start_retries,
            "release_calls": self.release_calls,
            "burst_spawns": self.burst_spawns,
            "pid_reuse": { "landed": self.pid_reuse.0, "tries": self.pid_reuse.1 },
            "lost_events": self.lost_events,
            "resyncs": self.resyncs,
            "daemon_peak_rss_kib": self.peak_hwm_kib,
            "seconds": self.elapsed.as_secs(),
            "first_problems": self.false_kills.iter().chain(&self.leaks).chain(&self.problems)
                .take(5).collect::<Vec<_>>(),
        })
        .to_string()
    }
}
