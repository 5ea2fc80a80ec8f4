//! Orphan detection and reap latency: how long after a host lets go of a
//! server's stdio the daemon notices, and how long the reap itself takes.
//!
//! This process is the host. It starts fake servers (`bash -c '# mcp-fake-server
//! ...'`, matched by a `[[server]]` rule) with stdin and stdout on one end of a
//! socketpair and keeps the other end; once the daemon tracks every tree as
//! live (asked through `mcp-reaper release --dry-run --owner <this pid>`), it
//! closes its ends one at a time and reads the daemon's audit log:
//! detection = `ts` of the tree's `orphan-detected` record minus the close
//! time; reap = the `reap` record's `timings.reaped_ms`. Run once per tier
//! (`--source ebpf`, `--source poll`). A spawn-storm variant then measures the
//! fork/exec/exit cost with the daemon watching live trees, for a storm by
//! the trees' host and by a bystander (`storm-worker`, a copy of this program). Every fake server
//! (its whole process group) is killed and waited for on every exit path.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use rustix::process::{Pid, Signal, kill_process_group};

use super::daemon::Daemon;
use super::scrape::wait_live_trees;
use super::{Context, Section};

const TITLE: &str = "Orphan detection and reap latency";
/// bash stays the tree's root (it runs `sleep` as a child and then `exit`),
/// so its command line keeps matching the rule for the tree's whole life.
const SERVER_SCRIPT: &str = "# mcp-fake-server\nsleep 600; exit 0";
pub(super) const CONFIG: &str = r#"[[server]]
name = "fake"
cmdline = 'bash -c # mcp-fake-server(?s:.*)'

[policy]
grace = "0s"
kill_after = "1s"
"#;
/// The eBPF tier run with `--close-tier on` (the kernel's close records
/// instead of the stdin watches `auto` picks where they work).
const CLOSE_TIER: &str = "ebpf-close-tier";
const TIERS: &[&str] = &["ebpf", CLOSE_TIER, "poll"];
const BATCH: u32 = 20;
const BATCH_PAUSE: Duration = Duration::from_millis(100);
const SETTLE: Duration = Duration::from_secs(2);
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// After the last release: how long to wait for the last reap record.
const REAP_TIMEOUT: Duration = Duration::from_secs(30);
const STORM_PROGRAM: &str = "/bin/true";
const TARGET_EBPF_P99_MS: f64 = 10.0;
const TARGET_STORM_RATIO: f64 = 1.03;

#[derive(clap::Args)]
#[command(next_help_heading = "latency")]
#[group(id = "latency_args")]
pub struct Args {
    /// Fake server trees released one by one per tier.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    trees: u32,
    /// Milliseconds between two releases.
    #[arg(long, default_value_t = 50)]
    release_gap_ms: u64,
    /// Live trees the daemon watches during the latency spawn storm.
    #[arg(long, default_value_t = 50)]
    storm_live_trees: u32,
    /// Spawns of /bin/true per latency spawn-storm round.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(1..))]
    storm_spawns: u32,
    /// Latency spawn-storm rounds, cycling no daemon / daemon / daemon with
    /// `--close-tier on` (at least 3); each round runs the host's storm and
    /// the bystander's. Many short rounds spread the machine's drift over
    /// every configuration.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(3..))]
    storm_rounds: u32,
    /// Chained sessions (host -> relay -> anchor -> fake server, through
    /// tests/hosts/chain_host.py) ended one by one; 0 skips the chained row.
    #[arg(long, default_value_t = 50)]
    chained_trees: u32,
}

/// A scratch directory, removed when dropped.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(bench: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("mcp-reaper-bench-{bench}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct FakeServer {
    child: Child,
    /// This process's end of the server's stdio; `None` once released.
    end: Option<UnixStream>,
}

/// Fake servers; dropping it kills every one's process group and waits.
#[derive(Default)]
pub(super) struct Fleet {
    servers: Vec<FakeServer>,
}

impl Fleet {
    pub(super) fn start(count: u32) -> Result<Self> {
        let mut fleet = Self::default();
        for i in 0..count {
            let (ours, theirs) = UnixStream::pair().context("socketpair")?;
            let theirs_out = theirs.try_clone().context("dup socket")?;
            let child = Command::new("bash")
                .args(["-c", SERVER_SCRIPT])
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| format!("start fake server {} of {count}", i + 1))?;
            fleet.servers.push(FakeServer {
                child,
                end: Some(ours),
            });
            if (i + 1).is_multiple_of(BATCH) {
                std::thread::sleep(BATCH_PAUSE);
            }
        }
        Ok(fleet)
    }

    fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.child.id()).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.end = None;
            if let Some(pid) = Pid::from_raw(i32::try_from(s.child.id()).unwrap_or(0)) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
        for s in &mut self.servers {
            let _ = s.child.wait();
        }
    }
}

