//! The text of an audit record's fields: escaped and bounded free text,
//! timestamps and record ids.
//!
//! Owns: the escaping that keeps a hostile command line on its own line
//! (`bounded_text`), RFC 3339 formatting without a date crate, and the
//! per-run id prefix and counter.
//! Must never: let a control, line-separator or direction-override
//! character through unescaped, cut text inside a character, or panic when
//! /dev/urandom or the clock misbehaves. It knows no record type.
//!
//! Timestamps are RFC 3339 UTC with microseconds, formatted here from
//! `SystemTime`. Record ids are `<run>-<counter>`: `run` is 8 random hex
//! digits read from /dev/urandom once per daemon run, the counter starts at
//! 1, so ids are unique within a run and across runs.

use std::{
    fmt::Write as _,
    fs::File,
    io::Read as _,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Escapes control, line-separator and direction-override characters as
/// `\n`, `\u{..}` (backslashes are left alone, so text that
/// `procscan::display_cmdline` already escaped is unchanged) and cuts the
/// result at `max` bytes on a character boundary, marking the cut.
pub fn bounded_text(s: &str, max: usize) -> String {
    const MARK: &str = "...[truncated]";
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let before = out.len();
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            while out.len() + MARK.len() > max.max(MARK.len()) {
                match out.pop() {
                    Some(_) => {}
                    None => break,
                }
            }
            out.push_str(MARK);
            break;
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `2024-05-01T12:34:56.789012Z` for `t` (times before 1970 print as the
/// epoch).
pub fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        if random.is_err() {
            // No /dev/urandom (odd chroot): the pid and the clock still
            // tell runs apart.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            b = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
        }
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    })
}

/// A fresh record id, unique within this run.
pub fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        run_prefix(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
