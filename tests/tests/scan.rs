//! `scan` against real MCP servers from the npm registry, started by the
//! stand-in host over socketpairs and pipes. Each test asserts what is
//! orphaned AND what stays live. Needs root (fd tables of every process are
//! read to prove a release); skips with a printed reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, time::Duration};

use mcp_reaper::{
    config::Config,
    scan::{ScanReport, scan},
    trees::{TreeState, TreeView},
};
use mcp_reaper_tests::{
    host::{HOST_RULE, Session, TestHost, Transport, server_tree_pids},
    privileged, wait_until,
};

/// A config that knows the stand-in host and where it keeps session ids.
fn config() -> Config {
    Config::from_toml_str(HOST_RULE, "test-config").unwrap()
}

fn scan_now() -> ScanReport {
    scan(&config(), Path::new("/proc")).unwrap()
}

fn tree_of(report: &ScanReport, s: &Session) -> TreeView {
    report
        .trees
        .iter()
        .find(|t| t.root.tgid == s.pid)
        .cloned()
        .unwrap_or_else(|| panic!("no tree rooted at {} in {:#?}", s.pid, summary(report)))
}

fn summary(r: &ScanReport) -> Vec<String> {
    r.trees
        .iter()
        .map(|t| format!("{} {} {:?} {:?}", t.root, t.server, t.state, t.reason))
        .collect()
}

/// Waits until the tree rooted at `s` has `state` (ownership changes are
/// visible at once, but the host's close races with this thread).
fn wait_state(s: &Session, state: TreeState) -> TreeView {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let t = tree_of(&scan_now(), s);
        let done = t.state == state;
        last = Some(t);
        done
    });
    let t = last.unwrap();
    assert!(
        ok,
        "tree {} never became {state:?}: {:?} {:?}",
        s.pid, t.state, t.reason
    );
    t
}

/// Socket inode of `pid`'s fd 0.
fn stdin_inode(pid: u32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    let s = link.to_string_lossy();
    s.trim_start_matches("socket:[")
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

/// The St column of /proc/net/unix for `inode`.
fn proc_net_unix_state(inode: u64) -> Option<String> {
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(6) == Some(&inode.to_string()))
        .and_then(|l| l.split_whitespace().nth(5).map(str::to_string))
}

#[test]
fn identical_sessions_each_map_to_their_own_owner_fd_and_only_the_closed_one_is_orphaned() {
    if !privileged("identical_sessions_each_map_to_their_own_owner_fd") {
        return;
    }
    let mut host = TestHost::start();
    let sessions: Vec<Session> = (0..3)
        .map(|i| {
            let id = format!("s{i}");
            let sid = format!("session-{i}");
            host.spawn(
                &id,
                Transport::Socket,
                &[("MCP_TEST_SESSION", sid.as_str())],
            )
        })
        .collect();
    let report = scan_now();
    let mut owner_fds = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let t = tree_of(&report, s);
        assert_eq!(t.state, TreeState::Live, "{}", t.root);
        assert_eq!(t.server, "server-everything");
        assert_eq!(t.members.len(), 3, "npm exec -> sh -> node");
        let h = t.host.as_ref().unwrap();
        assert_eq!((h.pid, h.rule.as_str()), (host.pid(), "testhost"));
        assert_eq!(
            t.session_id.as_deref(),
            Some(format!("session-{i}").as_str())
        );
        assert!(
            t.owner_fds
                .iter()
                .any(|o| o.pid == host.pid() && o.fd == s.host_stdin_fd as u32),
            "tree {} owner fds {:?} lack host fd {}",
            t.root,
            t.owner_fds,
            s.host_stdin_fd
        );
        assert!(t.rss_bytes > 10 << 20 && t.pss_bytes > 0, "memory {t:?}");
        owner_fds.push(t.owner_fds.clone());
    }
    // Same command lines, different owners: name matching could not tell.
    owner_fds.sort();
    owner_fds.dedup();
    assert_eq!(owner_fds.len(), 3);

    // The host releases s1's stdin (the server keeps running: the leak).
    host.close_stdin("s1");
    let t = wait_state(&sessions[1], TreeState::Orphaned);
    assert_eq!(t.reason.as_deref(), Some("peer-released"));
    assert!(
        server_tree_pids(sessions[1].pid).len() >= 3,
        "the leak is still alive"
    );
    // /proc/net/unix still calls the orphan's socket connected (St 03):
    // the reason pipe-state heuristics fail.
    assert_eq!(
        proc_net_unix_state(stdin_inode(sessions[1].pid)).as_deref(),
        Some("03")
    );
    let report = scan_now();
    for s in [&sessions[0], &sessions[2]] {
        assert_eq!(tree_of(&report, s).state, TreeState::Live);
        assert!(host.ping(&s.id), "live session {} must still answer", s.id);
    }
    // Other tests run in parallel: count only this host's trees.
    let ours: Vec<&TreeView> = report
        .trees
        .iter()
        .filter(|t| sessions.iter().any(|s| s.pid == t.root.tgid))
        .collect();
    assert_eq!(
        ours.iter()
            .filter(|t| t.state == TreeState::Orphaned)
            .count(),
        1
    );
    assert!(report.totals.orphaned >= 1 && report.totals.orphaned_rss_bytes > 0);
}

