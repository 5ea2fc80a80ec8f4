//! `/metrics` at scale: scrape latency, daemon memory and CPU at rest with
//! many live trees among many processes.
//!
//! The daemon runs with `--source ebpf --listen 127.0.0.1:<free port>` and
//! the fake-server rule of the latency benchmark. This process starts the
//! fake servers (holding their stdio, so every tree stays live), then plain
//! `sleep` processes until the machine has the requested number of
//! processes, and waits until `sum(mcp_reaper_trees{state="live"})` reaches
//! the number of fake servers. Then, with nothing changing: utime + stime of
//! the daemon over a rest window; then sequential scrapes (HTTP/1.0 GET over
//! a fresh TCP connection each, timed to the end of the body); then the
//! daemon's VmRSS and VmHWM. Every process started here is killed and
//! waited for on every exit path.
use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::context::Context;
use super::report::Section;
use super::shared::{Fleet, Scratch, count_processes, percentile};
use crate::child_daemon::{
    Memory, RunArgs, free_addr, get_metrics, mib, sum_by_state, wait_live_trees,
};

const TITLE: &str = "Metrics scrape and footprint at scale";
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(300);
const WARMUP_SCRAPES: u32 = 5;
const TARGET_P99_MS: f64 = 10.0;
/// 30 MB, in bytes.
const TARGET_RSS_BYTES: u64 = 30_000_000;

#[derive(clap::Args)]
#[command(next_help_heading = "scrape")]
#[group(id = "scrape_args")]
pub struct Args {
    /// Live fake server trees while scraping.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    scrape_trees: u32,
    /// Processes on the machine while scraping (topped up with `sleep`).
    #[arg(long, default_value_t = 10_000)]
    scrape_processes: u32,
    /// Sequential GET /metrics requests timed.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    scrape_requests: u32,
    /// Seconds of rest (no changes, no scrapes) over which CPU use is measured.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    scrape_rest_secs: u64,
}

/// Plain `sleep` processes; dropping it kills and waits for every one.
#[derive(Default)]
struct Sleepers(Vec<Child>);

