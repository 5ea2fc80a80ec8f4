//! Durations as the file writes them: "500ms", "2s", "5m", "1h", "1d" and
//! sums such as "1h30m". No crate: the grammar is this small.
//!
//! Owns: parsing and formatting durations (formatting gives back text that
//! parses to the same value), serializing them, and checking a duration
//! field against its minimum.
//! Must never: accept a duration over a year, a fraction, a sign or a
//! missing unit, or panic on any input.

use std::time::Duration;

use serde::Serializer;
use toml::Spanned;

use super::errors::Errs;

/// Parses "500ms", "2s", "5m", "1h", "1d" and sums of them ("1h30m").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d), e.g. \"500ms\", \"2s\", \"1h30m\""
        )
    };
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let (num, tail) = rest.split_at(digits);
        let n: u128 = num.parse().map_err(|_| bad())?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(ms_per));
        rest = tail;
    }
    let max_ms: u128 = 365 * 86_400_000;
    if total > max_ms {
        return Err(format!("duration {text:?} is longer than a year"));
    }
    u64::try_from(total)
        .map(Duration::from_millis)
        .map_err(|_| bad())
}

/// Formats a duration the way [`parse_duration`] reads it.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, per) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= per {
            out.push_str(&format!("{}{unit}", rest / per));
            rest %= per;
        }
    }
    out
}

/// Serde `serialize_with` for a duration field.
pub(super) fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// A duration field: `default` when absent, and when invalid or under
/// `min` (the error is recorded at the value).
pub(super) fn duration_field(
    errs: &mut Errs,
    value: Option<Spanned<String>>,
    default: Duration,
    min: Duration,
    what: &str,
) -> Duration {
    let Some(value) = value else { return default };
    match parse_duration(value.get_ref()) {
        Ok(d) if d < min => {
            errs.at(
                value.span(),
                format!("{what} must be at least {}", format_duration(min)),
            );
            default
        }
        Ok(d) => d,
        Err(e) => {
            errs.at(value.span(), e);
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        for bad in [
            "",
            "2",
            "s",
            "2 s",
            "-1s",
            "1.5s",
            "2sec",
            "9999999999999s",
            "400d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for d in [0, 1, 999, 1000, 61_001, 90_061_001] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