#[test]
fn a_host_that_calls_shutdown_without_closing_is_not_a_release() {
    if !privileged("a_host_that_calls_shutdown_without_closing_is_not_a_release") {
        return;
    }
    let mut host = TestHost::start();
    let s = host.spawn("s", Transport::Socket, &[]);
    host.shutdown("s");
    std::thread::sleep(Duration::from_millis(300));
    let t = tree_of(&scan_now(), &s);
    assert_eq!(t.state, TreeState::Live, "{:?}", t.reason);
}

#[test]
fn pipes_the_closed_session_is_orphaned_the_other_stays_live() {
    if !privileged("pipes_the_closed_session_is_orphaned_the_other_stays_live") {
        return;
    }
    let mut host = TestHost::start();
    let a = host.spawn("a", Transport::Pipe, &[]);
    let b = host.spawn("b", Transport::Pipe, &[]);
    let report = scan_now();
    for s in [&a, &b] {
        let t = tree_of(&report, s);
        assert_eq!(t.state, TreeState::Live);
        assert!(
            t.owner_fds
                .iter()
                .any(|o| o.pid == host.pid() && o.fd == s.host_stdin_fd as u32)
        );
    }
    host.close_stdin("a");
    let t = wait_state(&a, TreeState::Orphaned);
    assert_eq!(t.reason.as_deref(), Some("peer-released"));
    assert_eq!(tree_of(&scan_now(), &b).state, TreeState::Live);
    assert!(host.ping("b"));
}

#[test]
fn a_host_killed_with_sigkill_leaves_every_tree_host_exited() {
    if !privileged("a_host_killed_with_sigkill_leaves_every_tree_host_exited") {
        return;
    }
    let mut host = TestHost::start();
    let a = host.spawn("a", Transport::Socket, &[]);
    let b = host.spawn("b", Transport::Pipe, &[]);
    // A second host whose tree must stay live.
    let mut other = TestHost::start();
    let c = other.spawn("c", Transport::Socket, &[]);
    host.kill();
    for s in [&a, &b] {
        let t = wait_state(s, TreeState::Orphaned);
        assert_eq!(t.reason.as_deref(), Some("host-exited"), "{}", t.root);
    }
    assert_eq!(tree_of(&scan_now(), &c).state, TreeState::Live);
    assert!(other.ping("c"));
}

#[test]
fn a_server_whose_middle_process_exits_stays_attributed_to_its_host() {
    if !privileged("a_server_whose_middle_process_exits_stays_attributed_to_its_host") {
        return;
    }
    let mut host = TestHost::start();
    let s = host.spawn("s", Transport::Socket, &[]);
    let pids = server_tree_pids(s.pid);
    let sh = *pids
        .iter()
        .find(|p| mcp_reaper_tests::host::comm(**p) == "sh")
        .expect("the sh -c middle");
    let node = *pids
        .iter()
        .find(|p| mcp_reaper_tests::host::comm(**p) == "node")
        .expect("the node server");
    // SAFETY: the test's own child tree.
    unsafe { libc::kill(sh as i32, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || {
        !mcp_reaper_tests::host::is_alive(sh)
    }));
    let report = scan_now();
    let t = report
        .trees
        .iter()
        .find(|t| t.members.iter().any(|m| m.pid == node))
        .unwrap_or_else(|| panic!("node {node} in no tree: {:?}", summary(&report)));
    assert_eq!(
        t.state,
        TreeState::Live,
        "{:?} {:?}",
        t.reason,
        serde_json::to_string(&t.ownership)
    );
    assert_eq!(t.host.as_ref().map(|h| h.pid), Some(host.pid()));
    assert!(host.ping("s"), "the server still serves its session");
}
