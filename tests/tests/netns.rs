//! Hosts in containers: a stand-in host in network, PID and mount
//! namespaces of its own (`unshare --net --pid --mount --fork
//! --mount-proc`), starting real `server-everything@2025.4.8` sessions in
//! the seed's shape (npm exec -> sh -c -> node) over socketpair and pipe
//! stdio inside. The stdio sockets live in the host's network namespace,
//! whose sock_diag the daemon asks from a thread that joined it: live
//! trees stay live (judged, not `unknown`), released trees and the trees of
//! a crashed host are reaped as in the root namespace, and nothing else is
//! touched: not a bystander host in the root namespace, not the
//! namespace's own init. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod common;

use common::Daemon;
use mcp_reaper::{config::Config, source::SourceChoice, trees::TreeState};
use mcp_reaper_tests::{
    host::{TestHost, Transport, host_config, is_alive, ns_pid, server_tree_pids},
    privileged, wait_until,
};

fn config() -> Config {
    Config::from_toml_str(&host_config("1s", "1s"), "test-config").unwrap()
}

/// Grace + kill_after + slack: a behavioural deadline, not a benchmark.
const REAP_DEADLINE: Duration = Duration::from_secs(20);

fn all_gone(pids: &[u32]) -> bool {
    pids.iter().all(|p| !is_alive(*p))
}

fn net_ns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string()
}

/// The parent of `pid` (field 4 of /proc/PID/stat).
fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit_once(") ").unwrap().1;
    after_comm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The host runs where it should: another network namespace than the
/// daemon's, and a PID namespace of its own.
fn assert_contained(host: &TestHost) {
    assert_ne!(net_ns(host.pid()), net_ns(std::process::id()));
    assert_ne!(ns_pid(host.pid()), Some(host.pid()), "own PID namespace");
}

#[test]
fn a_host_in_its_own_namespaces_keeps_live_trees_and_loses_released_ones() {
    if !privileged("a_host_in_its_own_namespaces_keeps_live_trees_and_loses_released_ones") {
        return;
    }
    let daemon = Daemon::start(SourceChoice::Ebpf, config());
    let mut host = TestHost::start_in_namespaces();
    assert_contained(&host);
    let mut bystander = TestHost::start();
    let plan = [
        ("leak-socket", Transport::Socket),
        ("leak-pipe", Transport::Pipe),
        ("live-socket", Transport::Socket),
        ("live-pipe", Transport::Pipe),
    ];
    let sessions: Vec<_> = plan
        .iter()
        .map(|&(id, t)| host.spawn(id, t, &[("MCP_TEST_SESSION", id)]))
        .collect();
    let outside = bystander.spawn("outside", Transport::Socket, &[]);
    // Live, not unknown: the socket's far end was found through the
    // host's own namespace.
    for s in sessions.iter().chain([&outside]) {
        daemon.wait_tracked_live(s.pid);
    }
    // `scan` shows what an operator in the container sees: the host's PID
    // there, and that its network namespace is not the daemon's.
    let report = mcp_reaper::scan::scan(&config(), std::path::Path::new("/proc")).unwrap();
    let seen = report
        .trees
        .iter()
        .find(|t| t.root.tgid == sessions[2].pid)
        .and_then(|t| t.host.clone())
        .expect("scan shows the live tree's host");
    assert_eq!(seen.pid, host.pid());
    assert_eq!(seen.ns_pid, ns_pid(host.pid()));
    assert_eq!(seen.net_ns, Some(net_ns(host.pid())));
    let mut doomed = Vec::new();
    for s in &sessions[..2] {
        let tree = server_tree_pids(s.pid);
        assert!(tree.len() >= 3, "npm exec -> sh -> node: {tree:?}");
        doomed.extend(tree);
        host.close_stdin(&s.id);
    }
    assert!(
        wait_until(REAP_DEADLINE, || all_gone(&doomed)),
        "released trees in the namespace survive: {:?}",
        doomed.iter().filter(|p| is_alive(**p)).collect::<Vec<_>>()
    );
    // What must NOT be killed: the live sessions, the host, the bystander.
    for s in &sessions[2..] {
        assert!(server_tree_pids(s.pid).len() >= 3, "{} lost members", s.id);
        assert!(host.ping(&s.id), "live session {} must still answer", s.id);
        assert_eq!(
            daemon.tree(s.pid).map(|t| t.state),
            Some(TreeState::Live),
            "{}",
            s.id
        );
    }
    assert!(is_alive(host.pid()), "the host is never touched");
    assert!(bystander.ping("outside"), "the bystander's session");
    let reaps = daemon.wait_reaps(2);
    assert_eq!(reaps.len(), 2, "{reaps:?}");
    assert!(
        reaps
            .iter()
            .all(|r| r.reason.as_deref() == Some("peer-released")),
        "{reaps:?}"
    );
}

#[test]
fn the_trees_of_a_crashed_host_in_its_own_namespaces_are_reaped() {
    if !privileged("the_trees_of_a_crashed_host_in_its_own_namespaces_are_reaped") {
        return;
    }
    let daemon = Daemon::start(SourceChoice::Ebpf, config());
    let mut host = TestHost::start_in_namespaces();
    assert_contained(&host);
    let mut bystander = TestHost::start();
    let a = host.spawn("a", Transport::Socket, &[]);
    let b = host.spawn("b", Transport::Pipe, &[]);
    let c = bystander.spawn("c", Transport::Socket, &[]);
    for s in [&a, &b, &c] {
        daemon.wait_tracked_live(s.pid);
    }
    let mut doomed = server_tree_pids(a.pid);
    doomed.extend(server_tree_pids(b.pid));
    // The namespace's init and whatever it runs besides the host: never
    // part of a tree.
    let init = ppid(host.pid());
    assert_eq!(
        ns_pid(init),
        Some(1),
        "the host's parent is the namespace's init"
    );
    host.kill();
    assert!(
        wait_until(REAP_DEADLINE, || all_gone(&doomed)),
        "trees of the crashed host survive: {:?}",
        doomed.iter().filter(|p| is_alive(**p)).collect::<Vec<_>>()
    );
    assert!(is_alive(init), "the namespace's init is never touched");
    assert!(bystander.ping("c"), "another host's tree is untouched");
    assert!(server_tree_pids(c.pid).len() >= 3);
}
