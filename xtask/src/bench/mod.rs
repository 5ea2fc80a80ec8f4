//! `cargo xtask bench [NAME...]`: runs benchmarks and records each one as a
//! `## <title>` section of BENCHMARKS.md, replacing that section and keeping
//! the others.
//!
//! To add a benchmark: a module with an `Args` struct (flattened into
//! [`BenchArgs`]) and a `run(&Context, &Args) -> Result<Section>`, a variant
//! of [`BenchName`], and an arm in [`run_one`].
mod churn_memory;
mod daemon;
mod latency;
mod report;
mod scan;
mod scrape;
mod spawn_storm;

pub use latency::{WORKER_COMMAND, storm_worker};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::cmd::{cargo, is_root, repo_root, target_dir};
use crate::setup::{self, Scope};

pub use report::Section;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Benchmarks to run (default: all).
    #[arg(value_enum)]
    names: Vec<BenchName>,
    #[command(flatten)]
    spawn_storm: spawn_storm::Args,
    #[command(flatten)]
    scan: scan::Args,
    #[command(flatten)]
    latency: latency::Args,
    #[command(flatten)]
    scrape: scrape::Args,
    #[command(flatten)]
    churn_memory: churn_memory::Args,
    /// File the sections are written to (default: BENCHMARKS.md at the repository root).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum BenchName {
    /// Sequential fork+exec+wait of /bin/true with and without the daemon.
    SpawnStorm,
    /// `mcp-reaper scan --json` vs a `ps aux | grep | wc -l` pipeline, 2000 extra processes.
    Scan,
    /// Orphan detection and reap latency per tier (eBPF, poll, eBPF with a chained host), and a spawn storm with live trees.
    Latency,
    /// `/metrics` scrape latency, daemon memory and CPU at rest with 1000 live trees among 10000 processes.
    Scrape,
    /// Daemon VmRSS at rest and after 200,000 short process lifetimes (and some fake server trees).
    ChurnMemory,
}

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

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let names = if args.names.is_empty() {
        BenchName::value_variants().to_vec()
    } else {
        args.names.clone()
    };
    if !is_root() {
        bail!("the benchmarks run the daemon, which needs root: run `cargo xtask bench` as root");
    }
    setup::run_or_fail(Scope::Toolchain)?;
    cargo(&["build", "--release", "--package", "mcp-reaper"]).run()?;
    let ctx = Context {
        daemon_bin: target_dir().join("release").join("mcp-reaper"),
        command_line: command_line(),
        date: utc_date(SystemTime::now()),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        machine: machine(),
        busy_note: busy_note(),
    };
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| repo_root().join("BENCHMARKS.md"));
    let mut missed = Vec::new();
    for name in names {
        let section = run_one(&ctx, args, name)?;
        report::write_section(&path, &section)
            .with_context(|| format!("write {}", path.display()))?;
        println!("wrote section \"{}\" of {}", section.title, path.display());
        missed.extend(section.missed_targets.iter().cloned());
    }
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", missed.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_one(ctx: &Context, args: &BenchArgs, name: BenchName) -> Result<Section> {
    match name {
        BenchName::SpawnStorm => spawn_storm::run(ctx, &args.spawn_storm),
        BenchName::Scan => scan::run(ctx, &args.scan),
        BenchName::Latency => latency::run(ctx, &args.latency),
        BenchName::Scrape => scrape::run(ctx, &args.scrape),
        BenchName::ChurnMemory => churn_memory::run(ctx, &args.churn_memory),
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
