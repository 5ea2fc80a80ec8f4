//! Scan vs ps pipeline: `mcp-reaper scan --json` against the one-liner
//! people use to count MCP servers,
//! `ps aux | grep -E 'mcp-server-(filesystem|github)' | wc -l`, on a host
//! with thousands of extra processes. The extra processes are `sleep`
//! children of this benchmark (a few renamed to look like MCP servers); they
//! are killed and reaped when it ends, also on error. Rounds alternate which
//! command goes first, and the medians are compared. Then `scan_daemon`
//! times `scan --json` answered by a running daemon that follows many live
//! trees, side by side with the standalone scan and the pipeline.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::context::Context;
use super::report::Section;
use super::scan_daemon::{self, DaemonRun};
use super::shared::{count_processes, median};

const TITLE: &str = "Scan vs ps pipeline";
const SCAN_ARGS: &[&str] = &["scan", "--json", "--standalone"];
const PIPELINE: &str = "ps aux | grep -E 'mcp-server-(filesystem|github)' | wc -l";
const SHELL: &str = "/bin/sh";
/// Renames its `sleep` with bash's `exec -a` so `ps aux` shows the name.
const BASH: &str = "/bin/bash";
const FAKE_SERVERS: &[&str] = &["mcp-server-filesystem", "mcp-server-github"];
/// How many of the extra processes look like MCP servers.
const FAKE_COUNT: u32 = 10;
const SLEEP_SECS: &str = "600";
/// Scan median / pipeline median must not exceed this.
const TARGET_RATIO: f64 = 1.0;

#[derive(clap::Args)]
#[command(next_help_heading = "scan")]
#[group(id = "scan_args")]
pub struct Args {
    /// Extra processes (`sleep`) kept running during the scan benchmark.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(FAKE_COUNT as i64..))]
    extra_processes: u32,
    /// Runs of each command in the scan benchmark, alternating (at least 2).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(2..))]
    scan_rounds: u32,
    /// Live fake server trees the daemon follows while it answers `scan`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    scan_trees: u32,
    /// Daemon-answered `scan --json` calls timed (p50 and p99).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..))]
    scan_daemon_calls: u32,
}

/// The extra processes; dropping it kills and reaps every one.
struct Crowd {
    children: Vec<Child>,
}

