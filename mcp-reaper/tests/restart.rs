//! Restart safety with the real binary: `kill -9` of the daemon between a
//! release and its reap loses nothing and kills nothing live. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::start_daemon;

use mcp_reaper_tests::{
    host::{TestHost, Transport, host_config, is_alive, server_tree_pids},
    privileged, wait_until,
};

/// The test host's rule with a 3 s grace: time to kill the daemon between
/// the release and the reap.
fn config_toml() -> String {
    host_config("3s", "1s")
}

#[test]
fn kill_9_between_release_and_reap_then_restart_reaps_the_orphan_only() {
    if !privileged("kill_9_between_release_and_reap_then_restart_reaps_the_orphan_only") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_toml()).unwrap();

    let daemon = start_daemon(&config);
    let mut host = TestHost::start();
    let orphan = host.spawn("orphan", Transport::Socket, &[]);
    let live = host.spawn("live", Transport::Pipe, &[]);
    let orphan_pids = server_tree_pids(orphan.pid);
    let live_pids = server_tree_pids(live.pid);
    std::thread::sleep(Duration::from_millis(500));

    host.close_stdin("orphan");
    std::thread::sleep(Duration::from_millis(500)); // inside the 3 s grace
    daemon.kill_9(); // SIGKILL: no shutdown path runs
    std::thread::sleep(Duration::from_secs(4)); // past the grace
    assert!(
        orphan_pids.iter().all(|p| is_alive(*p)),
        "nothing may act while the daemon is down"
    );

    let daemon = start_daemon(&config);
    assert!(
        wait_until(Duration::from_secs(20), || orphan_pids
            .iter()
            .all(|p| !is_alive(*p))),
        "the restarted daemon must reap the pending orphan"
    );
    assert!(
        live_pids.iter().all(|p| is_alive(*p)),
        "no live tree touched"
    );
    assert!(host.ping("live"));
    assert!(is_alive(host.pid()));
    daemon.kill_9();
}
