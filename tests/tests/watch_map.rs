//! The kernel's watch map through the whole daemon: a PID reused after a
//! tree member exited must not drag its new holder into the old tree's
//! reap, and a watch map too small for a tree keeps tracking degraded so
//! that nothing is reaped. Needs root (BPF, signals, ns_last_pid).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::fd::{FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
    time::Duration,
};

mod common;

use common::Daemon;
use mcp_reaper::{
    config::Config,
    policy::Decision,
    source::{SourceChoice, ebpf::EbpfOptions},
};
use mcp_reaper_tests::{
    host::{is_alive, server_tree_pids},
    kill_if_same, privileged, spawn_on_pid, start_ticks, wait_until,
};

/// No presets, no built-in shapes: only this test's server, started as
/// `bash -c '# mcp-reuse-server ...'`. The host rule matches nothing; it
/// names the environment variable that carries each tree's session id.
const RULES: &str = r#"
presets = []
builtin_servers = false

[[host]]
name = "reusehost"
cmdline = '(?:\S*/)?mcp-reaper-test-no-such-host'
session_env = ["MCP_REUSE_SESSION"]

[[server]]
name = "reusefake"
cmdline = 'bash -c # mcp-reuse-server(?s:.*)'

[policy]
grace = "1s"
kill_after = "1s"
"#;

/// Grace + kill_after + slack: a behavioural deadline, not a benchmark.
const REAP_DEADLINE: Duration = Duration::from_secs(15);

fn config() -> Config {
    Config::from_toml_str(RULES, "watch-map-test").unwrap()
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two new fds into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are new and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A tree started by this test process over a socketpair whose far end is
/// held by a separate `sleep` (the owner), so that this process, which
/// also starts the PID's next holder, owns no tree and is never watched.
struct Tree {
    root: Child,
    holder: Child,
}

impl Tree {
    fn start(script: &str, session: &str) -> Self {
        let (ours, theirs) = socketpair();
        let holder = Command::new("sleep")
            .arg("7421")
            .stdin(Stdio::from(ours))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let root = Command::new("bash")
            .args(["-c", script])
            .env("MCP_REUSE_SESSION", session)
            .stdin(Stdio::from(theirs.try_clone().unwrap()))
            .stdout(Stdio::from(theirs))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { root, holder }
    }

    fn pid(&self) -> u32 {
        self.root.id()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for pid in server_tree_pids(self.root.id()).into_iter().rev() {
            if let Some(start) = start_ticks(pid) {
                kill_if_same(pid, start);
            }
        }
        let _ = self.root.kill();
        let _ = self.root.wait();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Issue 11: a member exits before the daemon classifies its tree (so the
/// daemon once wrote a watch for the dead member), then an unrelated
/// program forked by an unwatched parent lands on that PID. Releasing the
/// old tree reaps the tree and nothing else.
#[test]
fn a_reused_pid_survives_the_reap_of_the_tree_it_once_belonged_to() {
    if !privileged("a_reused_pid_survives_the_reap_of_the_tree_it_once_belonged_to") {
        return;
    }
    let daemon = Daemon::start_with(SourceChoice::Ebpf, config(), EbpfOptions::default());
    let marker = format!("/tmp/mcp-reaper-reuse-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    // The root forks a member that writes its PID and exits; only then
    // does the root exec into the server the daemon classifies.
    let script = format!(
        "sh -c 'echo $$ > {marker}'\nS=server\n\
         exec bash -c \"# mcp-reuse-$S\nwhile :; do sleep 600; done\""
    );
    let tree = Tree::start(&script, "reuse-session");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&marker).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
        }),
        "the short-lived member never wrote its PID to {marker}"
    );
    let member: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&marker);
    daemon.wait_tracked_live(tree.pid());
    assert!(
        wait_until(Duration::from_secs(10), || start_ticks(member).is_none()),
        "the short-lived member {member} did not go"
    );

    // Its PID, now free, for a long-lived program of this (unwatched)
    // process.
    let mut reuser = spawn_on_pid(member, 2000, || {
        Command::new("sleep").arg("7422").spawn().unwrap()
    });
    let reuser_start = start_ticks(member).expect("the reuser runs");
    let doomed = server_tree_pids(tree.pid());
    assert!(doomed.len() >= 2, "root and its sleep: {doomed:?}");
    assert!(!doomed.contains(&member));

    daemon.release_session("reuse-session");
    assert!(
        wait_until(REAP_DEADLINE, || doomed.iter().all(|p| !is_alive(*p))),
        "the released tree survives: {:?}",
        doomed.iter().filter(|p| is_alive(**p)).collect::<Vec<_>>()
    );
    let reaps = daemon.wait_reaps(1);
    assert_eq!(reaps.len(), 1, "{reaps:?}");
    assert_eq!(reaps[0].root.tgid, tree.pid());
    assert_eq!(
        start_ticks(member),
        Some(reuser_start),
        "the process on the reused PID {member} was killed"
    );
    assert!(
        !daemon.reaped_pids().contains(&member),
        "the reused PID {member} is in the reap record: {reaps:?}"
    );
    let _ = reuser.kill();
    let _ = reuser.wait();
}

