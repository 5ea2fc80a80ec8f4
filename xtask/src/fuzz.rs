//! `cargo xtask fuzz [TARGET] [--time SECS] [--record]`: runs the fuzz
//! targets of `fuzz/` (cargo-fuzz, libFuzzer with AddressSanitizer, the
//! pinned nightly), each for SECS seconds from a copy of its seed corpus
//! in `fuzz/corpus/<target>`, and prints one line per target: runs,
//! executions per second, coverage, and the crash, if any, with the input
//! that caused it. `--record` writes the table to RELIABILITY.md.
//! `cargo xtask test` runs every target for a few seconds.
//!
//! Owns: the list of targets, their runs and the summary. Must never:
//! change the seed corpus in the repository (runs grow a copy under
//! target/fuzz), report a target as passed when its run did not finish, or
//! report an earlier run's crash input as this run's (each run starts with
//! an empty artifacts directory: copy a crash input away to keep it).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Args as ClapArgs;

use crate::paths::{CARGO_FUZZ_VERSION, cargo_fuzz_root, repo_root, target_dir, tool_path_env};
use crate::toolchain;

/// Every target in fuzz/Cargo.toml, one per kind of outside input.
pub const TARGETS: [&str; 8] = [
    "kernel_record",
    "config",
    "proc_files",
    "fd_files",
    "control_request",
    "http_head",
    "sock_diag",
    "state_files",
];

/// Seconds per target inside `cargo xtask test`.
pub const CI_SECONDS: u32 = 5;

#[derive(ClapArgs)]
pub struct Args {
    /// One target (default: every target, one after the other).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// Seconds to run each target.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub time: u32,
    /// Write the results to RELIABILITY.md (section "Fuzzing").
    #[arg(long)]
    pub record: bool,
    /// Targets run at once (each libFuzzer process uses one core).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
}

