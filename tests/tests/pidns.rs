//! Scenarios that need a complete walk of /proc. On some machines a
//! process the daemon can never read (an init holding capabilities root
//! lacks) makes every walk incomplete, and rules that need "nobody outside
//! the tree holds it" rightly answer `unknown` there. Each test here runs
//! itself again inside a new PID namespace with its own /proc (`unshare
//! --pid --fork --mount-proc`), where PID 1 is the test itself and every
//! process is readable; the daemon runs in the poll tier (the kernel's
//! records carry the initial namespace's PIDs). Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    time::Duration,
};

mod common;

use common::Daemon;
use mcp_reaper::{config::Config, source::SourceChoice, trees::TreeState};
use mcp_reaper_tests::{privileged, wait_until};

const INSIDE: &str = "MCP_REAPER_TEST_IN_PIDNS";

/// Runs `test` of this binary again inside a new PID and mount namespace
/// and fails unless it passes there. Returns true when called inside (the
/// caller then runs the scenario).
fn inside_own_pid_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare (util-linux) runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inside the PID namespace:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the scenario did not run inside:\n{text}"
    );
    false
}

const RULES: &str = r#"
presets = []
[[host]]
name = "pidns-test"
cmdline = '(?:\S*/)?pidns-[0-9a-f]+ .*'
[[server]]
name = "fake"
cmdline = 'bash -c # mcp-fake-server(?s:.*)'
[policy]
grace = "1s"
kill_after = "1s"
"#;

/// A server started by this test as its host, which also inherits the
/// host's own end of its stdin (no close-on-exec) and keeps it as fd 3,
/// which its child `sleep` inherits. Returns the server and the host's end.
fn leaky_server() -> (std::process::Child, std::os::fd::OwnedFd) {
    let (ours, theirs) = mcp_reaper_tests::socketpair(false);
    let theirs_out = theirs.try_clone().unwrap();
    let far = ours.as_raw_fd();
    let server = Command::new("bash")
        .args([
            "-c",
            &format!("# mcp-fake-server\nexec 3<&{far}; exec {far}<&-; sleep 600 & wait"),
        ])
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::from(theirs_out))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (server, ours)
}

/// A host that leaks its own end into the server (no close-on-exec): the
/// server hands it to a child. Once the host closes its copy the far end of
/// the server's stdin is held only by the tree itself: nobody outside can
/// ever write to it again. The kernel still records a peer, so a check that
/// stopped at "a peer exists" would call it live forever; it is reaped as
/// `peer-held-in-tree`, whole.
#[test]
fn a_far_end_left_only_to_the_tree_is_found_and_reaped() {
    let name = "a_far_end_left_only_to_the_tree_is_found_and_reaped";
    if !privileged(name) || !inside_own_pid_namespace(name) {
        return;
    }
    let config = Config::from_toml_str(RULES, "pidns").unwrap();
    let daemon = Daemon::start(SourceChoice::Poll, config);
    let (mut server, ours) = leaky_server();
    daemon.wait_tracked_live(server.id());
    let members = || mcp_reaper_tests::host::server_tree_pids(server.id());
    assert!(
        wait_until(Duration::from_secs(5), || members().len() == 2),
        "precondition: the server and its child"
    );
    let pids = members();
    // The child holds the far end too (fd 3, inherited).
    let child = *pids.iter().find(|p| **p != server.id()).unwrap();
    assert!(
        mcp_reaper_tests::host::fd_target(child, 3).is_some_and(|t| t.starts_with("socket:")),
        "precondition: the child holds the far end"
    );
    drop(ours);
    let reaped = wait_until(Duration::from_secs(20), || {
        pids.iter().all(|p| !mcp_reaper_tests::host::is_alive(*p))
    });
    let state = daemon.tree(server.id()).map(|t| (t.state, t.reason));
    assert!(reaped, "the tree its host let go survived: {state:?}");
    let reaps = daemon.wait_reaps(1);
    assert_eq!(reaps.len(), 1, "{reaps:?}");
    assert_eq!(
        reaps[0]
            .reason
            .as_deref()
            .map(|r| r.split(' ').next().unwrap_or(r)),
        Some("peer-released"),
        "{reaps:?}"
    );
    let _ = server.wait();
}

/// The same shape while the host still holds its end: live, never reaped.
#[test]
fn a_far_end_the_host_still_holds_stays_live() {
    let name = "a_far_end_the_host_still_holds_stays_live";
    if !privileged(name) || !inside_own_pid_namespace(name) {
        return;
    }
    let config = Config::from_toml_str(RULES, "pidns").unwrap();
    let daemon = Daemon::start(SourceChoice::Poll, config);
    let (mut server, ours) = leaky_server();
    daemon.wait_tracked_live(server.id());
    // Past grace and kill_after: still live, never reaped.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        daemon.tree(server.id()).map(|t| t.state),
        Some(TreeState::Live)
    );
    assert!(daemon.read(|s| s.reaps.is_empty()));
    drop(ours);
    let _ = server.kill();
    let _ = server.wait();
}
