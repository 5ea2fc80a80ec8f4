//! The spawn storm with live trees: what fork/exec/exit tracking costs
//! while the daemon watches trees, for a storm by the trees' host (this
//! process) and one by a bystander (a [`StormWorker`], a copy of this program
//! started before any daemon). Rounds cycle through no daemon, the eBPF tier
//! and the eBPF tier with `--close-tier on`.
//!
//! Owns: the storm worker's process and the rounds. Must never: release a
//! tree (the trees stay live throughout) or leave the worker running
//! (dropping it kills and waits for it).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::tier::{CLOSE_TIER, start_daemon, tracked_live, wait_discovered};
use crate::bench::context::Context;
use crate::bench::shared::{Fleet, median, storm};
use crate::child_daemon::Daemon;

/// Where a storm runs: this process (the host of the live trees, so every
/// spawn is a candidate tree and every close is inspected) or a worker
/// started before any daemon (no watched process's descendant).
#[derive(Default)]
pub(super) struct StormSeries {
    pub(super) base: Vec<Duration>,
    pub(super) with: Vec<Duration>,
    /// With the daemon run `--close-tier on`.
    pub(super) with_close: Vec<Duration>,
}

impl StormSeries {
    /// Median wall time with the daemon (`daemon`) over the median without.
    pub(super) fn ratio(&self, daemon: &[Duration]) -> Option<f64> {
        median(self.base.clone())
            .zip(median(daemon.to_vec()))
            .map(|(b, w)| w.as_secs_f64() / b.as_secs_f64())
    }
}

pub(super) struct StormResult {
    /// Live trees the daemon watched.
    pub(super) live: usize,
    /// Rounds run, and spawns per storm.
    pub(super) rounds: u32,
    pub(super) spawns: u32,
    pub(super) host: StormSeries,
    pub(super) bystander: StormSeries,
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

/// `rounds` rounds of two storms of `spawns` each, with `live_trees` live
/// trees held by this process.
pub(super) fn run(
    ctx: &Context,
    dir: &Path,
    live_trees: u32,
    rounds: u32,
    spawns: u32,
) -> Result<StormResult> {
    println!(
        "latency storm: {live_trees} live trees, {rounds} rounds of {spawns} spawns, by this host and by a bystander"
    );
    // Started before any daemon runs, so the kernel never marks it.
    let mut worker = StormWorker::start()?;
    let fleet = Fleet::start(live_trees)?;
    let pids = fleet.pids();
    storm(spawns.min(500))?;
    worker.storm(spawns.min(500))?;
    let (mut host, mut bystander) = (StormSeries::default(), StormSeries::default());
    for i in 0..rounds {
        // Rounds cycle: no daemon, daemon, daemon with the close tier.
        let tier = match i % 3 {
            0 => None,
            1 => Some("ebpf"),
            _ => Some(CLOSE_TIER),
        };
        let daemon = match tier {
            Some(tier) => Some(start_watching(ctx, tier, dir, &pids)?),
            None => None,
        };
        // Who storms first alternates between rounds of the same kind.
        let host_first = (i / 3) % 2 == 0;
        let (mut h, mut b) = (Duration::ZERO, Duration::ZERO);
        for host_turn in [host_first, !host_first] {
            if host_turn {
                h = storm(spawns)?;
            } else {
                b = worker.storm(spawns)?;
            }
        }
        if let Some(daemon) = daemon {
            stop_watching(ctx, daemon, dir, &pids)?;
        }
        println!(
            "round {}/{rounds} ({}): host {:.3} s, bystander {:.3} s",
            i + 1,
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
        rounds,
        spawns,
        host,
        bystander,
    })
}

/// The daemon of `tier`, once it tracks every one of `pids` live.
fn start_watching(ctx: &Context, tier: &str, dir: &Path, pids: &[u32]) -> Result<Daemon> {
    let d = start_daemon(ctx, tier, dir, "off")?;
    wait_discovered(ctx, &dir.join("c.sock"), pids)?;
    Ok(d)
}

/// Stops `daemon`; an error when it lost track of a tree during the storm.
fn stop_watching(ctx: &Context, daemon: Daemon, dir: &Path, pids: &[u32]) -> Result<()> {
    let live = tracked_live(ctx, &dir.join("c.sock"), pids)?;
    daemon.stop()?;
    if live != pids.len() {
        bail!(
            "the daemon lost track of live trees during the storm: {live} of {}",
            pids.len()
        );
    }
    Ok(())
}