/// `source` is a tier label: a `--source` value, or [`CLOSE_TIER`].
fn daemon_args(source: &str, dir: &Path, audit: &str) -> Vec<String> {
    let p = |name: &str| dir.join(name).display().to_string();
    let (source, extra): (&str, &[&str]) = if source == CLOSE_TIER {
        ("ebpf", &["--close-tier", "on"])
    } else {
        (source, &[])
    };
    let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    args.splice(
        0..0,
        ["run".to_owned(), "--source".to_owned(), source.to_owned()],
    );
    args.extend([
        "--config".into(),
        p("config.toml"),
        "--listen".into(),
        "off".into(),
        "--audit-log".into(),
        audit.into(),
        "--control-socket".into(),
        p("c.sock"),
    ]);
    args
}

fn start_daemon(ctx: &Context, source: &str, dir: &Path, audit: &str) -> Result<Daemon> {
    let args = daemon_args(source, dir, audit);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&ctx.daemon_bin, &args)
        .with_context(|| format!("start the daemon (--source {source})"))
}

/// How many of `pids` the daemon tracks as live trees owned by this process.
fn tracked_live(ctx: &Context, socket: &Path, pids: &[u32]) -> Result<usize> {
    let out = Command::new(&ctx.daemon_bin)
        .args(["release", "--dry-run", "--owner"])
        .arg(std::process::id().to_string())
        .arg("--socket")
        .arg(socket)
        .stderr(Stdio::null())
        .output()
        .context("run `mcp-reaper release --dry-run`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.starts_with("  ") && l.trim_end().ends_with("(live)"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|p| pids.contains(p))
        .count())
}

/// Waits `SETTLE`, then until the daemon tracks every one of `pids` live.
fn wait_discovered(ctx: &Context, socket: &Path, pids: &[u32]) -> Result<Duration> {
    let start = Instant::now();
    std::thread::sleep(SETTLE);
    let mut seen = 0;
    while start.elapsed() < DISCOVERY_TIMEOUT {
        seen = tracked_live(ctx, socket, pids)?;
        if seen == pids.len() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "the daemon tracked {seen} of {} fake servers as live after {} s",
        pids.len(),
        DISCOVERY_TIMEOUT.as_secs()
    )
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The value after `"key":`, up to the next `,` or `}`; strings unquoted.
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    }
    rest.split([',', '}']).next()
}

/// `2024-05-01T12:34:56.789012Z` (any fraction of 1 to 9 digits) to
/// microseconds since the epoch.
fn parse_ts_us(ts: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    // `YYYY-MM-DDTHH:MM:SS.<fraction>Z`; the daemon writes six digits.
    let frac = ts.get(20..)?.strip_suffix('Z')?;
    if ts.get(19..20)? != "." || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    let frac_us = frac.parse::<i64>().ok()? * 10_i64.pow(9 - frac.len() as u32) / 1000;
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) * 1_000_000 + frac_us)
}

#[derive(Default)]
struct TreeResult {
    detected_us: Option<i64>,
    reaped_ms: Option<u64>,
    outcome: Option<String>,
    reason: Option<String>,
}

/// Per root pid: the first `orphan-detected` and the first `reap` record.
fn read_audit(path: &Path) -> HashMap<u32, TreeResult> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: HashMap<u32, TreeResult> = HashMap::new();
    for line in text.lines() {
        let Some(root) = line
            .find("\"root\":")
            .and_then(|i| json_field(&line[i..], "tgid"))
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        let entry = out.entry(root).or_default();
        match json_field(line, "event") {
            Some("orphan-detected") if entry.detected_us.is_none() => {
                entry.detected_us = json_field(line, "ts").and_then(parse_ts_us);
                entry.reason = json_field(line, "reason").map(str::to_owned);
            }
            Some("reap") if entry.reaped_ms.is_none() => {
                entry.reaped_ms = json_field(line, "reaped_ms").and_then(|v| v.parse().ok());
                entry.outcome = json_field(line, "outcome").map(str::to_owned);
            }
            _ => {}
        }
    }
    out
}

struct TierResult {
    source: &'static str,
    trees: usize,
    discovery: Duration,
    /// Detection latency per detected tree, in microseconds.
    detect_us: Vec<i64>,
    reap_ms: Vec<u64>,
    reasons: Vec<(String, usize)>,
    outcomes: Vec<(String, usize)>,
}

fn tally(items: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut map: HashMap<String, usize> = HashMap::new();
    for i in items {
        *map.entry(i).or_default() += 1;
    }
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort();
    v
}

