//! Every command that prints, with its standard output a pipe nobody reads
//! any more (`mcp-reaper scan --json | head -1` once `head` has exited):
//! the output ends there, quietly, and the exit code is what the command
//! would have returned anyway. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

/// Runs the binary with `args`, its stdout a pipe whose read end is
/// already closed, so that its first write fails with EPIPE.
fn with_closed_stdout(args: &[&str], default_config: &std::path::Path) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(args)
        .env("MCP_REAPER_DEFAULT_CONFIG", default_config)
        .env_remove("MCP_REAPER_CONFIG")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_is_a_normal_end_for_every_command_that_prints() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.toml");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[policy]\ngrace = \"3s\"\n").unwrap();
    let good = good.to_str().unwrap();
    let pages = dir.path().join("man");
    let pages = pages.to_str().unwrap();
    for args in [
        &["scan", "--json", "--daemon-socket", "off"][..],
        &["scan", "--daemon-socket", "off"],
        &["config", "default"],
        &["config", "presets"],
        &["config", "check", good],
        &["completions", "bash"],
        &["manpage"],
        &["manpage", "--dir", pages],
        &["--help"],
        &["run", "--help"],
        &["--version"],
    ] {
        let out = with_closed_stdout(args, &absent);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}
