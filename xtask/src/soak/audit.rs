//! The audit log against the soak's own record: every `orphan-detected`
//! and every `reap` record that names a tree of this run (by its root, or
//! by a session of this run) must come after the soak let that tree go (by
//! its end action or a `release` call). An `orphan-detected` record is the
//! daemon's verdict, written when it is made: a verdict of "released" on a
//! tree its session still held is a false kill in the making, even if the
//! kill never lands.
//!
//! Owns: reading the audit log (JSON lines) and that comparison. Must
//! never: trust the log for ground truth; it is only checked.
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How far a record's timestamp may precede the soak's own clock reading of
/// the let-go (the two are read in different processes).
const CLOCK_SLACK_US: i64 = 50_000;

/// What the check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Records of this run's trees that were checked.
    pub records: u64,
    /// Records that name a tree before it was let go, or one never let go.
    pub wrong: Vec<String>,
    /// Lines that are not JSON (a daemon killed mid-write may leave one).
    pub unparsable: u64,
}

/// Checks the records of this run's trees: roots in `let_go`, or sessions
/// starting with `prefix`. Other trees (left by an earlier run that was
/// interrupted) are not this run's to judge.
pub fn check(log: &str, let_go: &HashMap<(u32, u64), SystemTime>, prefix: &str) -> Checked {
    let mut c = Checked::default();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            c.unparsable += 1;
            continue;
        };
        let event = v["event"].as_str().unwrap_or_default();
        if event != "reap" && event != "orphan-detected" {
            continue;
        }
        let root = v["tree"]["root"]["tgid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .zip(v["tree"]["root"]["start_ticks"].as_u64());
        let ours_by_session = v["tree"]["session_id"]
            .as_str()
            .is_some_and(|s| s.starts_with(prefix));
        let Some((pid, start)) = root else {
            if ours_by_session {
                c.wrong
                    .push(format!("a {event} record names no root: {line:.200}"));
            }
            continue;
        };
        let at = let_go.get(&(pid, start));
        if at.is_none() && !ours_by_session {
            continue;
        }
        c.records += 1;
        let ts = v["ts"].as_str().and_then(parse_rfc3339_us);
        match (at, ts) {
            (None, _) => c.wrong.push(format!(
                "{event} of {pid}@{start}, a tree the soak never let go: {line:.300}"
            )),
            (Some(at), Some(ts)) if ts + CLOCK_SLACK_US < micros(*at) => c.wrong.push(format!(
                "{event} of {pid}@{start} {} ms before the soak let it go",
                (micros(*at) - ts) / 1000
            )),
            (Some(_), None) => c.wrong.push(format!(
                "a {event} record without a readable ts: {line:.200}"
            )),
            (Some(_), Some(_)) => {}
        }
    }
    c
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
    fn a_verdict_or_a_reap_must_name_a_tree_let_go_before_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_223_845);
        let let_go = HashMap::from([((10, 99), at)]);
        let rec = |event: &str, pid: u32, session: &str, ts: &str| {
            format!(
                r#"{{"ts":"{ts}","id":"r-1","event":"{event}","tree":{{"root":{{"tgid":{pid},"start_ticks":99}},"session_id":"{session}"}}}}"#
            )
        };
        let ok = rec("reap", 10, "soak1-1", "2026-12-02T15:04:05.200000Z");
        let early_verdict = rec(
            "orphan-detected",
            10,
            "soak1-1",
            "2026-12-02T15:04:04.000000Z",
        );
        let stranger = rec("reap", 11, "soak1-2", "2026-12-02T15:04:06.000000Z");
        // A tree of this run under no session (or another's) is still checked.
        let no_session = rec("reap", 10, "elsewhere", "2026-12-02T15:04:04.000000Z");
        let other = r#"{"ts":"2026-12-02T15:04:00Z","id":"r-2","event":"decision"}"#;
        let c = check(
            &format!("{ok}\n{other}\n{{\"ts\":\"2026-"),
            &let_go,
            "soak1-",
        );
        assert_eq!((c.records, c.wrong.len(), c.unparsable), (1, 0, 1), "{c:?}");
        let c = check(
            &format!("{early_verdict}\n{stranger}\n{no_session}\n"),
            &let_go,
            "soak1-",
        );
        assert_eq!(c.records, 3);
        assert!(
            c.wrong[0].contains("orphan-detected of 10@99 1000 ms before"),
            "{c:?}"
        );
        assert!(c.wrong[1].contains("never let go"), "{c:?}");
        assert!(c.wrong[2].contains("reap of 10@99 1000 ms before"), "{c:?}");
        // Another run's session is not this run's to judge.
        assert_eq!(check(&stranger, &let_go, "soak2-"), Checked::default());
    }
}
