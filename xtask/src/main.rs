//! `cargo xtask`: the single entry point for developers and CI.
//!
//! Owns: toolchain bootstrap (the pinned nightly, its rust-src, bpf-linker
//! built against that nightly's own LLVM), test prerequisites (Debian and
//! npm packages), builds, the release artifacts (`dist`), the privileged
//! test run, the benchmarks and the import-cycle check (`layout`).
//!
//! Must never: touch anything outside the repository and the tools directory
//! (`~/.cache/mcp-reaper`, or `$MCP_REAPER_TOOLS_DIR`) except through the
//! system package manager in `setup --tests`.
mod bench;
mod child_daemon;
mod cmd;
mod dist;
mod fuzz;
mod image;
mod layout;
mod paths;
mod plain_build;
mod sections;
mod setup;
mod soak;
mod stats;
mod test;
mod toolchain;

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
        /// Also install the test prerequisites (promtool, podman and runc,
        /// npm packages).
        #[arg(long)]
        tests: bool,
        /// Also install what `dist` needs (the musl target, cargo-deb).
        #[arg(long)]
        dist: bool,
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
    /// Set up everything, then fmt check, import cycles, clippy and the
    /// whole test suite.
    Test,
    /// Build the release artifacts in target/dist: a static musl binary, a
    /// tarball, a Debian package and their SHA-256 sums.
    Dist,
    /// Build the daemon's container image (FROM scratch, the static binary)
    /// with Podman; no registry needed.
    Image(image::Args),
    /// Run the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer).
    Fuzz(fuzz::Args),
    /// Report import cycles between the files of mcp-reaper/src and xtask/src.
    #[command(long_about = layout::LONG_ABOUT)]
    Layout(layout::Args),
    /// Run benchmarks and record the results in BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Internal to `bench latency`: storms when told on stdin.
    #[command(name = bench::WORKER_COMMAND, hide = true)]
    StormWorker,
    /// A hostile, seeded soak of the daemon (root): many concurrent session
    /// lifecycles of every scenario kind, chaos by flag, ground truth from
    /// /proc and pidfds; one JSON verdict line, non-zero on any false kill
    /// or leak.
    Soak(soak::SoakArgs),
    /// Internal to `soak`: a stand-in MCP host.
    #[command(name = soak::host::HOST_COMMAND, hide = true)]
    SoakHost(soak::host::HostArgs),
    /// Internal to `soak`: holds an fd passed over SCM_RIGHTS.
    #[command(name = soak::host::KEEPER_COMMAND, hide = true)]
    SoakKeeper,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { tests, dist } => setup::run(setup::Scope { tests, dist }),
        Command::Build { release } => build(release),
        Command::Run { args } => run(&args),
        Command::Test => test::run(),
        Command::Dist => dist::run(),
        Command::Image(args) => image::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Layout(args) => Ok(layout::run(&args)),
        Command::Bench(args) => bench::run(&args),
        Command::StormWorker => bench::storm_worker(),
        Command::Soak(args) => soak::run(&args),
        Command::SoakHost(args) => soak::host::host(&args),
        Command::SoakKeeper => soak::host::keeper(),
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
    setup::run_or_fail(setup::Scope::TOOLCHAIN)?;
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
    setup::run_or_fail(setup::Scope::TOOLCHAIN)?;
    cmd::cargo(&["build", "--release", "--package", "mcp-reaper"]).run()?;
    let bin = paths::target_dir().join("release").join("mcp-reaper");
    eprintln!("exec: {} run {}", bin.display(), args.join(" "));
    let err = std::process::Command::new(&bin)
        .arg("run")
        .args(args)
        .env("PATH", paths::tool_path_env())
        .exec();
    Err(err).with_context(|| format!("exec {}", bin.display()))
}
