//! The daemon's own lifecycle with the real binary: a daemon whose event
//! source dies exits non-zero (so `Restart=on-failure` restarts it) instead
//! of idling with nothing tracked. Needs root (it loads the kernel
//! programs, and the poll tier reads every process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcp_reaper_tests::privileged;

/// Runs `mcp-reaper run --source SOURCE` with the source killed by fault
/// injection 500 ms in; returns (exit code, stderr), or panics after 30 s.
fn run_with_dying_source(source: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "presets = []\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["run", "--source", source, "--listen", "off"])
        .args(["--control-socket", "off", "--config"])
        .arg(&config)
        .env("MCP_REAPER_FAULT_STOP_SOURCE_MS", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon ({source}) kept running after its source died");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn a_dead_event_source_exits_non_zero() {
    if !privileged("a_dead_event_source_exits_non_zero") {
        return;
    }
    for source in ["ebpf", "poll"] {
        let (code, err) = run_with_dying_source(source);
        assert_eq!(code, Some(1), "{source}: {err}");
        assert!(
            err.contains("event source stopped"),
            "{source}: no word of why: {err}"
        );
    }
}
