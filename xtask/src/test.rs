//! `cargo xtask test`: what CI runs (`.ci/run`). Sets everything up, then
//! runs the format check, the import-cycle check between files (`layout`),
//! clippy (host crates, then the eBPF crate for its own target), the
//! container image (root only; `tests/tests/container.rs` runs it), the
//! whole test suite, a few seconds of every fuzz target (`fuzz`), as root
//! the CI-sized soak (`soak::ci`), the plain-cargo build check
//! (`plain_build`) and, as root, the
//! Debian package's round trip (`dist::roundtrip`), and prints a summary.
//! As root, privileged tests are required to run: they fail instead of
//! skipping (`MCP_REAPER_REQUIRE_PRIVILEGED=1`).
//!
//! Owns: the order of the CI steps and their summary. Must never: change
//! the sources (the format step only checks).
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cmd::{cargo, is_root};
use crate::dist::roundtrip;
use crate::fuzz;
use crate::image;
use crate::layout;
use crate::paths::npm_dir;
use crate::plain_build;
use crate::setup::{self, Scope};
use crate::soak;
use crate::toolchain::nightly_cargo;

/// The kernel programs build only for `bpfel-unknown-none` (no_std, own
/// panic handler): host-target clippy and tests leave them out, and they get
/// their own clippy run for the BPF target.
const EBPF_CRATE: &str = "mcp-reaper-ebpf";

struct StepResult {
    name: &'static str,
    elapsed: Duration,
    error: Option<String>,
    /// Why the step did not run, when it did not.
    skipped: Option<String>,
}

fn timed(name: &'static str, f: impl FnOnce() -> Result<()>) -> StepResult {
    eprintln!("\n== {name}");
    let start = Instant::now();
    let error = f().err().map(|e| format!("{e:#}"));
    StepResult {
        name,
        elapsed: start.elapsed(),
        error,
        skipped: None,
    }
}

fn skipped(name: &'static str, reason: String) -> StepResult {
    eprintln!("\n== {name}: skipped: {reason}");
    StepResult {
        name,
        elapsed: Duration::ZERO,
        error: None,
        skipped: Some(reason),
    }
}

/// After the test suite: a plain `cargo check` that must find bpf-linker
/// without PATH's help, then the .deb round trip (root only).
fn packaging_steps(results: &mut Vec<StepResult>) {
    results.push(timed("plain cargo build", plain_build::check));
    results.push(match roundtrip::skip_reason() {
        Some(reason) => skipped(".deb round trip", reason),
        None => timed(".deb round trip", roundtrip::run),
    });
}

pub fn run() -> Result<ExitCode> {
    let privileged = is_root();
    let mut results = vec![timed("setup --tests", || setup::run_or_fail(Scope::TESTS))];
    if results.iter().all(|r| r.error.is_none()) {
        results.push(timed("cargo fmt --check", || {
            cargo(&["fmt", "--all", "--", "--check"]).run()
        }));
        results.push(timed("layout (import cycles)", layout::check_workspace));
        results.push(timed("cargo clippy", || {
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_CRATE,
                "--all-targets",
                // The fuzz targets' entry points are linted with the rest.
                "--features",
                "mcp-reaper/fuzzing",
                "--",
                "-D",
                "warnings",
            ])
            .run()
        }));
        results.push(timed("cargo clippy (eBPF)", || {
            nightly_cargo(&[
                "clippy",
                "--package",
                EBPF_CRATE,
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            .run()
        }));
        let image = image::default_tag();
        results.push(if privileged {
            timed("container image", || image::build(&image))
        } else {
            skipped(
                "container image",
                "not root: podman builds as root here".into(),
            )
        });
        results.push(timed("cargo test", || {
            let mut test = cargo(&[
                "test",
                "--workspace",
                "--no-fail-fast",
                "--exclude",
                EBPF_CRATE,
            ])
            .env("MCP_REAPER_NPM_DIR", npm_dir())
            .env("MCP_REAPER_IMAGE", &image);
            if privileged {
                test = test.env("MCP_REAPER_REQUIRE_PRIVILEGED", "1");
            }
            test.run()
        }));
        results.push(timed("fuzz (short runs)", fuzz_short));
        results.push(if privileged {
            timed("soak (CI size)", soak::ci)
        } else {
            skipped(
                "soak (CI size)",
                "not root: the soak runs the daemon".into(),
            )
        });
        packaging_steps(&mut results);
    }

    Ok(print_summary(&results, privileged))
}

/// Every fuzz target for `fuzz::CI_SECONDS`: a crash fails the step.
fn fuzz_short() -> Result<()> {
    let outcomes = fuzz::run_targets(&fuzz::TARGETS, fuzz::CI_SECONDS, 1)?;
    fuzz::print_table(&outcomes);
    let crashed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| Some(format!("{}: {}", o.target, o.crash.as_ref()?.display())))
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("fuzz targets crashed: {}", crashed.join(", "))
    }
}

fn print_summary(results: &[StepResult], privileged: bool) -> ExitCode {
    println!("\n== summary");
    if privileged {
        println!(
            "running as root: privileged tests were required (MCP_REAPER_REQUIRE_PRIVILEGED=1)"
        );
    } else {
        println!("not root: privileged tests skipped themselves; run as root to include them");
    }
    for r in results {
        let status = match (&r.error, &r.skipped) {
            (Some(_), _) => "FAILED",
            (None, Some(_)) => "skipped",
            (None, None) => "ok",
        };
        println!(
            "{:<22} {status:<7} {:>7.1}s",
            r.name,
            r.elapsed.as_secs_f64()
        );
    }
    for r in results {
        if let Some(reason) = &r.skipped {
            println!("{}: skipped: {reason}", r.name);
        }
    }
    let failed: Vec<&StepResult> = results.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        println!("all steps passed");
        return ExitCode::SUCCESS;
    }
    for r in &failed {
        if let Some(e) = &r.error {
            println!("{}: {e}", r.name);
        }
    }
    ExitCode::FAILURE
}
