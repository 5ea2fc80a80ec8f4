//! The audit log against the soak's own record: every `reap` record must
//! name, as its root, a tree the soak had let go (by its end action or a
//! `release` call) before the record was written.
//!
//! Owns: reading the audit log (JSON lines) and that comparison. Must
//! never: trust the log for ground truth; it is only checked.
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How far a reap record's timestamp may precede the soak's own clock
/// reading of the let-go (the two are read in different processes).
const CLOCK_SLACK_US: i64 = 50_000;

/// Reap records of this run's sessions (`prefix`) that name a tree the soak
/// had not let go; the number of this run's reap records. Other sessions'
/// trees (left by an earlier run that was interrupted) are not this run's
/// to judge.
pub fn check(
    log: &str,
    let_go: &HashMap<(u32, u64), SystemTime>,
    prefix: &str,
) -> (u64, Vec<String>) {
    let mut reaps = 0;
    let mut wrong = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            wrong.push(format!("an audit line is not JSON: {line:.120}"));
            continue;
        };
        let ours = v["tree"]["session_id"]
            .as_str()
            .is_some_and(|s| s.starts_with(prefix));
        if v["event"] != "reap" || !ours {
            continue;
        }
        reaps += 1;
        let root = (
            v["tree"]["root"]["tgid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok()),
            v["tree"]["root"]["start_ticks"].as_u64(),
        );
        let (Some(pid), Some(start)) = root else {
            wrong.push(format!("a reap record names no root: {line:.200}"));
            continue;
        };
        let ts = v["ts"].as_str().and_then(parse_rfc3339_us);
        match (let_go.get(&(pid, start)), ts) {
            (None, _) => wrong.push(format!(
                "reaped {pid}@{start}, a tree the soak never let go: {line:.300}"
            )),
            (Some(at), Some(ts)) if ts + CLOCK_SLACK_US < micros(*at) => wrong.push(format!(
                "reaped {pid}@{start} {} ms before the soak let it go",
                (micros(*at) - ts) / 1000
            )),
            (Some(_), None) => {
                wrong.push(format!("a reap record without a readable ts: {line:.200}"))
            }
            (Some(_), Some(_)) => {}
        }
    }
    (reaps, wrong)
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (UTC, as the audit log writes it) in
/// microseconds since the epoch.
fn parse_rfc3339_us(ts: &str) -> Option<i64> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac_us = format!("{frac:0<6}").get(..6)?.parse::<i64>().ok()?;
    let secs = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs * 1_000_000 + frac_us)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_the_audit_timestamps() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_us("2026-12-02T15:04:05.123456Z"),
            Some(1_796_223_845_123_456)
        );
        assert_eq!(
            parse_rfc3339_us("2000-03-01T00:00:00.5Z"),
            Some(951_868_800_500_000)
        );
        assert_eq!(parse_rfc3339_us("yesterday"), None);
    }

    #[test]
    fn a_reap_must_name_a_tree_let_go_before_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_223_845);
        let let_go = HashMap::from([((10, 99), at)]);
        let rec = |pid: u32, ts: &str| {
            format!(
                r#"{{"ts":"{ts}","id":"r-1","event":"reap","tree":{{"root":{{"tgid":{pid},"start_ticks":99}},"session_id":"soak1-{pid}"}}}}"#
            )
        };
        let ok = rec(10, "2026-12-02T15:04:05.200000Z");
        let early = rec(10, "2026-12-02T15:04:04.000000Z");
        let stranger = rec(11, "2026-12-02T15:04:06.000000Z");
        let other = r#"{"ts":"2026-12-02T15:04:00Z","id":"r-2","event":"decision"}"#;
        assert_eq!(
            check(&format!("{ok}\n{other}\n"), &let_go, "soak1-"),
            (1, vec![])
        );
        let (n, wrong) = check(&format!("{early}\n{stranger}\n"), &let_go, "soak1-");
        assert_eq!(n, 2);
        assert!(wrong[0].contains("before the soak let it go"), "{wrong:?}");
        assert!(wrong[1].contains("never let go"), "{wrong:?}");
        // Another run's session is not this run's to judge.
        assert_eq!(check(&stranger, &let_go, "soak2-"), (0, vec![]));
    }
}
