//! Restart safety with the real binary: `kill -9` of the daemon between a
//! release and its reap loses nothing and kills nothing live; a daemon
//! killed mid-reap, its tree stopped, continues that tree at its next start
//! (and only it). Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{start_daemon, start_daemon_with};

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
    let _serial = common::serial();
    let (_dir, config) = common::config_dir(&config_toml());

    let daemon = start_daemon(&config);
    let mut host = TestHost::start();
    let orphan = host.spawn("orphan", Transport::Socket, &[]);
    let live = host.spawn("live", Transport::Pipe, &[]);
    let orphan_pids = server_tree_pids(orphan.pid);
    let live_pids = server_tree_pids(live.pid);
    for s in [&orphan, &live] {
        let root = format!("\"root\":\"{}@", s.pid);
        daemon.wait_log(
            "the tree's discovery",
            Duration::from_secs(15),
            &["tree discovered", &root],
        );
    }

    host.close_stdin("orphan");
    // The first daemon saw the release; its 3 s grace runs from here.
    let orphan_root = format!("\"root\":\"{}@", orphan.pid);
    daemon.wait_log(
        "the orphan's detection",
        Duration::from_secs(5),
        &["orphan detected", &orphan_root],
    );
    let detected = std::time::Instant::now();
    assert!(
        !daemon.logged(&["tree reaped"]),
        "a reap began inside the grace"
    );
    daemon.kill_9(); // SIGKILL: no shutdown path runs
    // Time passes beyond the grace with no daemon: nothing may act.
    std::thread::sleep(
        (detected + Duration::from_secs(4)).saturating_duration_since(std::time::Instant::now()),
    );
    assert!(
        orphan_pids.iter().all(|p| is_alive(*p)),
        "nothing may act while the daemon is down"
    );

    let daemon = start_daemon(&config);
    daemon.wait_log(
        "the pending orphan's reap",
        Duration::from_secs(20),
        &["tree reaped", &orphan_root],
    );
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

/// The stat state letter of `pid`, if it exists.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.chars().next()
}

/// The daemon dies (fault injection: SIGKILL) right after stopping a
/// released tree, leaving it frozen. The next start continues exactly the
/// processes the dead run recorded, before anything else, and the tree is
/// then reaped as still orphaned. A process the operator stopped stays
/// stopped.
#[test]
fn a_death_between_sigstop_and_sigcont_leaves_no_tree_frozen() {
    if !privileged("a_death_between_sigstop_and_sigcont_leaves_no_tree_frozen") {
        return;
    }
    let _serial = common::serial();
    let (dir, config) = common::config_dir(&host_config("1s", "1s"));
    let mut bystander = std::process::Command::new("sleep")
        .arg("7431")
        .spawn()
        .unwrap();
    // SAFETY: kill(2) of our own unreaped child.
    unsafe { libc::kill(bystander.id() as i32, libc::SIGSTOP) };
    let mut dying = start_daemon_with(&config, &[], &[("MCP_REAPER_FAULT_DIE_AFTER_STOP", "1")]);
    let mut host = TestHost::start();
    let s = host.spawn("s", Transport::Socket, &[]);
    let pids = server_tree_pids(s.pid);
    let root = format!("\"root\":\"{}@", s.pid);
    dying.wait_log(
        "the tree's discovery",
        Duration::from_secs(15),
        &["tree discovered", &root],
    );
    host.close_stdin("s");
    let died = wait_until(Duration::from_secs(20), || {
        dying.child.try_wait().unwrap().is_some()
    });
    assert!(
        died,
        "the fault never fired: the daemon did not die mid-reap"
    );
    assert!(
        pids.iter().all(|p| state_of(*p) == Some('T')),
        "precondition: the dead daemon left the tree stopped: {:?}",
        pids.iter().map(|p| state_of(*p)).collect::<Vec<_>>()
    );
    assert!(
        std::fs::read_dir(dir.path().join("state/stopped"))
            .unwrap()
            .count()
            == 1,
        "the dead reap left its record"
    );

    let _daemon = start_daemon(&config);
    assert!(
        wait_until(Duration::from_secs(20), || pids.iter().all(|p| state_of(
            *p
        ) != Some(
            'T'
        ))),
        "the restarted daemon left the tree frozen"
    );
    assert!(
        wait_until(Duration::from_secs(20), || pids
            .iter()
            .all(|p| !is_alive(*p))),
        "the still-orphaned tree was not reaped after the restart"
    );
    assert_eq!(
        state_of(bystander.id()),
        Some('T'),
        "a process the daemon never stopped was continued"
    );
    // The second reap's own record goes when that reap has ended.
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_dir(
            dir.path().join("state/stopped")
        )
        .unwrap()
        .count()
            == 0),
        "a record outlived its reap"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A member that the tree double-forked (an escapee reparented to PID 1,
/// matching no server rule itself) while the daemon ran, whose root the
/// host killed and whose far end it released while the daemon was down:
/// the restarted daemon knows it from its predecessor's tree table and
/// reaps it as a remnant. A bystander the host started is untouched.
#[test]
fn a_member_reparented_while_the_daemon_was_down_is_still_reaped() {
    if !privileged("a_member_reparented_while_the_daemon_was_down_is_still_reaped") {
        return;
    }
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}",
            mcp_reaper_tests::FAKE_SERVER_RULE,
            host_config("1s", "1s")
        ),
    )
    .unwrap();
    let daemon = start_daemon(&config);
    let mut bystander = std::process::Command::new("sleep")
        .arg("7492")
        .spawn()
        .unwrap();
    let (mut server, end) =
        mcp_reaper_tests::fake_server("sleep 1; (setsid sleep 7491 &); exec sleep 600");
    let escapee = || {
        let out = std::process::Command::new("pgrep")
            .args(["-x", "-f", "sleep 7491"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || escapee().len() == 1),
        "precondition: the escapee runs"
    );
    let escapee_pid = escapee()[0];
    // The daemon has written the escapee into its table.
    let table = dir.path().join("state/trees.json");
    assert!(
        wait_until(Duration::from_secs(15), || std::fs::read_to_string(&table)
            .is_ok_and(|t| t.contains(&format!("\"tgid\":{escapee_pid},")))),
        "the tree table never named the escapee"
    );
    daemon.kill_9();
    // While the daemon is down: the host kills the root and lets go.
    let _ = server.kill();
    let _ = server.wait();
    drop(end);
    assert!(
        is_alive(escapee_pid),
        "precondition: the escapee outlived its root"
    );

    let _daemon = start_daemon(&config);
    assert!(
        wait_until(Duration::from_secs(20), || !is_alive(escapee_pid)),
        "the escapee of a tree whose root died while the daemon was down leaked"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the host's other child was killed"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}