fn run_tier(ctx: &Context, args: &Args, source: &'static str, dir: &Path) -> Result<TierResult> {
    let audit = dir.join(format!("audit-{source}.jsonl"));
    let _ = std::fs::remove_file(&audit);
    let socket = dir.join("c.sock");
    let daemon = start_daemon(ctx, source, dir, &audit.display().to_string())?;
    let mut fleet = Fleet::start(args.trees)?;
    let pids = fleet.pids();
    let discovery = wait_discovered(ctx, &socket, &pids)?;
    println!(
        "latency ({source}): {} trees tracked live {:.1} s after the last spawn; releasing",
        pids.len(),
        discovery.as_secs_f64()
    );
    let gap = Duration::from_millis(args.release_gap_ms);
    let mut closed_us = Vec::with_capacity(pids.len());
    for s in &mut fleet.servers {
        let end = s.end.take();
        let t = now_us();
        drop(end);
        closed_us.push(t);
        std::thread::sleep(gap);
    }
    wait_reaped(&audit, &pids);
    daemon.stop()?;
    drop(fleet);
    Ok(tier_result(source, &audit, &pids, &closed_us, discovery))
}

/// Until every one of `pids` has a `reap` record, or `REAP_TIMEOUT`.
fn wait_reaped(audit: &Path, pids: &[u32]) {
    let deadline = Instant::now() + REAP_TIMEOUT;
    let mut results = read_audit(audit);
    while Instant::now() < deadline
        && !pids
            .iter()
            .all(|p| results.get(p).is_some_and(|r| r.reaped_ms.is_some()))
    {
        std::thread::sleep(Duration::from_millis(200));
        results = read_audit(audit);
    }
}

/// Detection and reap figures of `pids` (closed at `closed_us`) from the audit log.
fn tier_result(
    source: &'static str,
    audit: &Path,
    pids: &[u32],
    closed_us: &[i64],
    discovery: Duration,
) -> TierResult {
    let results = read_audit(audit);
    let mut detect_us = Vec::new();
    let mut reap_ms = Vec::new();
    for (pid, closed) in pids.iter().zip(closed_us) {
        if let Some(r) = results.get(pid) {
            if let Some(d) = r.detected_us {
                detect_us.push(d - closed);
            }
            if let Some(ms) = r.reaped_ms {
                reap_ms.push(ms);
            }
        }
    }
    let ours = || pids.iter().filter_map(|p| results.get(p));
    TierResult {
        source,
        trees: pids.len(),
        discovery,
        detect_us,
        reap_ms,
        reasons: tally(ours().filter_map(|r| r.reason.clone())),
        outcomes: tally(ours().filter_map(|r| r.outcome.clone())),
    }
}

/// Nearest-rank percentile of sorted values.
pub(super) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn storm(spawns: u32) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..spawns {
        let status = Command::new(STORM_PROGRAM)
            .status()
            .with_context(|| format!("spawn {STORM_PROGRAM}"))?;
        if !status.success() {
            bail!("{STORM_PROGRAM} exited with {status}");
        }
    }
    Ok(start.elapsed())
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((*v.get(n / 2 - 1)? + *v.get(n / 2)?) / 2),
    }
}

/// Where a storm runs: this process (the host of the live trees, so every
/// spawn is a candidate tree and every close is inspected) or a worker
/// started before any daemon (no watched process's descendant).
#[derive(Default)]
struct StormSeries {
    base: Vec<Duration>,
    with: Vec<Duration>,
    /// With the daemon run `--close-tier on`.
    with_close: Vec<Duration>,
}

impl StormSeries {
    fn ratio(&self, daemon: &[Duration]) -> Option<f64> {
        median(self.base.clone())
            .zip(median(daemon.to_vec()))
            .map(|(b, w)| w.as_secs_f64() / b.as_secs_f64())
    }
}

struct StormResult {
    live: usize,
    host: StormSeries,
    bystander: StormSeries,
}

/// A copy of this program running `storm-worker`: it storms when told,
/// from outside every watched lineage.
struct StormWorker {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl StormWorker {
    fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let mut child = Command::new(exe)
            .arg(WORKER_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the storm worker")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("storm worker without pipes");
        };
        Ok(Self {
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
        })
    }

    fn storm(&mut self, spawns: u32) -> Result<Duration> {
        use std::io::{BufRead as _, Write as _};
        writeln!(self.stdin, "{spawns}").context("asking the storm worker")?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .context("reading the storm worker")?;
        let us: u64 = line
            .trim()
            .parse()
            .with_context(|| format!("storm worker answered {line:?}"))?;
        Ok(Duration::from_micros(us))
    }
}

impl Drop for StormWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hidden `storm-worker` subcommand's name.
pub const WORKER_COMMAND: &str = "storm-worker";

