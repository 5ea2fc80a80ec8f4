//! Memory under process churn: the daemon's resident memory must be bounded
//! by what is alive and tracked, not by how many processes the machine ran.
//!
//! The daemon runs with `--source ebpf` and the latency benchmark's config
//! (one `[[server]]` rule for the fake servers). Its memory is read after a
//! rest (cold), after a short warm-up churn has settled (the baseline: code
//! paths paged in, lazily built state built), and after the measured churn
//! has settled. A churn is process lifetimes, half `/bin/true` and half
//! `sleep` of 0.1-0.5 s, `--churn-alive` of them running at once, and every
//! 1000 lifetimes a fake server tree (stdio on a socketpair this process
//! holds) that ends a few trees later, so tree tables churn too. Settling
//! is waiting `--churn-settle-secs` (several of the daemon's gc rounds)
//! once every process is gone. With `--churn-compare-bin` another build (say, the
//! base commit's) is measured the same way first, for a before/after table.
//! Every process started here is killed and waited for on every exit path.
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::context::Context;
use super::report::Section;
use super::shared::{Fleet, Scratch, percentile};
use crate::child_daemon::{Daemon, Memory, RunArgs, mib};

const TITLE: &str = "Memory under process churn";
/// Rest before the first reading.
const REST: Duration = Duration::from_secs(5);
/// A fake server tree is started every this many lifetimes.
const TREE_EVERY: u64 = 1000;
/// Fake server trees running at once; the oldest is ended for a new one.
const TREES_ALIVE: usize = 4;
/// How often VmRSS is sampled during the churn.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Growth of VmRSS allowed over the churn: 1 MB.
const TARGET_GROWTH_BYTES: u64 = 1_000_000;

#[derive(clap::Args)]
#[command(next_help_heading = "churn-memory")]
#[group(id = "churn_args")]
pub struct Args {
    /// Process lifetimes run (half /bin/true, half sleep of 0.1-0.5 s).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    churn_lifetimes: u64,
    /// Lifetimes of the warm-up churn before the baseline reading (0: the
    /// cold reading is the baseline).
    #[arg(long, default_value_t = 2_000)]
    churn_warmup: u64,
    /// Churn processes running at once.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    churn_alive: u32,
    /// Seconds to wait after the churn before the last reading.
    #[arg(long, default_value_t = 30)]
    churn_settle_secs: u64,
    /// Another daemon binary (e.g. a build of the base commit) measured the
    /// same way first, for comparison.
    #[arg(long, value_name = "PATH")]
    churn_compare_bin: Option<PathBuf>,
}

/// One daemon's run.
struct Run {
    label: String,
    cold: Memory,
    /// After the warm-up (the cold reading when there was none).
    rest: Memory,
    after: Memory,
    /// VmRSS samples during the churn, KiB, sorted.
    during_kib: Vec<u64>,
    lifetimes: u64,
    trees: u64,
    churn: Duration,
}

impl Run {
    fn growth_kib(&self) -> i64 {
        diff(self.rest.rss_kib, self.after.rss_kib)
    }
}

fn diff(from: u64, to: u64) -> i64 {
    i64::try_from(to).unwrap_or(i64::MAX) - i64::try_from(from).unwrap_or(i64::MAX)
}

/// A xorshift generator: reproducible lifetimes without a dependency.
struct Lifetimes(u64);

impl Lifetimes {
    /// `None` for `/bin/true`, else a sleep of 100-500 ms.
    fn next(&mut self) -> Option<u64> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 & 1 == 1).then_some(100 + (self.0 >> 1) % 401)
    }
}

