//! The command line as operators and scripts use it: exit codes, error
//! messages and machine-readable output. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn reaper(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(args)
        .output()
        .expect("run mcp-reaper")
}

#[test]
fn config_check_reports_every_error_with_line_and_column_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[policy]\ngrace = \"soon\"\n\n[[host]]\nname = \"Bad Name\"\ncomm = '('\n",
    )
    .unwrap();
    let out = reaper(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:2:")),
        "duration error line: {err}"
    );
    assert!(
        err.contains(&format!("{file}:5:")),
        "name error line: {err}"
    );
    assert!(
        err.contains(&format!("{file}:6:")),
        "regex error line: {err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_printed_default_config_checks_clean() {
    let out = reaper(&["config", "default"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = reaper(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn scan_json_has_the_documented_shape() {
    let out = reaper(&["scan", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert!(v["trees"].is_array());
    for key in [
        "trees",
        "live",
        "orphaned",
        "suspect",
        "unknown",
        "orphaned_rss_bytes",
    ] {
        assert!(v["totals"][key].is_u64(), "totals.{key} missing: {v}");
    }
    assert!(v["processes_scanned"].as_u64().unwrap() > 0);
}

#[test]
fn scan_with_an_invalid_config_exits_2_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "presets = [\"no-such-host\"]\n").unwrap();
    let out = reaper(&["scan", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1:"));
}

#[test]
fn help_explains_exit_codes() {
    let out = reaper(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit codes"), "{text}");
    let out = reaper(&["scan", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check"));
}