/// `cargo xtask storm-worker`: reads spawn counts from stdin, one per
/// line; storms and answers each with the wall time in microseconds.
pub fn storm_worker() -> Result<std::process::ExitCode> {
    use std::io::{BufRead as _, Write as _};
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let spawns: u32 = line?.trim().parse().context("spawn count")?;
        let wall = storm(spawns)?;
        writeln!(out, "{}", wall.as_micros())?;
        out.flush()?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn run_storm(ctx: &Context, args: &Args, dir: &Path) -> Result<StormResult> {
    println!(
        "latency storm: {} live trees, {} rounds of {} spawns, by this host and by a bystander",
        args.storm_live_trees, args.storm_rounds, args.storm_spawns
    );
    // Started before any daemon runs, so the kernel never marks it.
    let mut worker = StormWorker::start()?;
    let fleet = Fleet::start(args.storm_live_trees)?;
    let pids = fleet.pids();
    let socket = dir.join("c.sock");
    storm(args.storm_spawns.min(500))?;
    worker.storm(args.storm_spawns.min(500))?;
    let (mut host, mut bystander) = (StormSeries::default(), StormSeries::default());
    for i in 0..args.storm_rounds {
        // Rounds cycle: no daemon, daemon, daemon with the close tier.
        let tier = match i % 3 {
            0 => None,
            1 => Some("ebpf"),
            _ => Some(CLOSE_TIER),
        };
        let daemon = match tier {
            Some(tier) => {
                let d = start_daemon(ctx, tier, dir, "off")?;
                wait_discovered(ctx, &socket, &pids)?;
                Some(d)
            }
            None => None,
        };
        // Who storms first alternates between rounds of the same kind.
        let host_first = (i / 3) % 2 == 0;
        let (mut h, mut b) = (Duration::ZERO, Duration::ZERO);
        for host_turn in [host_first, !host_first] {
            if host_turn {
                h = storm(args.storm_spawns)?;
            } else {
                b = worker.storm(args.storm_spawns)?;
            }
        }
        if let Some(daemon) = daemon {
            let live = tracked_live(ctx, &socket, &pids)?;
            daemon.stop()?;
            if live != pids.len() {
                bail!(
                    "the daemon lost track of live trees during the storm: {live} of {}",
                    pids.len()
                );
            }
        }
        println!(
            "round {}/{} ({}): host {:.3} s, bystander {:.3} s",
            i + 1,
            args.storm_rounds,
            match tier {
                Some(t) => format!("{t} daemon watching {} trees", pids.len()),
                None => "no daemon".to_owned(),
            },
            h.as_secs_f64(),
            b.as_secs_f64()
        );
        let (hs, bs) = match tier {
            None => (&mut host.base, &mut bystander.base),
            Some("ebpf") => (&mut host.with, &mut bystander.with),
            Some(_) => (&mut host.with_close, &mut bystander.with_close),
        };
        hs.push(h);
        bs.push(b);
    }
    drop(fleet);
    Ok(StormResult {
        live: pids.len(),
        host,
        bystander,
    })
}

pub fn run(ctx: &Context, args: &Args) -> Result<Section> {
    let scratch = Scratch::new("latency")?;
    let config = scratch.0.join("config.toml");
    std::fs::write(&config, CONFIG).with_context(|| format!("write {}", config.display()))?;
    let mut tiers = Vec::new();
    for source in TIERS {
        tiers.push(run_tier(ctx, args, source, &scratch.0)?);
    }
    if args.chained_trees > 0 {
        tiers.push(chained::run(ctx, args, &scratch.0)?);
    }
    let storm = run_storm(ctx, args, &scratch.0)?;
    Ok(summarize(ctx, args, &tiers, &storm))
}

/// The chained-host variant: this process is an OpenClaw-shaped host
/// (`tests/hosts/chain_host.py`'s relay and anchor roles; this process plays
/// the host role itself). Per session it starts `chain_host.py relay` with
/// stdin/stdout on a socketpair (the top-level socket, whose other end it
/// keeps) and a lineage socketpair end as fd 3; the relay starts
/// `chain_host.py anchor --stuck` (setsid), which starts a fake server. The
/// anchor is `--stuck`: without it, the anchor kills the server itself on
/// upstream EOF and the daemon has nothing to detect. A session ends when
/// this process closes the top-level and lineage sockets: the relay exits,
/// and the daemon detects the server tree as released by its relay.
mod chained {
    use std::net::{SocketAddr, TcpListener};
    use std::os::fd::AsFd as _;
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt as _;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context as _, Result, bail};
    use rustix::process::{Pid, Signal, kill_process_group};

    use super::{
        Args, BATCH, BATCH_PAUSE, CONFIG, DISCOVERY_TIMEOUT, SERVER_SCRIPT, SETTLE, TierResult,
        now_us, tier_result, wait_live_trees, wait_reaped,
    };
    use crate::bench::Context;
    use crate::bench::daemon::Daemon;
    use crate::cmd::repo_root;

    pub(super) const SOURCE: &str = "ebpf (chained host)";
    const START_TIMEOUT: Duration = Duration::from_secs(10);
    /// Puts the fd named by argv[1] at fd 3 and execs argv[2..].
    const LAUNCH: &str = "import os, sys\nn = int(sys.argv[1])\nif n != 3:\n    \
                          os.dup2(n, 3)\n    os.close(n)\nos.execv(sys.argv[2], sys.argv[2:])";

    struct Chain {
        relay: Child,
        anchor: Option<u32>,
        root: u32,
        top: Option<UnixStream>,
        lineage: Option<UnixStream>,
    }

    /// Chains; dropping it closes every socket, kills the anchors' process
    /// groups (anchor and server) and the relays, and waits for the relays.
    #[derive(Default)]
    struct Chains(Vec<Chain>);

    impl Drop for Chains {
        fn drop(&mut self) {
            for c in &mut self.0 {
                c.top = None;
                c.lineage = None;
                let anchor = c.anchor.or_else(|| children(c.relay.id()).first().copied());
                for pid in [anchor, Some(c.relay.id())].into_iter().flatten() {
                    if let Some(pid) = Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
                        let _ = kill_process_group(pid, Signal::KILL);
                    }
                }
            }
            for c in &mut self.0 {
                let _ = c.relay.kill();
                let _ = c.relay.wait();
            }
        }
    }

    fn children(pid: u32) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The interpreter `python3` runs, by its real path.
    fn python() -> Result<String> {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .context("run python3 (the chained host's relay and anchor are Python)")?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || path.is_empty() {
            bail!("python3 did not report its executable");
        }
        Ok(path)
    }

    /// `s` as a regex matching itself.
    fn regex_escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// The latency config plus a host rule for this process, naming
    /// chain_host.py's relay and anchor as relays.
    fn chained_config() -> Result<String> {
        let exe = std::fs::read("/proc/self/cmdline").context("read /proc/self/cmdline")?;
        let argv0 =
            String::from_utf8_lossy(exe.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
        if argv0.contains('\'') {
            bail!("this program's path {argv0:?} cannot go in a TOML literal string");
        }
        Ok(format!(
            "{CONFIG}\n[[host]]\nname = \"bench\"\ncmdline = '{}(?s: .*)?'\n\
             relays = [ {{ cmdline = '(?:\\S*/)?python3(?:\\.\\d+)? \\S*chain_host\\.py (?:relay|anchor)(?s: .*)?' }} ]\n\
             lineage_fds = [3]\n",
            regex_escape(&argv0)
        ))
    }

    fn start_chain(py: &str, script: &str, npm_dir: &Path) -> Result<Chain> {
        let (top, theirs) = UnixStream::pair().context("socketpair")?;
        let theirs_out = theirs.try_clone().context("dup socket")?;
        let (lineage, lineage_child) = UnixStream::pair().context("socketpair")?;
        // Inherited across exec (only by this child: it is dropped right after).
        rustix::io::fcntl_setfd(lineage_child.as_fd(), rustix::io::FdFlags::empty())
            .context("clear FD_CLOEXEC")?;
        let lfd = std::os::fd::AsRawFd::as_raw_fd(&lineage_child).to_string();
        let relay = Command::new(py)
            .args([
                "-c",
                LAUNCH,
                &lfd,
                py,
                script,
                "relay",
                "--lineage-fd",
                "3",
                "--",
            ])
            .args([py, script, "anchor", "--lineage-fd", "3", "--stuck", "--"])
            .args(["bash", "-c", SERVER_SCRIPT])
            .env("MCP_REAPER_NPM_DIR", npm_dir)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("start chain_host.py relay")?;
        drop(lineage_child);
        let mut chain = Chain {
            relay,
            anchor: None,
            root: 0,
            top: Some(top),
            lineage: Some(lineage),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            for a in children(chain.relay.id()) {
                chain.anchor = Some(a);
                let kids = children(a);
                let bash = kids.iter().copied().find(|k| {
                    std::fs::read_to_string(format!("/proc/{k}/comm"))
                        .is_ok_and(|c| c.trim() == "bash")
                });
                if let Some(root) = bash {
                    chain.root = root;
                    return Ok(chain);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropped through a one-chain guard, so nothing is left behind.
        drop(Chains(vec![chain]));
        bail!(
            "no fake server under the chain within {} s",
            START_TIMEOUT.as_secs()
        )
    }

    fn free_addr() -> Result<SocketAddr> {
        let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        l.local_addr().context("local address")
    }

    pub(super) fn run(ctx: &Context, args: &Args, dir: &Path) -> Result<TierResult> {
        let py = python()?;
        let script = repo_root().join("tests/hosts/chain_host.py");
        if !script.is_file() {
            bail!("{} is missing", script.display());
        }
        let script = script.display().to_string();
        let config = dir.join("config-chained.toml");
        std::fs::write(&config, chained_config()?)
            .with_context(|| format!("write {}", config.display()))?;
        let audit = dir.join("audit-chained.jsonl");
        let _ = std::fs::remove_file(&audit);
        let addr = free_addr()?;
        let p = |path: &Path| path.display().to_string();
        let daemon_args = [
            "run".to_owned(),
            "--source".into(),
            "ebpf".into(),
            "--config".into(),
            p(&config),
            "--listen".into(),
            addr.to_string(),
            "--audit-log".into(),
            p(&audit),
            "--control-socket".into(),
            p(&dir.join("c.sock")),
        ];
        let daemon_args: Vec<&str> = daemon_args.iter().map(String::as_str).collect();
        let daemon = Daemon::start(&ctx.daemon_bin, &daemon_args)
            .context("start the daemon (--source ebpf, chained host)")?;
        let mut chains = Chains::default();
        for i in 0..args.chained_trees {
            chains.0.push(
                start_chain(&py, &script, dir)
                    .with_context(|| format!("chain {} of {}", i + 1, args.chained_trees))?,
            );
            if (i + 1).is_multiple_of(BATCH) {
                std::thread::sleep(BATCH_PAUSE);
            }
        }
        let pids: Vec<u32> = chains.0.iter().map(|c| c.root).collect();
        std::thread::sleep(SETTLE);
        let discovery = SETTLE + wait_live_trees(addr, args.chained_trees, DISCOVERY_TIMEOUT)?;
        println!(
            "latency ({SOURCE}): {} trees live {:.1} s after the last spawn; ending sessions",
            pids.len(),
            discovery.as_secs_f64()
        );
        let gap = Duration::from_millis(args.release_gap_ms);
        let mut closed_us = Vec::with_capacity(pids.len());
        for c in &mut chains.0 {
            let (top, lineage) = (c.top.take(), c.lineage.take());
            let t = now_us();
            drop(top);
            drop(lineage);
            closed_us.push(t);
            std::thread::sleep(gap);
        }
        wait_reaped(&audit, &pids);
        daemon.stop()?;
        drop(chains);
        Ok(tier_result(SOURCE, &audit, &pids, &closed_us, discovery))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn escapes_paths() {
            assert_eq!(
                regex_escape("/work/main/target/debug/xtask"),
                "/work/main/target/debug/xtask"
            );
            assert_eq!(regex_escape("/a.b/c+d"), "/a\\.b/c\\+d");
        }
    }
}

fn ms(us: i64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn summarize(ctx: &Context, args: &Args, tiers: &[TierResult], storm: &StormResult) -> Section {
    let mut body = ctx.header();
    let _ = writeln!(
        body,
        "\nThis process is the host: per tier it starts the daemon (`mcp-reaper run --source <tier> \
         --config <config> --listen off --audit-log <file> --control-socket <socket>`; the config has \
         one `[[server]]` rule for the fake servers and `[policy] grace = \"0s\"`, `kill_after = \"1s\"`), \
         then {} fake servers (`bash -c '# mcp-fake-server\\nsleep 600; exit 0'`: bash and a `sleep` \
         child) with stdin and stdout on one end of a socketpair, keeping the other end. After every \
         tree is tracked live (`mcp-reaper release --dry-run --owner <this pid>`), it closes its ends \
         one at a time, {} ms apart, noting the wall-clock (CLOCK_REALTIME) time of each close.\n\n\
         - **Detection** = `ts` of the tree's `orphan-detected` audit record minus the close time. \
         Audit timestamps carry microseconds.\n\
         - **Reap** = `timings.reaped_ms` of the tree's `reap` record: the reaper's own run, from its \
         start (after detection, confirmation and the grace period) until every member's pidfd \
         reported exit (SIGSTOP, SIGTERM + SIGCONT, waiting up to `kill_after`, then SIGKILL for \
         survivors). Grace and detection are not in it.\n\n\
         Tier `ebpf` is the default (`--close-tier auto`): where `pidfd_getfd` works, as here, \
         the daemon watches each tree root's stdin through a `pidfd_getfd` duplicate in epoll, and \
         the kernel programs report forks, execs and exits. Tier `{CLOSE_TIER}` is `--source ebpf \
         --close-tier on`: the kernel's close records (syscalls:sys_enter_close and friends) \
         instead of the stdin watches.\n",
        args.trees, args.release_gap_ms
    );
    body.push_str(
        "| tier | trees | detected | reaped | detection p50 | p90 | p99 | max | reap p50 | p90 | p99 | max |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut missed = Vec::new();
    let mut notes = String::new();
    for t in tiers {
        let mut d = t.detect_us.clone();
        d.sort_unstable();
        let mut r = t.reap_ms.clone();
        r.sort_unstable();
        let dp = |p| percentile(&d, p).map_or_else(|| "n/a".to_owned(), ms);
        let rp = |p| percentile(&r, p).map_or_else(|| "n/a".to_owned(), |v| format!("{v} ms"));
        let _ = writeln!(
            body,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.source,
            t.trees,
            d.len(),
            r.len(),
            dp(50.0),
            dp(90.0),
            dp(99.0),
            dp(100.0),
            rp(50.0),
            rp(90.0),
            rp(99.0),
            rp(100.0)
        );
        let list = |v: &[(String, usize)]| {
            v.iter()
                .map(|(k, n)| format!("`{k}` x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            notes,
            "- {}: all trees tracked live {:.1} s after the last spawn; reasons {}; reap outcomes {}.",
            t.source,
            t.discovery.as_secs_f64(),
            if t.reasons.is_empty() {
                "none".to_owned()
            } else {
                list(&t.reasons)
            },
            if t.outcomes.is_empty() {
                "none".to_owned()
            } else {
                list(&t.outcomes)
            },
        );
        if d.len() < t.trees || r.len() < t.trees {
            missed.push(format!(
                "{}: {} of {} trees detected, {} reaped",
                t.source,
                d.len(),
                t.trees,
                r.len()
            ));
        }
    }
    body.push('\n');
    body.push_str(&notes);
    if let Some(t) = tiers.iter().find(|t| t.source == chained::SOURCE) {
        let _ = writeln!(
            body,
            "\n`{}`: this process plays the host of {} relay chains as `tests/hosts/chain_host.py` \
             shapes them (host -> `chain_host.py relay` -> `chain_host.py anchor --stuck` (setsid) -> \
             fake server; stdio socketpairs at every hop, a lineage socketpair as fd 3), under a \
             config that adds a `[[host]]` rule for this process with the relay and anchor as \
             `relays` and `lineage_fds = [3]`. Trees are found live through `/metrics` \
             (`--listen 127.0.0.1:<port>`). A session ends when this process closes its top-level \
             and lineage sockets ({} ms apart); the relay then exits. The anchor is `--stuck` (it \
             keeps the server's stdio): a non-stuck anchor tears the server down itself, leaving the \
             daemon nothing to detect. Detection is measured from that close, as above.",
            t.source, t.trees, args.release_gap_ms
        );
    }

    let p99_of = |source: &str| {
        tiers
            .iter()
            .find(|t| t.source == source)
            .and_then(|t| {
                let mut d = t.detect_us.clone();
                d.sort_unstable();
                percentile(&d, 99.0)
            })
            .map(|us| us as f64 / 1000.0)
    };
    let ebpf_p99 = p99_of("ebpf");
    let close_tier_p99 = p99_of(CLOSE_TIER);
    let each = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let med = |v: &[Duration]| {
        median(v.to_vec()).map_or_else(|| "n/a".to_owned(), |d| format!("{:.3} s", d.as_secs_f64()))
    };
    let _ = writeln!(
        body,
        "\n### Spawn storm with live trees\n\n{live} fake servers stay alive (not released) through {} \
         rounds cycling through no daemon, `mcp-reaper run --source ebpf` with the config above, and \
         the same with `--close-tier on` (each daemon started before the round and waited on until it \
         tracks all {live} trees live, stopped with SIGTERM after it). In every round two storms of {} sequential fork+exec+wait of `{STORM_PROGRAM}` \
         run one after the other, in alternating order:\n\n\
         - **host**: this process, which holds the {live} trees' stdio. The daemon watches it as \
         their host, so each child it forks is marked in the kernel as a candidate tree (fork, exec \
         and exit records) and, with the close tier on, each of its closes is inspected.\n\
         - **bystander**: a worker (`cargo xtask storm-worker`) started before any daemon, so no \
         watched lineage includes it: it pays only the in-kernel filters.\n\n\
         | storm | configuration | rounds | median wall time | each round (s) |\n\
         | --- | --- | --- | --- | --- |",
        args.storm_rounds,
        args.storm_spawns,
        live = storm.live,
    );
    for (name, series) in [("host", &storm.host), ("bystander", &storm.bystander)] {
        let _ = writeln!(
            body,
            "| {name} | no daemon | {} | {} | {} |\n| {name} | daemon watching {} trees | {} | {} | {} |\n\
             | {name} | daemon watching {} trees, `--close-tier on` | {} | {} | {} |",
            series.base.len(),
            med(&series.base),
            each(&series.base),
            storm.live,
            series.with.len(),
            med(&series.with),
            each(&series.with),
            storm.live,
            series.with_close.len(),
            med(&series.with_close),
            each(&series.with_close),
        );
    }
    let host_ratio = storm.host.ratio(&storm.host.with);
    let bystander_ratio = storm.bystander.ratio(&storm.bystander.with);
    let host_ratio_ct = storm.host.ratio(&storm.host.with_close);
    let bystander_ratio_ct = storm.bystander.ratio(&storm.bystander.with_close);

    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let p99_met = ebpf_p99.is_some_and(|v| v <= TARGET_EBPF_P99_MS);
    let ratio_text = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"));
    let ratio_met = |r: Option<f64>| r.is_some_and(|r| r <= TARGET_STORM_RATIO);
    let p99_text = ebpf_p99.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} ms"));
    if !p99_met {
        missed.push(format!(
            "eBPF p99 detection {p99_text} > {TARGET_EBPF_P99_MS:.0} ms"
        ));
    }
    let ct_p99_met = close_tier_p99.is_some_and(|v| v <= TARGET_EBPF_P99_MS);
    let ct_p99_text = close_tier_p99.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1} ms"));
    if !ct_p99_met {
        missed.push(format!(
            "eBPF p99 detection with --close-tier on {ct_p99_text} > {TARGET_EBPF_P99_MS:.0} ms"
        ));
    }
    // The storm target holds the default configuration; the close tier's
    // ratios are its price, shown next to it.
    for (name, r) in [("host", host_ratio), ("bystander", bystander_ratio)] {
        if !ratio_met(r) {
            missed.push(format!(
                "spawn storm ({name}) with {} live trees ratio {} > {TARGET_STORM_RATIO:.2}",
                storm.live,
                ratio_text(r)
            ));
        }
    }
    let _ = writeln!(
        body,
        "\n### Targets\n\n| metric | result | target | |\n| --- | --- | --- | --- |\n\
         | eBPF tier p99 detection | {p99_text} | <= {TARGET_EBPF_P99_MS:.0} ms | {} |\n\
         | the same with `--close-tier on` | {ct_p99_text} | <= {TARGET_EBPF_P99_MS:.0} ms | {} |\n\
         | spawn storm wall time ratio by the host, {live} live trees (daemon / no daemon) | {} | <= {TARGET_STORM_RATIO:.2} | {} |\n\
         | spawn storm wall time ratio by a bystander, {live} live trees (daemon / no daemon) | {} | <= {TARGET_STORM_RATIO:.2} | {} |\n\
         | the same by the host, opt-in `--close-tier on` | {} | (<= {TARGET_STORM_RATIO:.2}) | {} |\n\
         | the same by a bystander, opt-in `--close-tier on` | {} | (<= {TARGET_STORM_RATIO:.2}) | {} |",
        verdict(p99_met),
        verdict(ct_p99_met),
        ratio_text(host_ratio),
        verdict(ratio_met(host_ratio)),
        ratio_text(bystander_ratio),
        verdict(ratio_met(bystander_ratio)),
        ratio_text(host_ratio_ct),
        verdict(ratio_met(host_ratio_ct)),
        ratio_text(bystander_ratio_ct),
        verdict(ratio_met(bystander_ratio_ct)),
        live = storm.live,
    );
    Section::with_targets(TITLE, body, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_audit_lines() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("a.jsonl");
        let lines = "{\"ts\":\"2026-11-25T18:00:00.123456Z\",\"id\":\"x-1\",\"event\":\"orphan-detected\",\"tree\":{\"root\":{\"tgid\":42,\"start_ticks\":7},\"server\":\"fake\"},\"reason\":\"peer-released\"}\n\
                     {\"ts\":\"2026-11-25T18:00:00.200Z\",\"id\":\"x-2\",\"event\":\"reap\",\"tree\":{\"root\":{\"tgid\":42,\"start_ticks\":7}},\"outcome\":\"Terminated\",\"timings\":{\"reaped_ms\":12}}\n\
                     {\"ts\":\"2026-11-25T18:00:00.200Z\",\"id\":\"x-3\",\"event\":\"startup\",\"why\":\"\"}\n";
        std::fs::write(&path, lines).unwrap_or_else(|e| panic!("{e}"));
        let r = read_audit(&path);
        let t = r.get(&42).unwrap_or_else(|| panic!("root 42 missing"));
        assert_eq!(t.reaped_ms, Some(12));
        assert_eq!(t.outcome.as_deref(), Some("Terminated"));
        assert_eq!(t.reason.as_deref(), Some("peer-released"));
        assert_eq!(
            t.detected_us,
            Some(1_795_564_800_000_000 + 18 * 3_600_000_000 + 123_456)
        );
    }

    #[test]
    fn timestamps_of_any_precision() {
        let base = 1_795_564_800_000_000 + 18 * 3_600_000_000;
        assert_eq!(parse_ts_us("2026-11-25T18:00:00.5Z"), Some(base + 500_000));
        assert_eq!(
            parse_ts_us("2026-11-25T18:00:00.123Z"),
            Some(base + 123_000)
        );
        assert_eq!(
            parse_ts_us("2026-11-25T18:00:00.123456789Z"),
            Some(base + 123_456)
        );
        for bad in [
            "2026-11-25T18:00:00Z",
            "2026-11-25T18:00:00.Z",
            "2026-11-25T18:00:00.1234567890Z",
            "2026-11-25T18:00:00.12x",
            "",
        ] {
            assert_eq!(parse_ts_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<i64> = (1..=200).collect();
        assert_eq!(percentile(&v, 50.0), Some(100));
        assert_eq!(percentile(&v, 99.0), Some(198));
        assert_eq!(percentile(&v, 100.0), Some(200));
        assert_eq!(percentile::<i64>(&[], 50.0), None);
    }
}