/// One target's run.
pub struct Outcome {
    pub target: &'static str,
    pub seconds: f64,
    pub runs: u64,
    pub coverage: u64,
    pub corpus: u64,
    /// The input that crashed it, when one did.
    pub crash: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let targets: Vec<&'static str> = TARGETS
        .into_iter()
        .filter(|t| args.target.as_deref().is_none_or(|w| w == *t))
        .collect();
    let outcomes = run_targets(&targets, args.time, args.jobs)?;
    print_table(&outcomes);
    if args.record {
        record(&outcomes, args)?;
    }
    Ok(if outcomes.iter().any(|o| o.crash.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs each target for `seconds`, `jobs` at once (in the order given); a
/// crash is reported in its outcome, a run that could not start or finish
/// is an error.
pub fn run_targets(targets: &[&'static str], seconds: u32, jobs: usize) -> Result<Vec<Outcome>> {
    let Some(nightly) = toolchain::installed() else {
        bail!(
            "the pinned nightly ({}) is not installed: run `cargo xtask setup`",
            toolchain::NIGHTLY
        );
    };
    let cargo_fuzz = cargo_fuzz_bin();
    if !cargo_fuzz.exists() {
        bail!("cargo-fuzz {CARGO_FUZZ_VERSION} is not installed: run `cargo xtask setup --tests`");
    }
    // One build first, so that parallel runs do not race to build it.
    build(&cargo_fuzz, nightly)?;
    let mut outcomes = Vec::new();
    for batch in targets.chunks(jobs.max(1)) {
        let done: Vec<Result<Outcome>> = std::thread::scope(|s| {
            let runs: Vec<_> = batch
                .iter()
                .map(|t| s.spawn(|| run_one(&cargo_fuzz, nightly, t, seconds)))
                .collect();
            runs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a fuzz run's thread panicked")))
                })
                .collect()
        });
        for outcome in done {
            outcomes.push(outcome?);
        }
    }
    Ok(outcomes)
}

/// `cargo fuzz build` of every target, with the settings `run_one` uses.
fn build(cargo_fuzz: &Path, nightly: &str) -> Result<()> {
    eprintln!("fuzz: building the targets (AddressSanitizer, {nightly})");
    let status = fuzz_command(cargo_fuzz, nightly)
        .args(["fuzz", "build", "--target-dir"])
        .arg(target_dir().join("fuzz").join("build"))
        .status()
        .with_context(|| format!("could not start {}", cargo_fuzz.display()))?;
    if !status.success() {
        bail!("`cargo fuzz build` failed ({status})");
    }
    Ok(())
}

/// cargo-fuzz in the repository root with the pinned nightly; the parsers
/// need no kernel programs.
fn fuzz_command(cargo_fuzz: &Path, nightly: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(repo_root())
        .env("PATH", tool_path_env())
        .env("RUSTUP_TOOLCHAIN", nightly)
        .env("AYA_BUILD_SKIP", "1")
        .stdin(Stdio::null());
    cmd
}

fn cargo_fuzz_bin() -> PathBuf {
    cargo_fuzz_root().join("bin").join("cargo-fuzz")
}

fn run_one(
    cargo_fuzz: &Path,
    nightly: &str,
    target: &'static str,
    seconds: u32,
) -> Result<Outcome> {
    let work = target_dir().join("fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
    // A crash input left by an earlier run is not this run's.
    if artifacts.exists() {
        fs::remove_dir_all(&artifacts)
            .with_context(|| format!("remove {}", artifacts.display()))?;
    }
    fs::create_dir_all(&artifacts).with_context(|| format!("create {}", artifacts.display()))?;
    seed(
        &repo_root().join("fuzz").join("corpus").join(target),
        &corpus,
    )?;
    let log = work.join(format!("{target}.log"));
    let log_file = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    eprintln!("fuzz: {target} for {seconds} s (log: {})", log.display());
    let started = Instant::now();
    let status = fuzz_command(cargo_fuzz, nightly)
        .args(["fuzz", "run", "--target-dir"])
        .arg(work.join("build"))
        .arg(target)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .with_context(|| format!("could not start {}", cargo_fuzz.display()))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let stats = Stats::parse(&text);
    let crash = first_file(&artifacts)?;
    if !status.success() && crash.is_none() {
        bail!(
            "fuzz target {target} failed ({status}) without a crash input: see {}",
            log.display()
        );
    }
    if status.success() && stats.runs == 0 {
        bail!(
            "fuzz target {target} reported no runs: see {}",
            log.display()
        );
    }
    Ok(Outcome {
        target,
        seconds: started.elapsed().as_secs_f64(),
        runs: stats.runs,
        coverage: stats.coverage,
        corpus: fs::read_dir(&corpus).map_or(0, |d| d.count() as u64),
        crash,
    })
}

/// Copies the seeds that the work corpus does not hold yet.
fn seed(from: &Path, to: &Path) -> Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if !dest.exists() {
            fs::copy(entry.path(), &dest)
                .with_context(|| format!("copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn first_file(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_file()))
}

/// What libFuzzer's final lines say.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub runs: u64,
    pub coverage: u64,
}

impl Stats {
    /// From `stat::number_of_executed_units: N` and the last `cov: N`.
    pub fn parse(log: &str) -> Self {
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let coverage = log
            .lines()
            .filter_map(|l| l.split_once(" cov: ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .next_back()
            .unwrap_or(0);
        Self { runs, coverage }
    }
}

const SECTION: &str = "## Fuzzing";

/// Replaces (or appends) RELIABILITY.md's fuzzing section.
fn record(outcomes: &[Outcome], args: &Args) -> Result<()> {
    let path = repo_root().join("RELIABILITY.md");
    let old = fs::read_to_string(&path).unwrap_or_else(|_| "# Reliability\n".to_owned());
    let command = match &args.target {
        Some(t) => format!("cargo xtask fuzz {t} --time {} --record", args.time),
        None => format!(
            "cargo xtask fuzz --time {} --jobs {} --record",
            args.time, args.jobs
        ),
    };
    let date = crate::cmd::Cmd::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .stdout()?;
    let mut section = format!(
        "{SECTION}\n\n- Command: `{command}`\n- Date: {date}\n\n\
         Each target runs libFuzzer with AddressSanitizer (the pinned nightly) from its seed corpus \
         in `fuzz/corpus/<target>`; `cov` is libFuzzer's coverage count at the end.\n\n\
         | target | seconds | runs | runs/s | cov | corpus | result |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n"
    );
    for o in outcomes {
        section.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {} | {} | {} |\n",
            o.target,
            o.seconds,
            o.runs,
            o.runs as f64 / o.seconds.max(0.001),
            o.coverage,
            o.corpus,
            if o.crash.is_some() {
                "CRASH"
            } else {
                "no crash"
            }
        ));
    }
    fs::write(&path, replace_section(&old, &section))
        .with_context(|| format!("write {}", path.display()))?;
    println!("fuzz: wrote {}", path.display());
    Ok(())
}

/// `doc` with the section headed `SECTION` replaced by `section` (up to the
/// next `## ` heading), or `section` appended.
fn replace_section(doc: &str, section: &str) -> String {
    let Some(start) = doc.find(&format!("{SECTION}\n")) else {
        return format!("{}\n\n{section}", doc.trim_end());
    };
    let after = &doc[start + SECTION.len()..];
    let end = after
        .find("\n## ")
        .map_or(doc.len(), |i| start + SECTION.len() + i + 1);
    format!("{}{section}{}", &doc[..start], &doc[end..])
}

pub fn print_table(outcomes: &[Outcome]) {
    println!(
        "\n{:<16} {:>8} {:>12} {:>10} {:>6} {:>7}  result",
        "target", "seconds", "runs", "runs/s", "cov", "corpus"
    );
    for o in outcomes {
        println!(
            "{:<16} {:>8.0} {:>12} {:>10.0} {:>6} {:>7}  {}",
            o.target,
            o.seconds,
            o.runs,
            o.runs as f64 / o.seconds.max(0.001),
            o.coverage,
            o.corpus,
            o.crash
                .as_ref()
                .map_or_else(|| "ok".to_owned(), |p| format!("CRASH: {}", p.display()))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_of_the_fuzz_manifest_is_listed() -> Result<()> {
        let manifest = fs::read_to_string(repo_root().join("fuzz/Cargo.toml"))?;
        let mut names: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "mcp-reaper-fuzz")
            .collect();
        names.sort_unstable();
        let mut listed = TARGETS.to_vec();
        listed.sort_unstable();
        assert_eq!(names, listed);
        for t in TARGETS {
            let seeds = fs::read_dir(repo_root().join("fuzz/corpus").join(t))?.count();
            assert!(seeds > 0, "{t} has no seed corpus");
        }
        Ok(())
    }

    #[test]
    fn recording_replaces_only_the_fuzzing_section() {
        let doc = "# Reliability\n\n## Soak\nsoak\n\n## Fuzzing\nold\n\n## Later\nkept\n";
        let out = replace_section(doc, "## Fuzzing\nnew\n\n");
        assert_eq!(
            out,
            "# Reliability\n\n## Soak\nsoak\n\n## Fuzzing\nnew\n\n## Later\nkept\n"
        );
        let appended = replace_section("# Reliability\n", "## Fuzzing\nnew\n");
        assert_eq!(appended, "# Reliability\n\n## Fuzzing\nnew\n");
    }

    #[test]
    fn stats_come_from_the_final_lines() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 3/30b\n\
                   #4096\tpulse  cov: 120 ft: 300 corp: 40/1Kb\n\
                   #9000\tDONE   cov: 131 ft: 320 corp: 44/1Kb\n\
                   Done 9000 runs in 5 second(s)\n\
                   stat::number_of_executed_units: 9000\n";
        assert_eq!(
            Stats::parse(log),
            Stats {
                runs: 9000,
                coverage: 131
            }
        );
        assert_eq!(Stats::parse("no stats"), Stats::default());
    }
}
