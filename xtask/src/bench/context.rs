//! What every benchmark records about its run: the command line that
//! reproduces it, the date, the kernel, the machine, and whether other work
//! loaded the machine when it started.
//!
//! Owns: reading these once per run (from the environment and /proc) and the
//! lines every section starts with. Must never: start, stop or measure
//! anything.
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// What every benchmark needs to know and to record.
pub struct Context {
    /// The release build of the daemon.
    pub daemon_bin: PathBuf,
    /// The command line that reproduces this run.
    pub command_line: String,
    pub date: String,
    pub kernel: String,
    pub machine: String,
    /// Set when other work loaded the machine at the start.
    pub busy_note: Option<String>,
}

impl Context {
    /// The context of this process's run, for the daemon built at `daemon_bin`.
    pub fn of_this_run(daemon_bin: PathBuf) -> Self {
        Self {
            daemon_bin,
            command_line: command_line(),
            date: utc_date(SystemTime::now()),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            machine: machine(),
            busy_note: busy_note(),
        }
    }

    /// The lines every section starts with: how to reproduce, where, when.
    pub fn header(&self) -> String {
        let mut header = format!(
            "- Command: `{}`\n- Date: {}\n- Kernel: {}\n- Machine: {}\n",
            self.command_line, self.date, self.kernel, self.machine
        );
        if let Some(note) = &self.busy_note {
            header.push_str(&format!("\n**Note:** {note}\n"));
        }
        header
    }
}

fn command_line() -> String {
    let mut line = String::from("cargo xtask");
    for arg in std::env::args().skip(1) {
        line.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
            line.push_str(&format!("'{}'", arg.replace('\'', r"'\''")));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = read_trimmed("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpu}, {cores} cores available, load average at start {}",
        load.join(" ")
    )
}

/// A warning when the 1-minute load average is at least half the cores:
/// wall-time comparisons are then dominated by other work.
fn busy_note() -> Option<String> {
    let load: f64 = read_trimmed("/proc/loadavg")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cores_f = f64::from(u32::try_from(cores).unwrap_or(u32::MAX));
    (load >= cores_f / 2.0).then(|| {
        format!(
            "other work loaded the machine (1-minute load average {load:.2} on {cores} cores) \
             when this run started; wall times and their ratio are noisy."
        )
    })
}

/// `YYYY-MM-DD` in UTC (civil-from-days, proleptic Gregorian).
fn utc_date(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_date_known_days() {
        let at = |secs| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_795_564_800), "2026-11-25");
        assert_eq!(at(1_795_651_199), "2026-11-25");
    }
}
