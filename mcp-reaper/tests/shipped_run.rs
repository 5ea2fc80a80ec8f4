//! The service as it ships, run against a real leaky host: the systemd
//! unit's own command line and environment, the shipped configuration with
//! only the test host's rule added (its policy as shipped: peer-released
//! enforced after a 2 s grace), and real `server-everything` sessions,
//! which keep running after stdin EOF. A released session's whole tree is
//! reaped and audited; a live session's tree is never touched.
//!
//! The .deb round trip of `cargo xtask test` runs this test again against
//! the installed package: `MCP_REAPER_BIN` names the binary,
//! `MCP_REAPER_SHIPPED_UNIT` the unit and `MCP_REAPER_SHIPPED_CONFIG` the
//! configuration (defaults: the binary built here, deploy's unit, the
//! default configuration in the source). The scratch directory takes the
//! paths the unit writes to (audit log, control socket, state), and
//! `--listen` a free port. Needs root (the kernel programs, signals).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcp_reaper_tests::{
    host::{HOST_RULE, TestHost, Transport, is_alive, server_tree_pids},
    lines_of, privileged, wait_until,
};

fn env_path(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// The binary, the unit and the configuration under test.
fn shipped() -> (PathBuf, String, String) {
    let bin = env_path("MCP_REAPER_BIN", env!("CARGO_BIN_EXE_mcp-reaper"));
    let unit = env_path(
        "MCP_REAPER_SHIPPED_UNIT",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/systemd/mcp-reaper.service"
        ),
    );
    let config = env_path(
        "MCP_REAPER_SHIPPED_CONFIG",
        concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/default.toml"),
    );
    let read = |p: &Path| {
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    };
    (bin, read(&unit), read(&config))
}

/// The values of every `key=` line of the unit.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// The unit's `ExecStart=` arguments after the binary, with the files it
/// names moved into `dir`, and what the unit leaves to systemd or to the
/// defaults (control socket, state, listener) put there too.
fn run_args(unit: &str, dir: &Path, config: &Path, port: u16) -> Vec<String> {
    let exec = unit_values(unit, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart=: {exec:?}");
    let mut args = Vec::new();
    let mut moved: Option<PathBuf> = None;
    for word in exec[0].split_whitespace().skip(1) {
        if let Some(path) = moved.take() {
            args.push(path.display().to_string());
            continue;
        }
        moved = match word {
            "--config" => Some(config.to_path_buf()),
            "--audit-log" => Some(dir.join("audit.jsonl")),
            _ => None,
        };
        args.push(word.to_string());
    }
    assert_eq!(args.first().map(String::as_str), Some("run"), "{exec:?}");
    for (flag, value) in [
        (
            "--control-socket",
            dir.join("control.sock").display().to_string(),
        ),
        ("--state-dir", dir.join("state").display().to_string()),
        ("--listen", format!("127.0.0.1:{port}")),
    ] {
        assert!(!args.iter().any(|a| a == flag), "the unit sets {flag}");
        args.extend([flag.to_string(), value]);
    }
    args
}

/// The unit's `Environment=NAME=VALUE` pairs (plain words only).
fn unit_env(unit: &str) -> Vec<(String, String)> {
    unit_values(unit, "Environment")
        .into_iter()
        .flat_map(str::split_whitespace)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The sum of `mcp_reaper_trees` over the test host's trees in `state`.
fn trees(port: u16, state: &str) -> Option<f64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let want = format!("state=\"{state}\"");
    Some(
        body.lines()
            .filter(|l| l.starts_with("mcp_reaper_trees{"))
            .filter(|l| l.contains("host=\"testhost\"") && l.contains(&want))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The audit log's `reap` records, as JSON.
fn reaps(audit: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["event"] == "reap")
        .collect()
}

#[test]
fn the_shipped_service_reaps_a_released_tree_and_leaves_the_live_one() {
    if !privileged("the_shipped_service_reaps_a_released_tree_and_leaves_the_live_one") {
        return;
    }
    let _one = common::serial();
    let (bin, unit, shipped_config) = shipped();
    let (dir, config) = common::config_dir(&format!("{shipped_config}\n{HOST_RULE}"));
    let port = free_port();
    let args = run_args(&unit, dir.path(), &config, port);
    let mut cmd = Command::new(&bin);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .args(&args)
        .envs(unit_env(&unit))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("MCP_REAPER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut daemon = common::DaemonProcess {
        child,
        socket: dir.path().join("control.sock"),
        log: Default::default(),
    };
    let log = lines_of(daemon.child.stderr.take().unwrap());
    let ready = wait_until(Duration::from_secs(60), || {
        log.try_iter().any(|l| l.contains("\"ready\""))
    });
    assert!(ready, "{} {args:?} never logged ready", bin.display());

    let mut host = TestHost::start();
    let leak = host.spawn(
        "leak",
        Transport::Socket,
        &[("MCP_TEST_SESSION", "shipped-leak")],
    );
    let live = host.spawn(
        "live",
        Transport::Pipe,
        &[("MCP_TEST_SESSION", "shipped-live")],
    );
    assert!(
        wait_until(Duration::from_secs(60), || trees(port, "live") == Some(2.0)),
        "the daemon never tracked both sessions: {:?}",
        trees(port, "live")
    );
    let leak_pids = server_tree_pids(leak.pid);
    let live_pids = server_tree_pids(live.pid);
    assert!(
        leak_pids.len() >= 3,
        "npm exec -> sh -> node: {leak_pids:?}"
    );

    // The leak: the host lets go of the server's stdio, which keeps running.
    host.close_stdin("leak");
    assert!(
        wait_until(Duration::from_secs(60), || !leak_pids
            .iter()
            .any(|&p| is_alive(p))),
        "the released tree was not reaped: {leak_pids:?}"
    );
    // What must NOT be killed: the live session, every member of it.
    assert!(live_pids.iter().all(|&p| is_alive(p)), "{live_pids:?}");
    assert!(host.ping("live"), "the live session stopped answering");
    let audited = wait_until(Duration::from_secs(10), || {
        reaps(&dir.path().join("audit.jsonl"))
            .iter()
            .any(|r| r["tree"]["root"]["tgid"] == leak.pid)
    });
    assert!(audited, "no audited reap of {}", leak.pid);
    let wrong: Vec<_> = reaps(&dir.path().join("audit.jsonl"))
        .into_iter()
        .filter(|r| r["tree"]["root"]["tgid"] != leak.pid)
        .collect();
    assert!(wrong.is_empty(), "reaps of other trees: {wrong:?}");
    drop(host);
    daemon.child.kill().unwrap();
}
