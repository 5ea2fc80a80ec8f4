//! `mcp-reaper release` end to end: the real binary as daemon and as
//! client, over the real control socket, with real MCP servers whose host
//! still holds their fds. Exactly the named trees go. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::start_daemon;
use mcp_reaper_tests::{
    host::{TestHost, Transport, host_config, is_alive, server_tree_pids},
    privileged, wait_until,
};

/// The test host's rule with a 1 s grace and kill_after.
fn config_toml() -> String {
    host_config("1s", "1s")
}

fn release(socket: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .arg("release")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn release_by_owner_fd_and_by_session_reaps_exactly_those_trees() {
    if !privileged("release_by_owner_fd_and_by_session_reaps_exactly_those_trees") {
        return;
    }
    let _serial = common::serial();
    let (dir, config) = common::config_dir(&config_toml());
    let daemon = start_daemon(&config);
    let mut host = TestHost::start();
    let a = host.spawn("a", Transport::Socket, &[("MCP_TEST_SESSION", "sess-a")]);
    let b = host.spawn("b", Transport::Pipe, &[("MCP_TEST_SESSION", "sess-b")]);
    let c = host.spawn("c", Transport::Socket, &[("MCP_TEST_SESSION", "sess-c")]);
    let (a_pids, b_pids, c_pids) = (
        server_tree_pids(a.pid),
        server_tree_pids(b.pid),
        server_tree_pids(c.pid),
    );
    // Wait until the daemon knows the owner of a (a dry run matches it).
    let owner = format!("{}:{}", host.pid(), a.host_stdin_fd);
    assert!(
        wait_until(Duration::from_secs(15), || release(
            &daemon.socket,
            &["--owner", &owner, "--dry-run"]
        )
        .0 == 0),
        "the daemon never matched owner {owner}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        [&a_pids, &b_pids, &c_pids]
            .iter()
            .all(|p| p.iter().all(|x| is_alive(*x))),
        "a dry run reaps nothing"
    );

    // Nothing matches an unknown owner or session: exit 1, nothing dies.
    assert_eq!(release(&daemon.socket, &["--owner", "999999"]).0, 1);
    assert_eq!(release(&daemon.socket, &["--session", "no-such"]).0, 1);

    let (code, out) = release(&daemon.socket, &["--owner", &owner]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&a.pid.to_string()), "{out}");
    let (code, out) = release(&daemon.socket, &["--session", "sess-b"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(15), || a_pids
            .iter()
            .chain(&b_pids)
            .all(|p| !is_alive(*p))),
        "released trees survive"
    );
    // The host still held a's and b's fds: only its word ended them. c is
    // untouched and still serves.
    assert!(c_pids.iter().all(|p| is_alive(*p)));
    assert!(host.ping("c"));
    assert!(is_alive(host.pid()));

    // A daemon that is not there: exit 3 with a clear message.
    drop(daemon);
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["release", "--session", "sess-c", "--socket"])
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

/// Waits until a dry run of `--owner owner` names the tree rooted at `root`
/// (the daemon has checked it and recorded its owner fds).
fn wait_owner_known(socket: &std::path::Path, owner: &str, root: u32) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            let (code, out) = release(socket, &["--owner", owner, "--dry-run"]);
            code == 0 && out.contains(&format!("  {root} "))
        }),
        "the daemon never matched owner {owner} to tree {root}"
    );
}

/// A host hands tree x's end to a helper and closes its own fd; the fd
/// number is reused for tree y. `release --owner HOST:FD` names y's end
/// now: y goes, x (its end still held by the helper) must not be touched.
#[test]
fn a_release_naming_a_reused_fd_number_reaps_only_the_tree_behind_it() {
    if !privileged("a_release_naming_a_reused_fd_number_reaps_only_the_tree_behind_it") {
        return;
    }
    let _serial = common::serial();
    let (_dir, config) = common::config_dir(&config_toml());
    let daemon = start_daemon(&config);
    let mut host = TestHost::start();
    let x = host.spawn("x", Transport::Socket, &[]);
    let x_pids = server_tree_pids(x.pid);
    let x_owner = format!("{}:{}", host.pid(), x.host_stdin_fd);
    wait_owner_known(&daemon.socket, &x_owner, x.pid);
    let helper = host.handoff("x");
    let y = host.spawn("y", Transport::Socket, &[]);
    let y_pids = server_tree_pids(y.pid);
    assert_eq!(
        y.host_stdin_fd, x.host_stdin_fd,
        "precondition: y's host end reuses x's old fd number"
    );
    wait_owner_known(&daemon.socket, &x_owner, y.pid);

    let (code, out) = release(&daemon.socket, &["--owner", &x_owner]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("  {} ", y.pid)), "{out}");
    assert!(
        !out.contains(&format!("  {} ", x.pid)),
        "x matched a release of a reused fd number: {out}"
    );
    assert!(
        wait_until(Duration::from_secs(15), || y_pids
            .iter()
            .all(|p| !is_alive(*p))),
        "y survived its release"
    );
    // Grace and kill_after are 1 s each: x had time to be (wrongly) reaped.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        x_pids.iter().all(|p| is_alive(*p)),
        "x was reaped while its end was held by the helper"
    );
    assert!(is_alive(helper));
    mcp_reaper_tests::kill_if_same(helper, mcp_reaper_tests::start_ticks(helper).unwrap_or(0));
}

