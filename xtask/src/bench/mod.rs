//! `cargo xtask bench [NAME...]`: runs benchmarks and records each one as a
//! `## <title>` section of BENCHMARKS.md, replacing that section and keeping
//! the others.
//!
//! To add a benchmark: a module with an `Args` struct (flattened into
//! [`BenchArgs`]) and a `run(&Context, &Args) -> Result<Section>`, a variant
//! of [`BenchName`], and an arm in [`run_one`].
//!
//! Layers, each importing only the ones below it: this file (options,
//! dispatch, writing sections); the benchmarks (`spawn_storm`, `scan`,
//! `latency/`, `scrape`, `churn_memory`; `scan_daemon` is `scan`'s own),
//! which never import each other or this file; and what they share:
//! `context` (the run's context), `daemon` (the daemon under test), `shared` (fake servers, scratch directory,
//! storms, statistics) and `report` (sections of BENCHMARKS.md).
mod churn_memory;
mod context;
mod latency;
mod report;
mod scan;
mod scan_daemon;
mod scrape;
mod shared;
mod spawn_storm;

pub use latency::{WORKER_COMMAND, storm_worker};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use crate::cmd::{cargo, is_root};
use crate::paths::{repo_root, target_dir};
use crate::setup::{self, Scope};

use context::Context;
use report::Section;

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

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let names = if args.names.is_empty() {
        BenchName::value_variants().to_vec()
    } else {
        args.names.clone()
    };
    if !is_root() {
        bail!("the benchmarks run the daemon, which needs root: run `cargo xtask bench` as root");
    }
    setup::run_or_fail(Scope::TOOLCHAIN)?;
    cargo(&["build", "--release", "--package", "mcp-reaper"]).run()?;
    let ctx = Context::of_this_run(target_dir().join("release").join("mcp-reaper"));
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