/// Issue 6: with a watch map of one entry, the tree's members (and its
/// owner) cannot all be watched: tracking stays degraded, that shows in
/// the status and the metrics, and a released tree is held, not reaped.
#[test]
fn a_full_watch_map_keeps_tracking_degraded_and_nothing_is_reaped() {
    if !privileged("a_full_watch_map_keeps_tracking_degraded_and_nothing_is_reaped") {
        return;
    }
    let daemon = Daemon::start_with_metrics(
        SourceChoice::Ebpf,
        config(),
        EbpfOptions {
            watch_capacity: 1,
            ..EbpfOptions::default()
        },
    );
    let tree = Tree::start(
        "# mcp-reuse-server\nsleep 600 & sleep 600 & wait",
        "full-session",
    );
    daemon.wait_tracked_live(tree.pid());
    let gaps = r#"mcp_reaper_lineage_gaps_total{cause="watch_full"}"#;
    assert!(
        wait_until(Duration::from_secs(15), || {
            daemon.read(|s| s.status.as_ref().is_some_and(|st| st.degraded))
                && daemon.metric(gaps).is_some_and(|v| v >= 1.0)
                && daemon.metric("mcp_reaper_degraded") == Some(1.0)
        }),
        "no degraded state with a full watch map: status {:?}, {gaps} {:?}, degraded {:?}",
        daemon.read(|s| s.status.clone()),
        daemon.metric(gaps),
        daemon.metric("mcp_reaper_degraded"),
    );
    for cause in ["watch_error", "kernel_read_error", "decode_error"] {
        let series = format!("mcp_reaper_lineage_gaps_total{{cause=\"{cause}\"}}");
        assert!(daemon.metric(&series).is_some(), "{series} is exported");
    }
    let members = server_tree_pids(tree.pid());
    assert_eq!(members.len(), 3, "bash and two sleeps: {members:?}");

    daemon.release_session("full-session");
    let held = wait_until(REAP_DEADLINE, || {
        daemon.read(|s| {
            s.reported
                .iter()
                .any(|r| r.root.tgid == tree.pid() && r.decision == Decision::Hold)
        })
    });
    assert!(
        held,
        "the released tree was not held: reported {:?}, reaps {:?}",
        daemon.read(|s| s.reported.clone()),
        daemon.read(|s| s.reaps.clone())
    );
    assert!(daemon.read(|s| s.reaps.is_empty()), "reaped while degraded");
    assert!(
        members.iter().all(|p| is_alive(*p)),
        "members killed while degraded: {:?}",
        members
            .iter()
            .filter(|p| !is_alive(**p))
            .collect::<Vec<_>>()
    );
    assert!(daemon.read(|s| s.status.as_ref().is_some_and(|st| st.degraded)));
}