impl Sleepers {
    /// Starts `sleep` processes until the machine has `target` processes.
    fn top_up(target: u32) -> Result<Self> {
        let mut s = Self::default();
        let have = count_processes()?;
        let want = usize::try_from(target)
            .unwrap_or(usize::MAX)
            .saturating_sub(have);
        for i in 0..want {
            let child = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start sleep process {} of {want}", i + 1))?;
            s.0.push(child);
        }
        Ok(s)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// The pid of this process's child whose comm is `mcp-reaper`.
fn daemon_pid() -> Result<u32> {
    for task in std::fs::read_dir("/proc/self/task").context("read /proc/self/task")? {
        let children = std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "mcp-reaper" {
                return Ok(pid);
            }
        }
    }
    bail!("no mcp-reaper child of this process")
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    ticks_in(&stat).ok_or_else(|| anyhow::anyhow!("no utime/stime in {path}"))
}

/// utime + stime from the text of a /proc/PID/stat.
fn ticks_in(stat: &str) -> Option<u64> {
    let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the first after the comm is field 3.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(tick(11)? + tick(12)?)
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

struct Results {
    trees: u32,
    processes_start: usize,
    processes_end: usize,
    sleepers: usize,
    discovery: Duration,
    live_reported: f64,
    rest: Duration,
    rest_ticks: u64,
    ticks_per_sec: u64,
    /// Per scrape, in microseconds.
    scrape_us: Vec<u64>,
    body_bytes: Vec<usize>,
    mem_rest: Memory,
    mem_end: Memory,
}

pub fn run(ctx: &Context, args: &Args) -> Result<Section> {
    let scratch = Scratch::with_config("scrape")?;
    let addr = free_addr()?;
    let listen = addr.to_string();
    let mut daemon = RunArgs {
        listen: &listen,
        ..RunArgs::new("ebpf", &scratch.0)
    }
    .start(&ctx.daemon_bin)
    .context("start the daemon (--source ebpf)")?;
    let pid = daemon_pid()?;
    println!("scrape: starting {} fake servers", args.scrape_trees);
    let fleet = Fleet::start(args.scrape_trees)?;
    println!(
        "scrape: topping the machine up to {} processes",
        args.scrape_processes
    );
    let sleepers = Sleepers::top_up(args.scrape_processes)?;
    let processes_start = count_processes()?;
    let discovery = wait_live_trees(addr, args.scrape_trees, DISCOVERY_TIMEOUT)?;
    let live_reported = sum_by_state(
        &String::from_utf8_lossy(&get_metrics(addr)?),
        "mcp_reaper_trees",
        "live",
    );
    println!(
        "scrape: {live_reported} live trees among {processes_start} processes after {:.1} s; \
         resting {} s",
        discovery.as_secs_f64(),
        args.scrape_rest_secs
    );

    let rest = Duration::from_secs(args.scrape_rest_secs);
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid)?;
    std::thread::sleep(rest);
    let c1 = cpu_ticks(pid)?;
    let rest = t0.elapsed();
    let mem_rest = daemon.memory()?;

    println!("scrape: {} sequential GET /metrics", args.scrape_requests);
    for _ in 0..WARMUP_SCRAPES {
        get_metrics(addr)?;
    }
    let mut scrape_us = Vec::new();
    let mut body_bytes = Vec::new();
    for _ in 0..args.scrape_requests {
        let t = Instant::now();
        let body = get_metrics(addr)?;
        scrape_us.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        body_bytes.push(body.len());
    }
    let mem_end = daemon.memory()?;
    let processes_end = count_processes()?;
    let results = Results {
        trees: args.scrape_trees,
        processes_start,
        processes_end,
        sleepers: sleepers.0.len(),
        discovery,
        live_reported,
        rest,
        rest_ticks: c1.saturating_sub(c0),
        ticks_per_sec: clock_ticks_per_second(),
        scrape_us,
        body_bytes,
        mem_rest,
        mem_end,
    };
    daemon.stop()?;
    drop(sleepers);
    drop(fleet);
    Ok(summarize(ctx, args, &results))
}

fn summarize(ctx: &Context, args: &Args, r: &Results) -> Section {
    let mut body = ctx.header();
    write_method(&mut body, args, r);
    let p99 = write_readings(&mut body, r);
    let missed = write_targets(&mut body, r, p99);
    Section::with_targets(TITLE, body, missed)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2} ms"))
}

/// What ran and how each figure is measured.
fn write_method(body: &mut String, args: &Args, r: &Results) {
    let _ = writeln!(
        body,
        "\nThe daemon (`mcp-reaper run --source ebpf --listen 127.0.0.1:<port> --config <config> \
         --audit-log off --control-socket <socket>`, the latency benchmark's config: one \
         `[[server]]` rule for the fake servers) watches {} live fake server trees \
         (`bash -c '# mcp-fake-server\\nsleep 600; exit 0'`, stdio on socketpairs this process \
         keeps open) while the machine runs {} processes ({} of them plain `sleep 3600` started to \
         reach --scrape-processes {}; {} processes at the end). All trees were reported live \
         (`sum(mcp_reaper_trees{{state=\"live\"}})` = {}) {:.1} s after the last process started.\n\n\
         - **CPU at rest**: utime + stime from `/proc/<pid>/stat` over {:.1} s with no process \
         changes and no scrapes, as a share of one core.\n\
         - **Scrape**: {} sequential `GET /metrics` (HTTP/1.0, a new TCP connection each, after {} \
         warm-up requests), timed from connect to the end of the body.\n\
         - **Memory**: VmRSS and VmHWM from `/proc/<pid>/status`, after the rest window and after \
         the scrapes.\n",
        r.trees,
        r.processes_start,
        r.sleepers,
        args.scrape_processes,
        r.processes_end,
        r.live_reported,
        r.discovery.as_secs_f64(),
        r.rest.as_secs_f64(),
        args.scrape_requests,
        WARMUP_SCRAPES,
    );
}

