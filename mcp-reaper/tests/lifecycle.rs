//! The daemon's own lifecycle with the real binary: a daemon whose event
//! source dies exits non-zero (so `Restart=on-failure` restarts it) instead
//! of idling with nothing tracked; SIGHUP reloads the configuration (a bad
//! one is counted and the old one stays; nothing is killed by a reload).
//! Needs root (it loads the kernel programs, and reads every process).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcp_reaper_tests::{
    host::{TestHost, Transport, host_config, is_alive, server_tree_pids},
    privileged, wait_until,
};

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
    let _serial = common::serial();
    for source in ["ebpf", "poll"] {
        let (code, err) = run_with_dying_source(source);
        assert_eq!(code, Some(1), "{source}: {err}");
        assert!(
            err.contains("event source stopped"),
            "{source}: no word of why: {err}"
        );
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) of our own unreaped child: its PID cannot be reused.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Whether a line holding `needle` comes within `timeout`, however many
/// other lines come first (a busy machine gives the daemon much to say).
fn logged(logs: &std::sync::mpsc::Receiver<String>, needle: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match logs.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of an unlabelled series on the daemon's /metrics.
fn metric(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A daemon (eBPF tier) on `config` with /metrics on `port`.
fn daemon(
    config: &std::path::Path,
    port: u16,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["run", "--source", "ebpf", "--control-socket", "off"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = mcp_reaper_tests::lines_of(child.stderr.take().unwrap());
    let ready = logged(&rx, ": ready ", Duration::from_secs(60));
    assert!(ready, "the daemon never logged ready");
    (child, rx)
}

/// SIGHUP with a broken file: logged, counted, the old configuration stays
/// (the released tree is still only observed). SIGHUP with a valid file
/// that enforces: the tree goes, but only after a full grace period from
/// the reload, never at the moment of it. The live tree is never touched.
#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid() {
    if !privileged("sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid") {
        return;
    }
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let observe = format!(
        "{}\n[policy.actions]\npeer-released = \"observe\"\n",
        host_config("4s", "1s").trim_end()
    );
    std::fs::write(&config, &observe).unwrap();
    let port = free_port();
    let (mut child, logs) = daemon(&config, port);
    let mut host = TestHost::start();
    let released = host.spawn("released", Transport::Socket, &[]);
    let kept = host.spawn("kept", Transport::Socket, &[]);
    let (released_pids, kept_pids) = (server_tree_pids(released.pid), server_tree_pids(kept.pid));
    host.close_stdin("released");

    std::fs::write(&config, "[policy]\ngrace = \"soon\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            port,
            "mcp_reaper_config_reload_failures_total"
        ) == Some(1.0)),
        "the rejected reload was not counted"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    // Observe (the old config) well past the grace: nothing is reaped.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        released_pids.iter().all(|p| is_alive(*p)),
        "the old config was not kept"
    );

    std::fs::write(&config, host_config("4s", "1s")).unwrap();
    signal(&child, libc::SIGHUP);
    let reloaded = logged(&logs, "configuration reloaded", Duration::from_secs(30));
    assert!(reloaded, "the valid reload was never put in force");
    // The grace starts again at the reload: not reaped at once...
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        released_pids.iter().all(|p| is_alive(*p)),
        "a reload reaped at the moment it landed"
    );
    // ...but after it.
    assert!(
        wait_until(Duration::from_secs(20), || released_pids
            .iter()
            .all(|p| !is_alive(*p))),
        "the reloaded enforce policy never reaped the released tree"
    );
    assert!(
        kept_pids.iter().all(|p| is_alive(*p)),
        "the live tree was touched"
    );
    assert!(host.ping("kept"));
    assert_eq!(
        metric(port, "mcp_reaper_config_reload_failures_total"),
        Some(1.0)
    );
    signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Without --config and without a file at the default path, SIGHUP reloads
/// the built-in defaults (a file placed at the default path meanwhile would
/// be read): it is acknowledged and the daemon runs on (it used to die of
/// it).
#[test]
fn sighup_without_a_config_file_does_not_end_the_daemon() {
    if !privileged("sighup_without_a_config_file_does_not_end_the_daemon") {
        return;
    }
    let _serial = common::serial();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args([
            "run",
            "--source",
            "poll",
            "--listen",
            "off",
            "--control-socket",
            "off",
        ])
        .args(["--dry-run"])
        // Nothing at the default path, whatever this machine has in /etc.
        .env(
            "MCP_REAPER_DEFAULT_CONFIG",
            std::env::temp_dir().join("mcp-reaper-no-such-config.toml"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = mcp_reaper_tests::lines_of(child.stderr.take().unwrap());
    let ready = logged(&logs, ": ready ", Duration::from_secs(60));
    assert!(ready, "the daemon never logged ready");
    signal(&child, libc::SIGHUP);
    let acknowledged = logged(
        &logs,
        "SIGHUP: configuration valid",
        Duration::from_secs(30),
    );
    assert!(acknowledged, "SIGHUP was not acknowledged");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    signal(&child, libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
