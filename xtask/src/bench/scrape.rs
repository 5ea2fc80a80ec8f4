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
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::daemon::{Daemon, Memory};
use super::latency::{CONFIG, Fleet, Scratch, percentile};
use super::{Context, Section};

const TITLE: &str = "Metrics scrape and footprint at scale";
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(300);
const WARMUP_SCRAPES: u32 = 5;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Processes (thread-group leaders) on the machine: numeric entries of /proc.
fn count_processes() -> Result<usize> {
    Ok(std::fs::read_dir("/proc")
        .context("read /proc")?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count())
}

/// A free loopback port: bound, read, released.
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    l.local_addr().context("local address")
}

/// One `GET /metrics` over a fresh connection: the body, or an error for
/// anything but a 200.
pub(super) fn get_metrics(addr: SocketAddr) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .context("send GET /metrics")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("read the response")?;
    let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in a {}-byte response", resp.len());
    };
    let status = String::from_utf8_lossy(&resp[..split]);
    let first = status.lines().next().unwrap_or_default();
    if first.split_whitespace().nth(1) != Some("200") {
        bail!("GET /metrics answered `{first}`");
    }
    Ok(resp.split_off(split + 4))
}

/// `sum(NAME{state="STATE"})` over the series of a text exposition.
pub(super) fn sum_by_state(text: &str, name: &str, state: &str) -> f64 {
    let label = format!("state=\"{state}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            labels
                .split(',')
                .any(|kv| kv.trim() == label)
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// Polls `/metrics` until at least `want` trees are live; the time it took.
pub(super) fn wait_live_trees(addr: SocketAddr, want: u32, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut seen = 0.0;
    while start.elapsed() < timeout {
        if let Ok(body) = get_metrics(addr) {
            seen = sum_by_state(&String::from_utf8_lossy(&body), "mcp_reaper_trees", "live");
            if seen >= f64::from(want) {
                return Ok(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "the daemon reported {seen} live trees of {want} after {} s",
        timeout.as_secs()
    )
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
    let after_comm = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the first after the comm is field 3.
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => bail!("no utime/stime in {path}"),
    }
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
    let scratch = Scratch::new("scrape")?;
    let dir = &scratch.0;
    let config = dir.join("config.toml");
    std::fs::write(&config, CONFIG).with_context(|| format!("write {}", config.display()))?;
    let addr = free_addr()?;
    let p = |name: &str| dir.join(name).display().to_string();
    let daemon_args = [
        "run".to_owned(),
        "--source".into(),
        "ebpf".into(),
        "--config".into(),
        p("config.toml"),
        "--listen".into(),
        addr.to_string(),
        "--audit-log".into(),
        "off".into(),
        "--control-socket".into(),
        p("c.sock"),
    ];
    let daemon_args: Vec<&str> = daemon_args.iter().map(String::as_str).collect();
    let mut daemon =
        Daemon::start(&ctx.daemon_bin, &daemon_args).context("start the daemon (--source ebpf)")?;
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

fn mib(kib: u64) -> String {
    format!("{:.1} MiB ({} kB)", kib as f64 / 1024.0, kib)
}

fn summarize(ctx: &Context, args: &Args, r: &Results) -> Section {
    let mut body = ctx.header();
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
    let mut s = r.scrape_us.clone();
    s.sort_unstable();
    let p = |q| percentile(&s, q).map(|us| us as f64 / 1000.0);
    let fmt_ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2} ms"));
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

    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let p99 = p(99.0);
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
    Section::with_targets(TITLE, body, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_live_trees() {
        let text = "# HELP mcp_reaper_trees Trees.\n# TYPE mcp_reaper_trees gauge\n\
                    mcp_reaper_trees{host=\"none\",server=\"none\",state=\"live\"} 0\n\
                    mcp_reaper_trees{host=\"none\",server=\"fake\",state=\"live\"} 998\n\
                    mcp_reaper_trees{host=\"h\",server=\"fake\",state=\"live\"} 2\n\
                    mcp_reaper_trees{host=\"none\",server=\"fake\",state=\"orphaned\"} 7\n\
                    mcp_reaper_trees_reaped_total{state=\"live\"} 5\n";
        assert!((sum_by_state(text, "mcp_reaper_trees", "live") - 1000.0).abs() < f64::EPSILON);
        assert!((sum_by_state(text, "mcp_reaper_trees", "orphaned") - 7.0).abs() < f64::EPSILON);
    }

    #[test]
    fn reads_cpu_ticks_of_this_process() {
        assert!(cpu_ticks(std::process::id()).is_ok());
    }
}