/// The scrape percentiles, memory and CPU tables; the scrape p99 in ms.
fn write_readings(body: &mut String, r: &Results) -> Option<f64> {
    let mut s = r.scrape_us.clone();
    s.sort_unstable();
    let p = |q| percentile(&s, q).map(|us| us as f64 / 1000.0);
    let (min_b, max_b) = (
        r.body_bytes.iter().min().copied().unwrap_or(0),
        r.body_bytes.iter().max().copied().unwrap_or(0),
    );
    let size = if min_b == max_b {
        format!("{max_b} bytes")
    } else {
        format!("{min_b}-{max_b} bytes")
    };
    let cpu_secs = r.rest_ticks as f64 / r.ticks_per_sec as f64;
    let cpu_pct = 100.0 * cpu_secs / r.rest.as_secs_f64();
    let _ = writeln!(
        body,
        "| scrapes | p50 | p99 | max | response body |\n| --- | --- | --- | --- | --- |\n\
         | {} | {} | {} | {} | {size} |\n",
        s.len(),
        fmt_ms(p(50.0)),
        fmt_ms(p(99.0)),
        fmt_ms(p(100.0)),
    );
    let _ = writeln!(
        body,
        "| daemon | VmRSS | VmHWM |\n| --- | --- | --- |\n\
         | after {:.0} s at rest | {} | {} |\n| after the scrapes | {} | {} |\n\n\
         CPU at rest: {} ticks ({:.2} s at {} ticks/s) in {:.1} s = **{cpu_pct:.2} %** of one core.",
        r.rest.as_secs_f64(),
        mib(r.mem_rest.rss_kib),
        mib(r.mem_rest.hwm_kib),
        mib(r.mem_end.rss_kib),
        mib(r.mem_end.hwm_kib),
        r.rest_ticks,
        cpu_secs,
        r.ticks_per_sec,
        r.rest.as_secs_f64(),
    );
    p(99.0)
}

/// The targets table; the targets missed.
fn write_targets(body: &mut String, r: &Results, p99: Option<f64>) -> Vec<String> {
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let p99_met = p99.is_some_and(|v| v <= TARGET_P99_MS);
    let rss_kib = r.mem_rest.rss_kib.max(r.mem_end.rss_kib);
    let rss_met = rss_kib * 1024 <= TARGET_RSS_BYTES;
    let mut missed = Vec::new();
    if !p99_met {
        missed.push(format!(
            "scrape p99 {} > {TARGET_P99_MS:.0} ms with {} live trees",
            fmt_ms(p99),
            r.trees
        ));
    }
    if !rss_met {
        missed.push(format!(
            "daemon VmRSS {} > 30 MB with {} live trees and {} processes",
            mib(rss_kib),
            r.trees,
            r.processes_start
        ));
    }
    let _ = writeln!(
        body,
        "\n### Targets\n\n| metric | result | target | |\n| --- | --- | --- | --- |\n\
         | `/metrics` scrape p99 | {} | <= {TARGET_P99_MS:.0} ms | {} |\n\
         | daemon VmRSS (larger of the two readings) | {} | <= 30 MB (30,000,000 bytes) | {} |",
        fmt_ms(p99),
        verdict(p99_met),
        mib(rss_kib),
        verdict(rss_met),
    );
    missed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_plus_stime() {
        // utime 14 and stime 15 after pid, comm (with ") " in it), state...
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 14 15 0 0 20 0 1 0 99\n";
        assert_eq!(ticks_in(stat), Some(29));
        assert_eq!(ticks_in("42 (a) S 1 42"), None, "cut short");
        assert_eq!(ticks_in("42 (a) S 1 42 42 0 -1 0 0 0 0 0 x 15"), None);
        assert!(cpu_ticks(u32::MAX).is_err(), "no such process");
    }

    #[test]
    fn cpu_ticks_of_this_process_grow_while_it_computes() {
        let pid = std::process::id();
        let before = cpu_ticks(pid).unwrap_or_else(|e| panic!("{e:#}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 1u64;
        let mut now = before;
        while now < before + 5 && Instant::now() < deadline {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
            now = cpu_ticks(pid).unwrap_or_else(|e| panic!("{e:#}"));
        }
        assert!(
            now >= before + 5,
            "ticks went from {before} to {now} in 20 s of computing"
        );
    }
}
