//! The command line's values: durations, byte sizes, addresses, each
//! checked when the command line is read, so that a bad value is a usage
//! error (exit 2, with what was expected) before anything starts.
//!
//! Owns: the grammar and limits of each value (units as the configuration
//! file writes them), and how the defaults read in `--help`.
//! Must never: accept a value that would only fail once the daemon has
//! started (a ring buffer size the kernel refuses), or read anything.

use std::{net::SocketAddr, time::Duration};

use crate::config::{format_bytes, parse_bytes, parse_duration};

/// Shortest poll interval: below it the daemon would spend its time
/// reading /proc.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Longest poll interval, as for every duration of the configuration.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

/// A poll interval: "500ms", "2s", "1m" (as in the configuration file), or
/// a number of seconds ("0.5", "1"); at least [`MIN_POLL_INTERVAL`].
pub fn poll_interval(text: &str) -> Result<Duration, String> {
    let d = match parse_duration(text) {
        Ok(d) => d,
        Err(unit_error) => match text.trim().parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => {
                Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?
            }
            _ => return Err(unit_error),
        },
    };
    if d < MIN_POLL_INTERVAL {
        return Err("must be at least 10ms".to_owned());
    }
    if d > MAX_POLL_INTERVAL {
        return Err("must be at most a year".to_owned());
    }
    Ok(d)
}

/// A size in bytes: "4096", "256KiB", "64 MiB".
pub fn size(text: &str) -> Result<u64, String> {
    parse_bytes(text)
}

/// The size of a memory page here (4 KiB on most machines).
#[must_use]
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The eBPF ring buffer's size: the kernel takes only a power of two of at
/// least a page (and at most 2 GiB, the largest power of two in `u32`).
pub fn ring_bytes(text: &str) -> Result<u32, String> {
    ring_bytes_with_page(text, page_size())
}

fn ring_bytes_with_page(text: &str, page: u64) -> Result<u32, String> {
    let n = parse_bytes(text)?;
    if !n.is_power_of_two() || n < page {
        return Err(format!(
            "must be a power of two of at least one page ({}), e.g. 1MiB or 4MiB; {} is not",
            format_bytes(page),
            format_bytes(n),
        ));
    }
    u32::try_from(n).map_err(|_| "must be at most 2 GiB".to_owned())
}

/// Where the metrics endpoint listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Off,
    At(SocketAddr),
}

/// `IP:PORT` or `off`.
pub fn listen(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen::Off);
    }
    text.parse()
        .map(Listen::At)
        .map_err(|_| "expected IP:PORT (e.g. 127.0.0.1:9863, [::1]:9863) or `off`".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn poll_intervals_take_units_or_seconds() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("2s", ms(2000)),
            ("1m", ms(60_000)),
            ("10ms", ms(10)),
            ("1", ms(1000)),
            ("0.25", ms(250)),
            ("0.01", ms(10)),
        ] {
            assert_eq!(poll_interval(text), Ok(want), "{text}");
        }
        for bad in [
            "0",
            "5ms",
            "0.001",
            "-1",
            "NaN",
            "inf",
            "1e400",
            "2 seconds",
            "",
            "400d",
        ] {
            assert!(poll_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ring_sizes_are_powers_of_two_of_at_least_a_page() {
        for (text, want) in [
            ("4096", 4096),
            ("4KiB", 4096),
            ("1MiB", 1 << 20),
            ("1 MiB", 1 << 20),
            ("2GiB", 1 << 31),
        ] {
            assert_eq!(ring_bytes_with_page(text, 4096), Ok(want), "{text}");
        }
        for bad in [
            "3000000", "1000KiB", "2048", "0", "1", "4GiB", "3MiB", "lots",
        ] {
            assert!(ring_bytes_with_page(bad, 4096).is_err(), "{bad}");
        }
        // The page is this machine's: 16 KiB pages refuse 4 KiB.
        assert!(ring_bytes_with_page("4KiB", 16 << 10).is_err());
        let e = ring_bytes_with_page("3000000", 4096).unwrap_err();
        assert!(e.contains("power of two") && e.contains("4 KiB"), "{e}");
    }

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!(listen("off"), Ok(Listen::Off));
        assert_eq!(
            listen("127.0.0.1:9863"),
            Ok(Listen::At("127.0.0.1:9863".parse().unwrap()))
        );
        assert!(listen("[::1]:1").is_ok());
        for bad in ["localhost:9863", "9863", "", "OFF", "127.0.0.1"] {
            assert!(listen(bad).is_err(), "{bad}");
        }
    }
}
