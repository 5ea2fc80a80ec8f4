//! `cargo xtask test`: what CI runs (`.ci/run`). Sets everything up, then
//! runs the format check, clippy (host crates, then the eBPF crate for its
//! own target) and the whole test suite, and prints a summary. As root,
//! privileged tests are required to run: they fail instead of skipping
//! (`MCP_REAPER_REQUIRE_PRIVILEGED=1`).
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cmd::{cargo, is_root, nightly_cargo};
use crate::setup::{self, Scope, npm_dir};

/// The kernel programs build only for `bpfel-unknown-none` (no_std, own
/// panic handler): host-target clippy and tests leave them out, and they get
/// their own clippy run for the BPF target.
const EBPF_CRATE: &str = "mcp-reaper-ebpf";

struct StepResult {
    name: &'static str,
    elapsed: Duration,
    error: Option<String>,
}

fn timed(name: &'static str, f: impl FnOnce() -> Result<()>) -> StepResult {
    eprintln!("\n== {name}");
    let start = Instant::now();
    let error = f().err().map(|e| format!("{e:#}"));
    StepResult {
        name,
        elapsed: start.elapsed(),
        error,
    }
}

pub fn run() -> Result<ExitCode> {
    let privileged = is_root();
    let mut results = vec![timed("setup --tests", || setup::run_or_fail(Scope::Tests))];
    if results.iter().all(|r| r.error.is_none()) {
        results.push(timed("cargo fmt --check", || {
            cargo(&["fmt", "--all", "--", "--check"]).run()
        }));
        results.push(timed("cargo clippy", || {
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_CRATE,
                "--all-targets",
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
        results.push(timed("cargo test", || {
            let mut test = cargo(&[
                "test",
                "--workspace",
                "--no-fail-fast",
                "--exclude",
                EBPF_CRATE,
            ])
            .env("MCP_REAPER_NPM_DIR", npm_dir());
            if privileged {
                test = test.env("MCP_REAPER_REQUIRE_PRIVILEGED", "1");
            }
            test.run()
        }));
    }

    println!("\n== summary");
    if privileged {
        println!(
            "running as root: privileged tests were required (MCP_REAPER_REQUIRE_PRIVILEGED=1)"
        );
    } else {
        println!("not root: privileged tests skipped themselves; run as root to include them");
    }
    for r in &results {
        let status = r.error.as_deref().map_or("ok", |_| "FAILED");
        println!(
            "{:<22} {status:<7} {:>7.1}s",
            r.name,
            r.elapsed.as_secs_f64()
        );
    }
    let failed: Vec<&StepResult> = results.iter().filter(|r| r.error.is_some()).collect();
    if failed.is_empty() {
        println!("all steps passed");
        return Ok(ExitCode::SUCCESS);
    }
    for r in &failed {
        if let Some(e) = &r.error {
            println!("{}: {e}", r.name);
        }
    }
    Ok(ExitCode::FAILURE)
}
