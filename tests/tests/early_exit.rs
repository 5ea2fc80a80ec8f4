//! A tree whose root exits before the daemon has classified it: a wrapper
//! that exits as soon as its host lets go, leaving a child behind, on a
//! daemon that is slow to look at /proc (every exec is classified 3 s late,
//! as when the daemon is starved of CPU; fault injection, so the race is
//! the same on every run). The eBPF exec record carries the root's command
//! line, so the tree is still known and its remnant is reaped; while the
//! host still holds the remnant's output, nothing is. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod common;

use common::Daemon;
use mcp_reaper::{config::Config, source::SourceChoice, trees::TreeState};
use mcp_reaper_tests::{
    FAKE_SERVER_RULE, fake_server,
    host::{is_alive, server_tree_pids},
    privileged, wait_until,
};

const DELAY: Duration = Duration::from_secs(3);

fn config() -> Config {
    let rules = format!(
        r#"
presets = []
builtin_servers = false
[[host]]
name = "early-exit-test"
cmdline = '(?:\S*/)?early_exit-[0-9a-f]+(?: .*)?'
{FAKE_SERVER_RULE}
[policy]
grace = "1s"
kill_after = "1s"
"#
    );
    Config::from_toml_str(&rules, "early-exit").unwrap()
}

/// The server's root waits for EOF on its stdin, then exits 10 ms later;
/// its child (`sleep`, not a server by any rule) writes to the host's
/// socket and lives on.
const WRAPPER: &str = "sleep 600 & read -r _; sleep 0.01; exit 0";

/// The child of `root` (the only other member of its tree).
fn child_of(root: u32) -> u32 {
    assert!(
        wait_until(Duration::from_secs(5), || server_tree_pids(root).len() == 2),
        "precondition: the root and its child"
    );
    *server_tree_pids(root).iter().find(|p| **p != root).unwrap()
}

#[test]
fn a_root_that_exits_before_classification_still_has_its_remnant_reaped() {
    let name = "a_root_that_exits_before_classification_still_has_its_remnant_reaped";
    if !privileged(name) {
        return;
    }
    let d = Daemon::start_slow_to_classify(SourceChoice::Ebpf, config(), DELAY);
    let (mut root, ours) = fake_server(WRAPPER);
    let child = child_of(root.id());
    // The host lets go well before the daemon classifies the root's exec.
    std::thread::sleep(Duration::from_millis(300));
    drop(ours);
    root.wait().unwrap();
    assert!(
        d.tree(root.id()).is_none(),
        "precondition: the root was gone before it was classified"
    );
    let reaped = wait_until(DELAY + Duration::from_secs(15), || !is_alive(child));
    let state = d.tree(root.id()).map(|t| (t.state, t.reason));
    assert!(reaped, "the remnant of a released tree leaked: {state:?}");
    let reaps = d.wait_reaps(1);
    assert_eq!(reaps.len(), 1, "{reaps:?}");
    assert_eq!(reaps[0].root.tgid, root.id());
    // The reap names the tree (the gone root) and what was left of it.
    let mut members: Vec<u32> = reaps[0].members.iter().map(|k| k.tgid).collect();
    members.sort_unstable();
    assert!(members.contains(&child), "{members:?}");
    assert!(
        members.iter().all(|p| [root.id(), child].contains(p)),
        "only the tree's own processes: {members:?}"
    );
}

#[test]
fn a_gone_roots_child_that_its_host_still_reads_is_never_reaped() {
    let name = "a_gone_roots_child_that_its_host_still_reads_is_never_reaped";
    if !privileged(name) {
        return;
    }
    let d = Daemon::start_slow_to_classify(SourceChoice::Ebpf, config(), DELAY);
    // The root exits long before it is classified; the host keeps its end
    // (the child's output).
    let (mut root, ours) = fake_server("sleep 600 & read -r -t 0.3 _; exit 0");
    let child = child_of(root.id());
    root.wait().unwrap();
    let known = wait_until(DELAY + Duration::from_secs(10), || {
        d.tree(root.id())
            .is_some_and(|t| t.state == TreeState::Live)
    });
    assert!(
        known,
        "the gone root's tree is known and live: {:?}",
        d.tree(root.id()).map(|t| (t.state, t.reason))
    );
    // Past grace and kill_after: the child is alive and nothing was reaped.
    std::thread::sleep(Duration::from_secs(4));
    assert!(is_alive(child));
    assert!(
        d.read(|s| s.reaps.is_empty()),
        "{:?}",
        d.read(|s| s.reaps.clone())
    );
    drop(ours);
    // The host let go: now the remnant goes.
    assert!(
        wait_until(Duration::from_secs(15), || !is_alive(child)),
        "released remnant survives"
    );
}
