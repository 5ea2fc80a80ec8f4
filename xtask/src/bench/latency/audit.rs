//! The daemon's audit log as the latency benchmark reads it: per tree root
//! the first `orphan-detected` record (its timestamp and reason) and the
//! first `reap` record (`timings.reaped_ms` and outcome), and a tier's
//! figures from them.
//!
//! Owns: reading audit lines and their timestamps (no JSON dependency).
//! Must never: write to the log or start anything; a missing log reads as
//! empty.
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// After the last release: how long to wait for the last reap record.
const REAP_TIMEOUT: Duration = Duration::from_secs(30);

/// The value after `"key":`, up to the next `,` or `}`; strings unquoted.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    }
    rest.split([',', '}']).next()
}

/// `2024-05-01T12:34:56.789012Z` (any fraction of 1 to 9 digits) to
/// microseconds since the epoch.
fn parse_ts_us(ts: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    // `YYYY-MM-DDTHH:MM:SS.<fraction>Z`; the daemon writes six digits.
    let frac = ts.get(20..)?.strip_suffix('Z')?;
    if ts.get(19..20)? != "." || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let frac_us = frac.parse::<i64>().ok()? * 10_i64.pow(9 - frac.len() as u32) / 1000;
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1_000_000 + frac_us)
}

#[derive(Default)]
struct TreeResult {
    detected_us: Option<i64>,
    reaped_ms: Option<u64>,
    outcome: Option<String>,
    reason: Option<String>,
}

/// Per root pid: the first `orphan-detected` and the first `reap` record.
fn read_audit(path: &Path) -> HashMap<u32, TreeResult> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: HashMap<u32, TreeResult> = HashMap::new();
    for line in text.lines() {
        let Some(root) = line
            .find("\"root\":")
            .and_then(|i| json_field(&line[i..], "tgid"))
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let entry = out.entry(root).or_default();
        match json_field(line, "event") {
            Some("orphan-detected") if entry.detected_us.is_none() => {
                entry.detected_us = json_field(line, "ts").and_then(parse_ts_us);
                entry.reason = json_field(line, "reason").map(str::to_owned);
            }
            Some("reap") if entry.reaped_ms.is_none() => {
                entry.reaped_ms = json_field(line, "reaped_ms").and_then(|v| v.parse().ok());
                entry.outcome = json_field(line, "outcome").map(str::to_owned);
            }
            _ => {}
        }
    }
    out
}

/// One tier's figures, for the summary.
pub(super) struct TierResult {
    pub(super) source: &'static str,
    pub(super) trees: usize,
    pub(super) discovery: Duration,
    /// Detection latency per detected tree, in microseconds.
    pub(super) detect_us: Vec<i64>,
    pub(super) reap_ms: Vec<u64>,
    pub(super) reasons: Vec<(String, usize)>,
    pub(super) outcomes: Vec<(String, usize)>,
}

fn tally(items: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut map: HashMap<String, usize> = HashMap::new();
    for i in items {
        *map.entry(i).or_default() += 1;
    }
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort();
    v
}

/// Until every one of `pids` has a `reap` record, or `REAP_TIMEOUT`.
pub(super) fn wait_reaped(audit: &Path, pids: &[u32]) {
    let deadline = Instant::now() + REAP_TIMEOUT;
    let mut results = read_audit(audit);
    while Instant::now() < deadline
        && !pids
            .iter()
            .all(|p| results.get(p).is_some_and(|r| r.reaped_ms.is_some()))
    {
        std::thread::sleep(Duration::from_millis(200));
        results = read_audit(audit);
    }
}

/// Detection and reap figures of `pids` (closed at `closed_us`) from the audit log.
pub(super) fn tier_result(
    source: &'static str,
    audit: &Path,
    pids: &[u32],
    closed_us: &[i64],
    discovery: Duration,
) -> TierResult {
    let results = read_audit(audit);
    let mut detect_us = Vec::new();
    let mut reap_ms = Vec::new();
    for (pid, closed) in pids.iter().zip(closed_us) {
        if let Some(r) = results.get(pid) {
            if let Some(d) = r.detected_us {
                detect_us.push(d - closed);
            }
            if let Some(ms) = r.reaped_ms {
                reap_ms.push(ms);
            }
        }
    }
    let ours = || pids.iter().filter_map(|p| results.get(p));
    TierResult {
        source,
        trees: pids.len(),
        discovery,
        detect_us,
        reap_ms,
        reasons: tally(ours().filter_map(|r| r.reason.clone())),
        outcomes: tally(ours().filter_map(|r| r.outcome.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_audit_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("a.jsonl");
        let lines = "{\"ts\":\"2026-11-25T18:00:00.123456Z\",\"id\":\"x-1\",\"event\":\"orphan-detected\",\"tree\":{\"root\":{\"tgid\":42,\"start_ticks\":7},\"server\":\"fake\"},\"reason\":\"peer-released\"}\n\
                     {\"ts\":\"2026-11-25T18:00:00.200Z\",\"id\":\"x-2\",\"event\":\"reap\",\"tree\":{\"root\":{\"tgid\":42,\"start_ticks\":7}},\"outcome\":\"Terminated\",\"timings\":{\"reaped_ms\":12}}\n\
                     {\"ts\":\"2026-11-25T18:00:00.200Z\",\"id\":\"x-3\",\"event\":\"startup\",\"why\":\"\"}\n";
        std::fs::write(&path, lines).unwrap_or_else(|e| panic!("{e}"));
        let r = read_audit(&path);
        let t = r.get(&42).unwrap_or_else(|| panic!("root 42 missing"));
        assert_eq!(t.reaped_ms, Some(12));
        assert_eq!(t.outcome.as_deref(), Some("Terminated"));
        assert_eq!(t.reason.as_deref(), Some("peer-released"));
        assert_eq!(
            t.detected_us,
            Some(1_795_564_800_000_000 + 18 * 3_600_000_000 + 123_456)
        );
    }

    #[test]
    fn timestamps_of_any_precision() {
        let base = 1_795_564_800_000_000 + 18 * 3_600_000_000;
        assert_eq!(parse_ts_us("2026-11-25T18:00:00.5Z"), Some(base + 500_000));
        assert_eq!(
            parse_ts_us("2026-11-25T18:00:00.123Z"),
            Some(base + 123_000)
        );
        assert_eq!(
            parse_ts_us("2026-11-25T18:00:00.123456789Z"),
            Some(base + 123_456)
        );
        for bad in [
            "2026-11-25T18:00:00Z",
            "2026-11-25T18:00:00.Z",
            "2026-11-25T18:00:00.1234567890Z",
            "2026-11-25T18:00:00.12x",
            "",
        ] {
            assert_eq!(parse_ts_us(bad), None, "{bad}");
        }
    }
}