impl Crowd {
    fn start(count: u32) -> Result<Self> {
        let mut crowd = Self {
            children: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
        };
        for i in 0..count {
            let mut cmd = if i < FAKE_COUNT {
                let name = FAKE_SERVERS
                    .get(usize::try_from(i).unwrap_or(0) % FAKE_SERVERS.len())
                    .copied()
                    .unwrap_or("mcp-server-filesystem");
                let mut cmd = Command::new(BASH);
                cmd.args(["-c", &format!("exec -a {name} sleep {SLEEP_SECS}")]);
                cmd
            } else {
                let mut cmd = Command::new("sleep");
                cmd.arg(SLEEP_SECS);
                cmd
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start extra process {} of {count}", i + 1))?;
            crowd.children.push(child);
        }
        Ok(crowd)
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Subject {
    Scan,
    Pipeline,
}

impl Subject {
    fn label(self) -> &'static str {
        match self {
            Self::Scan => "`mcp-reaper scan --json --standalone`",
            // `\|`: a bare pipe splits a Markdown table cell, even in code.
            Self::Pipeline => r"`ps aux \| grep -E … \| wc -l`",
        }
    }

    fn command(self, ctx: &Context) -> Command {
        match self {
            Self::Scan => {
                let mut cmd = Command::new(&ctx.daemon_bin);
                cmd.args(SCAN_ARGS);
                cmd
            }
            Self::Pipeline => {
                let mut cmd = Command::new(SHELL);
                cmd.args(["-c", PIPELINE]);
                cmd
            }
        }
    }

    fn describe(self, ctx: &Context) -> String {
        match self {
            Self::Scan => format!("{} {}", ctx.daemon_bin.display(), SCAN_ARGS.join(" ")),
            Self::Pipeline => format!("{SHELL} -c \"{PIPELINE}\""),
        }
    }

    /// One run with stdout to /dev/null, timed wall-clock.
    fn time(self, ctx: &Context) -> Result<Duration> {
        let start = Instant::now();
        let status = self
            .command(ctx)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("run `{}`", self.describe(ctx)))?;
        let wall = start.elapsed();
        if !status.success() {
            bail!("`{}` exited with {status}", self.describe(ctx));
        }
        Ok(wall)
    }

    /// One untimed run whose stdout is returned.
    fn output(self, ctx: &Context) -> Result<String> {
        let out = self
            .command(ctx)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run `{}`", self.describe(ctx)))?;
        if !out.status.success() {
            bail!(
                "`{}` exited with {}: {}",
                self.describe(ctx),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// What one untimed run of each command saw, for the record.
struct Check {
    pipeline_count: String,
    scan_processes: Option<u64>,
    scan_json_bytes: usize,
}

struct Stats {
    median: Duration,
    p90: Duration,
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The number after `"processes_scanned":` in the scan's JSON.
fn json_number(json: &str, key: &str) -> Option<u64> {
    let rest = json.split_once(&format!("\"{key}\":"))?.1.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub fn run(ctx: &Context, args: &Args) -> Result<Section> {
    let Some(ps) = find_in_path("ps") else {
        bail!(
            "the scan benchmark compares against `ps aux`, but `ps` is not on PATH: \
             install the procps package (Debian/Ubuntu: `apt-get install procps`)"
        );
    };
    for program in [SHELL, BASH] {
        if !std::path::Path::new(program).is_file() {
            bail!("the scan benchmark needs {program}, which does not exist");
        }
    }
    println!(
        "scan: {} extra processes, {} runs each of `{}` and `{PIPELINE}` (ps: {})",
        args.extra_processes,
        args.scan_rounds,
        SCAN_ARGS.join(" "),
        ps.display()
    );
    let crowd = Crowd::start(args.extra_processes)?;
    // Let the renamed ones reach their `exec -a`.
    std::thread::sleep(Duration::from_millis(500));
    let procs_before = count_processes()?;

    // Warm the page cache; also checks both commands work. Not timed.
    let pipeline_count = Subject::Pipeline.output(ctx)?.trim().to_owned();
    let scan_json = Subject::Scan.output(ctx)?;
    let check = Check {
        pipeline_count,
        scan_processes: json_number(&scan_json, "processes_scanned"),
        scan_json_bytes: scan_json.len(),
    };

    let mut scan = Vec::new();
    let mut pipeline = Vec::new();
    for i in 0..args.scan_rounds {
        let order = if i % 2 == 0 {
            [Subject::Scan, Subject::Pipeline]
        } else {
            [Subject::Pipeline, Subject::Scan]
        };
        for subject in order {
            let wall = subject.time(ctx)?;
            match subject {
                Subject::Scan => scan.push(wall),
                Subject::Pipeline => pipeline.push(wall),
            }
        }
        println!(
            "round {}/{}: scan {:.1} ms, pipeline {:.1} ms",
            i + 1,
            args.scan_rounds,
            ms(scan.last().copied().unwrap_or_default()),
            ms(pipeline.last().copied().unwrap_or_default()),
        );
    }
    let procs_after = count_processes()?;
    drop(crowd);
    let daemon = scan_daemon::run(
        ctx,
        args.scan_trees,
        args.scan_daemon_calls,
        args.scan_rounds,
        PIPELINE,
    )?;
    let mut section = summarize(
        ctx,
        args,
        &check,
        (procs_before, procs_after),
        &scan,
        &pipeline,
    );
    add_daemon(&mut section, &daemon);
    Ok(section)
}

/// The daemon half's table and target into `section`.
fn add_daemon(section: &mut Section, daemon: &DaemonRun) {
    let missed = scan_daemon::write(&mut section.body, daemon);
    section.missed_targets.extend(missed);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(values: &[Duration]) -> Option<Stats> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let median = median(sorted.clone())?;
    // Nearest rank: the smallest value with at least 90% at or below it.
    let rank = (sorted.len() * 9).div_ceil(10).max(1);
    let p90 = *sorted.get(rank - 1)?;
    Some(Stats { median, p90 })
}

fn summarize(
    ctx: &Context,
    args: &Args,
    check: &Check,
    procs: (usize, usize),
    scan: &[Duration],
    pipeline: &[Duration],
) -> Section {
    let mut body = ctx.header();
    let _ = writeln!(
        body,
        "\n{} extra `sleep` processes ran during the measurement ({FAKE_COUNT} of them renamed \
         with bash's `exec -a` to `{}`), so the machine had {} processes when timing started \
         and {} when it ended. Each round runs `{}` and `{SHELL} -c \"{PIPELINE}\"` once, \
         stdout to /dev/null, timed wall-clock from spawn to exit; the order alternates \
         between rounds; {} rounds, after one untimed run of each.\n",
        args.extra_processes,
        FAKE_SERVERS.join("` / `"),
        procs.0,
        procs.1,
        SCAN_ARGS.join(" ").replace("scan", "mcp-reaper scan"),
        args.scan_rounds,
    );
    let _ = writeln!(
        body,
        "The untimed runs: the pipeline printed `{}`; the scan read {} processes and \
         printed {} bytes of JSON (process trees, owners, states, memory).\n",
        check.pipeline_count,
        check
            .scan_processes
            .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string()),
        check.scan_json_bytes,
    );
    write_runs(&mut body, scan, pipeline);
    let missed = write_target(&mut body, scan, pipeline);
    Section {
        title: TITLE.to_owned(),
        body,
        missed_targets: missed,
    }
}

/// Each command's median, p90 and every run.
fn write_runs(body: &mut String, scan: &[Duration], pipeline: &[Duration]) {
    body.push_str("| command | runs | median | p90 | each run (ms) |\n");
    body.push_str("| --- | --- | --- | --- | --- |\n");
    for (subject, walls) in [(Subject::Scan, scan), (Subject::Pipeline, pipeline)] {
        let each: Vec<String> = walls.iter().map(|d| format!("{:.1}", ms(*d))).collect();
        let (med, p90) = stats(walls).map_or_else(
            || ("n/a".to_owned(), "n/a".to_owned()),
            |s| {
                (
                    format!("{:.1} ms", ms(s.median)),
                    format!("{:.1} ms", ms(s.p90)),
                )
            },
        );
        let _ = writeln!(
            body,
            "| {} | {} | {med} | {p90} | {} |",
            subject.label(),
            walls.len(),
            each.join(", ")
        );
    }
}

/// The target's table row and verdict line; the target missed, if it was.
fn write_target(body: &mut String, scan: &[Duration], pipeline: &[Duration]) -> Vec<String> {
    let ratio = stats(scan)
        .zip(stats(pipeline))
        .map(|(s, p)| s.median.as_secs_f64() / p.median.as_secs_f64());
    let ratio_text = ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"));
    let met = ratio.is_some_and(|r| r <= TARGET_RATIO);
    let mut missed = Vec::new();
    if !met {
        missed.push(format!(
            "scan/pipeline ratio {ratio_text} > {TARGET_RATIO:.2}"
        ));
    }
    body.push_str("\n| metric | result | target | |\n| --- | --- | --- | --- |\n");
    let _ = writeln!(
        body,
        "| median wall time ratio (scan / pipeline) | {ratio_text} | <= {TARGET_RATIO:.2} | {} |",
        if met { "met" } else { "**missed**" }
    );
    if met {
        body.push_str("\nTarget met: the scan is at least as fast as the pipeline.\n");
    } else {
        let _ = writeln!(
            body,
            "\n**Target missed:** the scan is slower than the pipeline (median ratio {ratio_text})."
        );
    }
    missed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            daemon_bin: PathBuf::from("/nonexistent/mcp-reaper"),
            command_line: "cargo xtask bench scan".to_owned(),
            date: "2026-11-25".to_owned(),
            kernel: "6.18.0".to_owned(),
            machine: "test".to_owned(),
            busy_note: None,
        }
    }

    fn check() -> Check {
        Check {
            pipeline_count: "10".to_owned(),
            scan_processes: Some(2100),
            scan_json_bytes: 1234,
        }
    }

    #[test]
    fn stats_median_and_p90() {
        let ms = Duration::from_millis;
        assert!(stats(&[]).is_none());
        let values: Vec<Duration> = (1..=10).rev().map(ms).collect();
        let s = stats(&values).map(|s| (s.median, s.p90));
        assert_eq!(s, Some((ms(5) + ms(1) / 2, ms(9))));
        let s = stats(&[ms(7)]).map(|s| (s.median, s.p90));
        assert_eq!(s, Some((ms(7), ms(7))));
    }

    #[test]
    fn reads_json_number() {
        let json = "{\n  \"schema_version\": 1,\n  \"processes_scanned\": 2087,\n}";
        assert_eq!(json_number(json, "processes_scanned"), Some(2087));
        assert_eq!(json_number(json, "missing"), None);
    }

    #[test]
    fn summary_target() {
        let args = Args {
            extra_processes: 2000,
            scan_rounds: 2,
            scan_trees: 1000,
            scan_daemon_calls: 200,
        };
        let ms = Duration::from_millis;
        let s = summarize(
            &ctx(),
            &args,
            &check(),
            (2100, 2100),
            &[ms(10), ms(12)],
            &[ms(20), ms(22)],
        );
        assert!(s.missed_targets.is_empty(), "{:?}", s.missed_targets);
        assert!(s.body.contains("| 0.524 |"), "{}", s.body);
        let s = summarize(&ctx(), &args, &check(), (2100, 2100), &[ms(30)], &[ms(20)]);
        assert_eq!(s.missed_targets.len(), 1);
        assert!(s.body.contains("**Target missed:**"), "{}", s.body);
    }

    #[test]
    fn crowd_is_reaped_on_drop() -> Result<()> {
        let crowd = Crowd::start(FAKE_COUNT + 2)?;
        let pids: Vec<u32> = crowd.children.iter().map(Child::id).collect();
        drop(crowd);
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "pid {pid} still exists"
            );
        }
        Ok(())
    }
}