fn spawn(lifetime_ms: Option<u64>) -> Result<Child> {
    let mut cmd = match lifetime_ms {
        None => Command::new("/bin/true"),
        Some(ms) => {
            let mut c = Command::new("sleep");
            c.arg(format!("{}.{:03}", ms / 1000, ms % 1000));
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn a churn process")
}

/// Churn processes; dropping it kills and waits for every one still running.
#[derive(Default)]
struct Pool(Vec<Child>);

impl Pool {
    /// Waits for the ones that exited; how many are left.
    fn reap(&mut self) -> usize {
        self.0.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        self.0.len()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `total` lifetimes against a started daemon; returns the lifetimes
/// and trees run and the VmRSS samples taken meanwhile.
fn churn(daemon: &mut Daemon, args: &Args, total: u64) -> Result<(u64, u64, Vec<u64>)> {
    let alive = usize::try_from(args.churn_alive).unwrap_or(usize::MAX);
    let mut pool = Pool::default();
    let mut trees: VecDeque<Fleet> = VecDeque::new();
    let mut lifetimes = Lifetimes(0x9E37_79B9_7F4A_7C15);
    let mut samples = Vec::new();
    let mut next_sample = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let (mut run, mut tree_count) = (0u64, 0u64);
    while run < total {
        while pool.reap() < alive && run < total {
            pool.0.push(spawn(lifetimes.next())?);
            run += 1;
            if run.is_multiple_of(TREE_EVERY) {
                if trees.len() == TREES_ALIVE {
                    trees.pop_front();
                }
                trees.push_back(Fleet::start(1)?);
                tree_count += 1;
            }
        }
        if Instant::now() >= next_sample {
            samples.push(daemon.memory()?.rss_kib);
            next_sample += SAMPLE_EVERY;
        }
        if Instant::now() >= next_report {
            println!("churn-memory: {run} of {total} lifetimes");
            next_report += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    while pool.reap() > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(trees);
    samples.sort_unstable();
    Ok((run, tree_count, samples))
}

fn measure(bin: &Path, label: &str, args: &Args, dir: &Path) -> Result<Run> {
    let mut daemon = RunArgs::new("ebpf", dir)
        .start(bin)
        .with_context(|| format!("start the daemon `{}`", bin.display()))?;
    let settle = Duration::from_secs(args.churn_settle_secs);
    std::thread::sleep(REST);
    let cold = daemon.memory()?;
    let rest = if args.churn_warmup > 0 {
        churn(&mut daemon, args, args.churn_warmup)?;
        std::thread::sleep(settle);
        daemon.memory()?
    } else {
        cold
    };
    println!(
        "churn-memory ({label}): VmRSS cold {} kB, baseline {} kB; running {} lifetimes, {} at once",
        cold.rss_kib, rest.rss_kib, args.churn_lifetimes, args.churn_alive
    );
    let start = Instant::now();
    let (lifetimes, trees, during_kib) = churn(&mut daemon, args, args.churn_lifetimes)?;
    let churn = start.elapsed();
    println!(
        "churn-memory ({label}): churn took {:.1} s; settling {} s",
        churn.as_secs_f64(),
        args.churn_settle_secs
    );
    std::thread::sleep(settle);
    let after = daemon.memory()?;
    daemon.stop()?;
    println!(
        "churn-memory ({label}): after VmRSS {} kB, VmHWM {} kB",
        after.rss_kib, after.hwm_kib
    );
    Ok(Run {
        label: label.to_owned(),
        cold,
        rest,
        after,
        during_kib,
        lifetimes,
        trees,
        churn,
    })
}

pub fn run(ctx: &Context, args: &Args) -> Result<Section> {
    let scratch = Scratch::with_config("churn")?;
    let dir = &scratch.0;
    let mut runs = Vec::new();
    if let Some(before) = &args.churn_compare_bin {
        runs.push(measure(
            before,
            &format!("`{}` (--churn-compare-bin)", before.display()),
            args,
            dir,
        )?);
    }
    runs.push(measure(&ctx.daemon_bin, "this build", args, dir)?);
    Ok(summarize(ctx, args, &runs))
}

fn summarize(ctx: &Context, args: &Args, runs: &[Run]) -> Section {
    let mut body = ctx.header();
    let _ = writeln!(
        body,
        "\nThe daemon (`mcp-reaper run --source ebpf --config <config> --listen off --audit-log off \
         --control-socket <socket>`, the latency benchmark's config) rests {} s (**cold** reading); \
         a warm-up churn of {} lifetimes runs and settles (**baseline**: code paths paged in, lazy \
         state built); then the measured churn: {} process lifetimes, half `/bin/true` and half \
         `sleep` of 0.1-0.5 s, {} running at once, and a fake server tree every {TREE_EVERY} \
         lifetimes ({TREES_ALIVE} at once, each ended when a newer one starts). Settling is waiting \
         {} s (the daemon's gc runs every 10 s) once every process is gone. Readings are VmRSS, \
         VmHWM and RssAnon from `/proc/<pid>/status`; growth is the reading after the measured \
         churn minus the baseline.\n",
        REST.as_secs(),
        args.churn_warmup,
        args.churn_lifetimes,
        args.churn_alive,
        args.churn_settle_secs,
    );
    body.push_str(
        "| daemon | lifetimes (trees) | churn time | VmRSS cold | VmRSS baseline | VmRSS during churn \
         (p50 / max) | VmRSS after | VmHWM after | RssAnon baseline / after | growth (VmRSS) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in runs {
        let during = |q| percentile(&r.during_kib, q).map_or_else(|| "n/a".to_owned(), mib);
        let _ = writeln!(
            body,
            "| {} | {} ({}) | {:.0} s ({:.0}/s) | {} | {} | {} / {} | {} | {} | {} / {} kB | {:+} kB |",
            r.label,
            r.lifetimes,
            r.trees,
            r.churn.as_secs_f64(),
            r.lifetimes as f64 / r.churn.as_secs_f64().max(f64::EPSILON),
            mib(r.cold.rss_kib),
            mib(r.rest.rss_kib),
            during(50.0),
            during(100.0),
            mib(r.after.rss_kib),
            mib(r.after.hwm_kib),
            r.rest.anon_kib,
            r.after.anon_kib,
            r.growth_kib(),
        );
    }
    let mut missed = Vec::new();
    if let Some(r) = runs.last() {
        let growth = r.growth_kib();
        let met = growth <= i64::try_from(TARGET_GROWTH_BYTES / 1024).unwrap_or(i64::MAX);
        let _ = writeln!(
            body,
            "\n| metric | result | target | |\n| --- | --- | --- | --- |\n\
             | VmRSS growth over {} lifetimes (this build) | {growth:+} kB | <= 1 MB ({} kB) | {} |\n\
             | VmRSS growth since the cold reading (this build) | {:+} kB | | |",
            r.lifetimes,
            TARGET_GROWTH_BYTES / 1024,
            if met { "met" } else { "**missed**" },
            diff(r.cold.rss_kib, r.after.rss_kib),
        );
        if !met {
            missed.push(format!(
                "daemon VmRSS grew {growth:+} kB over {} lifetimes",
                r.lifetimes
            ));
        }
    }
    Section::with_targets(TITLE, body, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            daemon_bin: PathBuf::from("/nonexistent/mcp-reaper"),
            command_line: "cargo xtask bench churn-memory".to_owned(),
            date: "2026-11-25".to_owned(),
            kernel: "6.18.0".to_owned(),
            machine: "test".to_owned(),
            busy_note: None,
        }
    }

    fn mem(rss_kib: u64) -> Memory {
        Memory {
            hwm_kib: rss_kib + 100,
            rss_kib,
            anon_kib: rss_kib / 2,
        }
    }

    fn run(label: &str, rest: u64, after: u64) -> Run {
        Run {
            label: label.to_owned(),
            cold: mem(rest - 1000),
            rest: mem(rest),
            after: mem(after),
            during_kib: vec![rest, after],
            lifetimes: 1000,
            trees: 1,
            churn: Duration::from_secs(2),
        }
    }

    #[test]
    fn lifetimes_mix_true_and_bounded_sleeps() {
        let mut l = Lifetimes(0x9E37_79B9_7F4A_7C15);
        let all: Vec<Option<u64>> = (0..10_000).map(|_| l.next()).collect();
        let sleeps: Vec<u64> = all.iter().flatten().copied().collect();
        assert!((4_000..6_000).contains(&sleeps.len()), "{}", sleeps.len());
        assert!(sleeps.iter().all(|ms| (100..=500).contains(ms)));
        assert!(sleeps.iter().any(|&ms| ms < 150) && sleeps.iter().any(|&ms| ms > 450));
    }

    #[test]
    fn growth_target_is_judged_on_the_last_run() {
        let args = Args {
            churn_lifetimes: 1000,
            churn_warmup: 0,
            churn_alive: 10,
            churn_settle_secs: 0,
            churn_compare_bin: None,
        };
        let s = summarize(
            &ctx(),
            &args,
            &[
                run("before", 15_000, 60_000),
                run("this build", 15_000, 15_500),
            ],
        );
        assert!(s.missed_targets.is_empty(), "{:?}", s.missed_targets);
        assert!(
            s.body.contains("+45000 kB") && s.body.contains("+500 kB"),
            "{}",
            s.body
        );
        let s = summarize(&ctx(), &args, &[run("this build", 15_000, 17_000)]);
        assert_eq!(s.missed_targets.len(), 1, "{}", s.body);
    }

    #[test]
    fn pool_waits_for_its_processes() -> Result<()> {
        let mut pool = Pool::default();
        pool.0.push(spawn(None)?);
        pool.0.push(spawn(Some(100))?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.reap() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pool.reap(), 0);
        Ok(())
    }
}
