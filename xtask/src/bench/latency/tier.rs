//! One detection tier of the latency benchmark: the daemon started with
//! the tier's `--source` (for [`CLOSE_TIER`], `--source ebpf --close-tier
//! on`), fake servers it must track as live, then released one at a time,
//! and the tier's figures read from the audit log.
//!
//! Owns: the daemon's command line per tier and asking the daemon which
//! trees it tracks (`mcp-reaper release --dry-run --owner <this pid>`).
//! Must never: ask the daemon to release anything (`release` runs with
//! `--dry-run` only) or judge the figures (that is the summary's job).
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::audit::{TierResult, tier_result, wait_reaped};
use crate::bench::context::Context;
use crate::bench::shared::Fleet;
use crate::child_daemon::{Daemon, RunArgs};

/// The eBPF tier run with `--close-tier on` (the kernel's close records
/// instead of the stdin watches `auto` picks where they work).
pub(super) const CLOSE_TIER: &str = "ebpf-close-tier";
pub(super) const SETTLE: Duration = Duration::from_secs(2);
pub(super) const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// `source` is a tier label: a `--source` value, or [`CLOSE_TIER`].
fn run_args<'a>(source: &'a str, dir: &'a Path, audit: &'a str) -> RunArgs<'a> {
    let (source, extra): (&str, &[&str]) = if source == CLOSE_TIER {
        ("ebpf", &["--close-tier", "on"])
    } else {
        (source, &[])
    };
    RunArgs {
        extra,
        audit,
        ..RunArgs::new(source, dir)
    }
}

pub(super) fn start_daemon(ctx: &Context, source: &str, dir: &Path, audit: &str) -> Result<Daemon> {
    run_args(source, dir, audit)
        .start(&ctx.daemon_bin)
        .with_context(|| format!("start the daemon (--source {source})"))
}

/// How many of `pids` the daemon tracks as live trees owned by this process.
pub(super) fn tracked_live(ctx: &Context, socket: &Path, pids: &[u32]) -> Result<usize> {
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
pub(super) fn wait_discovered(ctx: &Context, socket: &Path, pids: &[u32]) -> Result<Duration> {
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

/// `trees` fake servers released `gap` apart under the daemon of `source`.
pub(super) fn run(
    ctx: &Context,
    source: &'static str,
    dir: &Path,
    trees: u32,
    gap: Duration,
) -> Result<TierResult> {
    let audit = dir.join(format!("audit-{source}.jsonl"));
    let _ = std::fs::remove_file(&audit);
    let socket = dir.join("c.sock");
    let daemon = start_daemon(ctx, source, dir, &audit.display().to_string())?;
    let mut fleet = Fleet::start(trees)?;
    let pids = fleet.pids();
    let discovery = wait_discovered(ctx, &socket, &pids)?;
    println!(
        "latency ({source}): {} trees tracked live {:.1} s after the last spawn; releasing",
        pids.len(),
        discovery.as_secs_f64()
    );
    let closed_us = fleet.release_each(gap);
    wait_reaped(&audit, &pids);
    daemon.stop()?;
    drop(fleet);
    Ok(tier_result(source, &audit, &pids, &closed_us, discovery))
}