/// A host hands tree x's end to a helper and exits; an unrelated process
/// gets the host's PID. `release --owner PID` names that new process, which
/// owns nothing: nothing is matched, nothing dies.
#[test]
fn a_release_naming_a_recycled_host_pid_reaps_nothing() {
    if !privileged("a_release_naming_a_recycled_host_pid_reaps_nothing") {
        return;
    }
    let _serial = common::serial();
    let (_dir, config) = common::config_dir(&config_toml());
    let daemon = start_daemon(&config);
    let mut host = TestHost::start();
    let x = host.spawn("x", Transport::Socket, &[]);
    let x_pids = server_tree_pids(x.pid);
    let host_pid = host.pid();
    wait_owner_known(&daemon.socket, &host_pid.to_string(), x.pid);
    let helper = host.handoff("x");
    host.exit();
    let mut squatter = mcp_reaper_tests::spawn_on_pid(host_pid, 2000, || {
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap()
    });
    let squatter_start = mcp_reaper_tests::start_ticks(host_pid).unwrap();

    let (code, out) = release(&daemon.socket, &["--owner", &host_pid.to_string()]);
    assert_eq!(code, 1, "a recycled PID must match nothing: {out}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        x_pids.iter().all(|p| is_alive(*p)),
        "x was reaped by a release naming a recycled PID"
    );
    assert_eq!(
        mcp_reaper_tests::start_ticks(host_pid),
        Some(squatter_start),
        "the process on the recycled PID was touched"
    );
    assert!(is_alive(helper));
    let _ = squatter.kill();
    let _ = squatter.wait();
    mcp_reaper_tests::kill_if_same(helper, mcp_reaper_tests::start_ticks(helper).unwrap_or(0));
    for p in x_pids {
        mcp_reaper_tests::kill_if_same(p, mcp_reaper_tests::start_ticks(p).unwrap_or(0));
    }
}

/// `scan` alone cannot know a session went silent (it has no history); with
/// a running daemon it shows the daemon's `suspect (idle)` verdict, and the
/// tree is never orphaned or reaped for it.
#[test]
fn scan_shows_the_daemons_idle_verdict_and_nothing_is_reaped() {
    if !privileged("scan_shows_the_daemons_idle_verdict_and_nothing_is_reaped") {
        return;
    }
    let _serial = common::serial();
    let (_dir, config) = common::config_dir(&format!("{}idle_after = \"2s\"\n", config_toml()));
    let daemon = start_daemon(&config);
    let mut host = TestHost::start();
    let s = host.spawn("s", Transport::Socket, &[]);
    let pids = server_tree_pids(s.pid);
    host.silence("s");
    let scan = |socket: &str| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
            .args(["scan", "--json", "--config"])
            .arg(&config)
            .args(["--daemon-socket", socket])
            .output()
            .unwrap();
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let tree_state = |v: &serde_json::Value| {
        v["trees"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["root"]["tgid"].as_u64() == Some(u64::from(s.pid)))
            .map(|t| {
                (
                    t["state"].as_str().unwrap_or("").to_string(),
                    t["reason"].as_str().unwrap_or("").to_string(),
                    t["judged_by"].as_str().unwrap_or("").to_string(),
                )
            })
    };
    let socket = daemon.socket.to_string_lossy().into_owned();
    let idle = (
        "suspect".to_string(),
        "idle".to_string(),
        "daemon".to_string(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || tree_state(&scan(&socket))
            == Some(idle.clone())),
        "scan never showed the daemon's idle verdict: {:?}",
        tree_state(&scan(&socket))
    );
    // Alone, the scan sees what it can prove: the host holds the fd.
    assert_eq!(
        tree_state(&scan("off")).map(|t| t.0),
        Some("live".to_string())
    );
    assert!(
        pids.iter().all(|p| is_alive(*p)),
        "suspect is never reaped by default"
    );
    assert!(host.ping("s"));
}
