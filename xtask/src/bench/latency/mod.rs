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
//!
//! One file per stage: `tier` (one detection tier), `chained` (the chained
//! host's row), `storm` (the spawn storm with live trees), `audit` (reading
//! the daemon's audit log) and `summary` (the section). They import each
//! other one way only (`summary` -> `storm`, `chained` -> `tier` ->
//! `audit`), and never this file, which only runs them in order.
mod audit;
mod chained;
mod storm;
mod summary;
mod tier;

pub use storm::{WORKER_COMMAND, storm_worker};

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::context::Context;
use super::report::Section;
use super::shared::Scratch;
use tier::CLOSE_TIER;

const TIERS: &[&str] = &["ebpf", CLOSE_TIER, "poll"];

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

pub fn run(ctx: &Context, args: &Args) -> Result<Section> {
    let scratch = Scratch::with_config("latency")?;
    let dir: &Path = &scratch.0;
    let gap = Duration::from_millis(args.release_gap_ms);
    let mut tiers = Vec::new();
    for source in TIERS {
        tiers.push(tier::run(ctx, source, dir, args.trees, gap)?);
    }
    if args.chained_trees > 0 {
        tiers.push(chained::run(ctx, dir, args.chained_trees, gap)?);
    }
    let storm = storm::run(
        ctx,
        dir,
        args.storm_live_trees,
        args.storm_rounds,
        args.storm_spawns,
    )?;
    Ok(summary::summarize(
        ctx,
        &tiers,
        &storm,
        args.trees,
        args.release_gap_ms,
    ))
}
