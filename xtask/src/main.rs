//! `cargo xtask`: the single entry point for developers and CI.
//!
//! Owns: toolchain bootstrap (nightly rust-src, bpf-linker built against the
//! nightly toolchain's own LLVM), test prerequisites (Debian and npm
//! packages), builds, the privileged test run and the benchmarks.
//!
//! Must never: touch anything outside the repository and the tools directory
//! (`~/.cache/mcp-reaper`, or `$MCP_REAPER_TOOLS_DIR`) except through the
//! system package manager in `setup --tests`.
mod bench;
mod cmd;
mod setup;
mod test;

use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and benchmark mcp-reaper"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building (and, with --tests, testing) needs. Idempotent.
    Setup {
        /// Also install the test prerequisites (promtool, npm packages).
        #[arg(long)]
        tests: bool,
    },
    /// Set up the toolchain and build the workspace's default members.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build in release mode and run the daemon (needs root).
    Run {
        /// Arguments passed to `mcp-reaper run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up everything, then fmt check, clippy and the whole test suite.
    Test,
    /// Run benchmarks and record the results in BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Internal to `bench latency`: storms when told on stdin.
    #[command(name = bench::WORKER_COMMAND, hide = true)]
    StormWorker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { tests } => setup::run(setup::Scope::from_tests_flag(tests)),
        Command::Build { release } => build(release),
        Command::Run { args } => run(&args),
        Command::Test => test::run(),
        Command::Bench(args) => bench::run(&args),
        Command::StormWorker => bench::storm_worker(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build(release: bool) -> Result<ExitCode> {
    setup::run_or_fail(setup::Scope::Toolchain)?;
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    cmd::cargo(&args).run()?;
    Ok(ExitCode::SUCCESS)
}

fn run(args: &[String]) -> Result<ExitCode> {
    if !cmd::is_root() {
        eprintln!(
            "error: the daemon loads eBPF programs and signals other users' processes: run `cargo xtask run` as root"
        );
        return Ok(ExitCode::from(2));
    }
    setup::run_or_fail(setup::Scope::Toolchain)?;
    cmd::cargo(&["build", "--release", "--package", "mcp-reaper"]).run()?;
    let bin = cmd::target_dir().join("release").join("mcp-reaper");
    eprintln!("exec: {} run {}", bin.display(), args.join(" "));
    let err = std::process::Command::new(&bin)
        .arg("run")
        .args(args)
        .env("PATH", setup::tool_path_env())
        .exec();
    Err(err).with_context(|| format!("exec {}", bin.display()))
}
