//! The daemon ending real leaks: real MCP servers from the npm registry
//! under a stand-in host, the real kernel, real signals. Every test asserts
//! what must survive as well as what must go. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, time::Duration};

mod common;

use common::Daemon;
use mcp_reaper::{
    config::Config,
    policy::Decision,
    source::{
        SourceChoice,
        ebpf::{CloseTier, EbpfOptions},
    },
};
use mcp_reaper_tests::{
    FAKE_SERVER_RULE, fake_server,
    host::{Session, TestHost, Transport, host_config, is_alive, server_tree_pids},
    privileged, start_ticks, wait_until,
};

/// The test host's rule with a 1 s grace and kill_after; the `[policy]`
/// table is left open for more keys.
fn host_rule() -> String {
    host_config("1s", "1s")
}

fn config(extra: &str) -> Config {
    Config::from_toml_str(&format!("{}\n{extra}", host_rule()), "test-config").unwrap()
}

fn all_gone(pids: &[u32]) -> bool {
    pids.iter().all(|p| !is_alive(*p))
}

/// Grace + kill_after + slack: a behavioural deadline, not a benchmark.
const REAP_DEADLINE: Duration = Duration::from_secs(15);

fn spawn_sessions(host: &mut TestHost, n: usize, transport: Transport) -> Vec<Session> {
    (0..n)
        .map(|i| {
            let id = format!("{}{i}", transport.as_str());
            let sid = format!("session-{id}");
            host.spawn(&id, transport, &[("MCP_TEST_SESSION", sid.as_str())])
        })
        .collect()
}

/// Scenarios 1, 2 and 4: sessions with identical command lines, some
/// released by the host (stdin closed; the server ignores EOF and leaks),
/// some kept. Exactly the released trees die, whole.
fn released_sessions_die_kept_sessions_live(source: SourceChoice, n: usize) {
    released_sessions_die_kept_sessions_live_with(source, n, EbpfOptions::default());
}

fn released_sessions_die_kept_sessions_live_with(
    source: SourceChoice,
    n: usize,
    ebpf: EbpfOptions,
) {
    let daemon = Daemon::start_with(source, config(""), ebpf);
    let mut host = TestHost::start();
    let mut sessions = spawn_sessions(&mut host, n / 2, Transport::Socket);
    sessions.extend(spawn_sessions(&mut host, n - n / 2, Transport::Pipe));
    for s in &sessions {
        daemon.wait_tracked_live(s.pid);
    }
    let (closed, kept): (Vec<_>, Vec<_>) =
        sessions.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let mut doomed = Vec::new();
    for (_, s) in &closed {
        doomed.extend(server_tree_pids(s.pid));
        host.close_stdin(&s.id);
    }
    assert!(
        doomed.len() >= 3 * closed.len(),
        "npm exec -> sh -> node each"
    );
    assert!(
        wait_until(REAP_DEADLINE, || all_gone(&doomed)),
        "released trees survive: {:?}",
        doomed.iter().filter(|p| is_alive(**p)).collect::<Vec<_>>()
    );
    assert!(is_alive(host.pid()), "the host is never touched");
    for (_, s) in &kept {
        assert!(
            server_tree_pids(s.pid).len() >= 3,
            "kept tree {} lost members",
            s.pid
        );
        assert!(host.ping(&s.id), "kept session {} must still answer", s.id);
    }
    let reaps = daemon.wait_reaps(closed.len());
    assert_eq!(reaps.len(), closed.len(), "{reaps:?}");
    assert!(
        reaps
            .iter()
            .all(|r| r.reason.as_deref() == Some("peer-released"))
    );
}

#[test]
fn ebpf_tier_reaps_exactly_the_released_sessions() {
    if !privileged("ebpf_tier_reaps_exactly_the_released_sessions") {
        return;
    }
    released_sessions_die_kept_sessions_live(SourceChoice::Ebpf, 20);
}

/// The eBPF tier with its close tier on (`run --close-tier on`): the
/// kernel's close records stand in for the stdin watches that `auto`
/// runs on this machine.
fn with_close_tier() -> EbpfOptions {
    EbpfOptions {
        close_tier: CloseTier::On,
        ..EbpfOptions::default()
    }
}

#[test]
fn ebpf_tier_with_close_tier_reaps_exactly_the_released_sessions() {
    if !privileged("ebpf_tier_with_close_tier_reaps_exactly_the_released_sessions") {
        return;
    }
    released_sessions_die_kept_sessions_live_with(SourceChoice::Ebpf, 6, with_close_tier());
}

#[test]
fn poll_tier_reaps_exactly_the_released_sessions() {
    if !privileged("poll_tier_reaps_exactly_the_released_sessions") {
        return;
    }
    released_sessions_die_kept_sessions_live(SourceChoice::Poll, 6);
}

#[test]
fn pidfd_tier_reaps_exactly_the_released_sessions() {
    if !privileged("pidfd_tier_reaps_exactly_the_released_sessions") {
        return;
    }
    released_sessions_die_kept_sessions_live(SourceChoice::Pidfd, 6);
}

/// Scenario 5: a host killed with SIGKILL; another host's tree survives.
fn host_killed(source: SourceChoice) {
    let daemon = Daemon::start(source, config(""));
    let mut host = TestHost::start();
    let mut other = TestHost::start();
    let a = host.spawn("a", Transport::Socket, &[]);
    let b = host.spawn("b", Transport::Pipe, &[]);
    let c = other.spawn("c", Transport::Socket, &[]);
    for s in [&a, &b, &c] {
        daemon.wait_tracked_live(s.pid);
    }
    let mut doomed = server_tree_pids(a.pid);
    doomed.extend(server_tree_pids(b.pid));
    host.kill();
    assert!(
        wait_until(REAP_DEADLINE, || all_gone(&doomed)),
        "trees of the killed host survive"
    );
    assert!(other.ping("c"), "another host's tree is untouched");
    assert!(server_tree_pids(c.pid).len() >= 3);
}

#[test]
fn ebpf_tier_reaps_every_tree_of_a_killed_host_only() {
    if !privileged("ebpf_tier_reaps_every_tree_of_a_killed_host_only") {
        return;
    }
    host_killed(SourceChoice::Ebpf);
}

#[test]
fn ebpf_tier_with_close_tier_never_reaps_idle_or_shut_down_but_open_sessions() {
    if !privileged("ebpf_tier_with_close_tier_never_reaps_idle_or_shut_down_but_open_sessions") {
        return;
    }
    idle_and_shut_down_never_reaped_with(SourceChoice::Ebpf, with_close_tier());
}

#[test]
fn poll_tier_reaps_every_tree_of_a_killed_host_only() {
    if !privileged("poll_tier_reaps_every_tree_of_a_killed_host_only") {
        return;
    }
    host_killed(SourceChoice::Poll);
}

#[test]
fn pidfd_tier_reaps_every_tree_of_a_killed_host_only() {
    if !privileged("pidfd_tier_reaps_every_tree_of_a_killed_host_only") {
        return;
    }
    host_killed(SourceChoice::Pidfd);
}

/// Scenarios 3 and 4: a live tree idle for longer than every timeout, and a
/// host that calls shutdown() without closing: neither is touched.
#[test]
fn idle_and_shut_down_but_open_sessions_are_never_reaped() {
    if !privileged("idle_and_shut_down_but_open_sessions_are_never_reaped") {
        return;
    }
    idle_and_shut_down_never_reaped(SourceChoice::Ebpf);
}

/// The same in the pidfd tier, where shutdown() raises RDHUP on the stdin
/// duplicate: the wake's re-check must find the socket not released.
#[test]
fn pidfd_tier_never_reaps_idle_or_shut_down_but_open_sessions() {
    if !privileged("pidfd_tier_never_reaps_idle_or_shut_down_but_open_sessions") {
        return;
    }
    idle_and_shut_down_never_reaped(SourceChoice::Pidfd);
}

fn idle_and_shut_down_never_reaped(source: SourceChoice) {
    idle_and_shut_down_never_reaped_with(source, EbpfOptions::default());
}

fn idle_and_shut_down_never_reaped_with(source: SourceChoice, ebpf: EbpfOptions) {
    let daemon = Daemon::start_with(source, config(""), ebpf);
    let mut host = TestHost::start();
    let idle = host.spawn("idle", Transport::Socket, &[]);
    let shut = host.spawn("shut", Transport::Socket, &[]);
    daemon.wait_tracked_live(idle.pid);
    daemon.wait_tracked_live(shut.pid);
    let shut_pids = server_tree_pids(shut.pid);
    host.silence("idle");
    host.shutdown("shut");
    // Longer than grace + kill_after + a reconcile, several times over.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        all_alive(&shut_pids),
        "shutdown() without close is not a release"
    );
    assert!(host.ping("idle"), "the idle session still serves");
    assert!(daemon.read(|s| s.reaps.is_empty()));
}

fn all_alive(pids: &[u32]) -> bool {
    pids.iter().all(|p| is_alive(*p))
}

/// Scenario 10: dry run and observe signal nothing but report.
#[test]
fn dry_run_and_observe_signal_nothing_and_report() {
    if !privileged("dry_run_and_observe_signal_nothing_and_report") {
        return;
    }
    for extra in [
        "[policy]\ndry_run = true",
        "[policy.actions]\npeer-released = \"observe\"",
    ] {
        // The [policy] table is already open in host_rule() for the first.
        let cfg = if extra.starts_with("[policy]\n") {
            Config::from_toml_str(
                &format!("{}\ndry_run = true\n", host_rule().trim_end()),
                "dry-run",
            )
            .unwrap()
        } else {
            config(extra)
        };
        let daemon = Daemon::start(SourceChoice::Ebpf, cfg);
        let mut host = TestHost::start();
        let s = host.spawn("s", Transport::Socket, &[]);
        daemon.wait_tracked_live(s.pid);
        let pids = server_tree_pids(s.pid);
        host.close_stdin("s");
        let reported = wait_until(Duration::from_secs(10), || {
            daemon.read(|sh| sh.reported.iter().any(|r| r.root.tgid == s.pid))
        });
        assert!(reported, "{extra}: the orphan was not reported");
        std::thread::sleep(Duration::from_secs(3));
        assert!(all_alive(&pids), "{extra}: nothing may be signalled");
        let decision = daemon.read(|sh| {
            sh.reported
                .iter()
                .find(|r| r.root.tgid == s.pid)
                .map(|r| r.decision)
        });
        let want = if extra.contains("dry_run") {
            Decision::DryRun
        } else {
            Decision::Observe
        };
        assert_eq!(decision, Some(want));
        assert!(daemon.read(|sh| sh.reaps.is_empty()));
    }
}

/// Scenario 11: the host's own word (`release`) ends exactly that session,
/// even though the host still holds its fds.
#[test]
fn release_by_session_reaps_exactly_that_session() {
    if !privileged("release_by_session_reaps_exactly_that_session") {
        return;
    }
    let daemon = Daemon::start(SourceChoice::Ebpf, config(""));
    let mut host = TestHost::start();
    let sessions = spawn_sessions(&mut host, 3, Transport::Socket);
    for s in &sessions {
        daemon.wait_tracked_live(s.pid);
    }
    let doomed = server_tree_pids(sessions[1].pid);
    daemon.release_session("session-socket1");
    assert!(wait_until(REAP_DEADLINE, || all_gone(&doomed)));
    assert!(host.ping(&sessions[0].id) && host.ping(&sessions[2].id));
    let reaps = daemon.wait_reaps(1);
    assert_eq!(reaps.len(), 1);
    assert_eq!(reaps[0].reason.as_deref(), Some("session-ended"));
}

/// Scenarios 6 and 7: a server whose descendant escapes with setsid and a
/// double fork, and one that keeps forking while it is reaped. Nothing of
/// either survives; this test process (their host) is untouched.
#[test]
fn escaped_and_forking_descendants_are_reaped_too() {
    if !privileged("escaped_and_forking_descendants_are_reaped_too") {
        return;
    }
    let daemon = Daemon::start(SourceChoice::Ebpf, config(FAKE_SERVER_RULE));
    let marker = format!("/tmp/mcp-reaper-escapee-{}", std::process::id());
    let (mut escaper, escaper_end) = fake_server(&format!(
        "sleep 1; (setsid bash -c 'echo $$ > {marker}; exec sleep 600' &) ; exec sleep 600"
    ));
    let (mut forker, forker_end) = fake_server("sleep 1; while :; do sleep 600 & sleep 0.02; done");
    daemon.wait_tracked_live(escaper.id());
    daemon.wait_tracked_live(forker.id());
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&marker).is_ok_and(|s| !s.trim().is_empty())
    }));
    let escapee: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let escapee_start = start_ticks(escapee).unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{escapee}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1),
        Some("1"),
        "the escapee was reparented to init"
    );
    std::thread::sleep(Duration::from_millis(300)); // let the forker fork
    let forker_pids = server_tree_pids(forker.id());
    assert!(forker_pids.len() > 3);
    drop(escaper_end);
    drop(forker_end);
    assert!(
        wait_until(REAP_DEADLINE, || start_ticks(escapee)
            != Some(escapee_start)),
        "the setsid escapee survived"
    );
    assert!(
        wait_until(REAP_DEADLINE, || all_gone(&forker_pids)
            && server_tree_pids(forker.id()).len() <= 1),
        "the forking tree survived"
    );
    let _ = escaper.wait();
    let _ = forker.wait();
    // Nothing the forker could have started is left anywhere.
    let leftovers = Command::new("pgrep")
        .args(["-f", "mcp-fake-server"])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "leftovers: {:?}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
    let _ = std::fs::remove_file(&marker);
    let reaps = daemon.wait_reaps(2);
    assert_eq!(reaps.len(), 2, "{reaps:?}");
}

/// Issue scenario: the host keeps the fd but stops talking. The tree turns
/// `suspect` (idle) only after `idle_after`, is reported, never orphaned
/// and never reaped; once a newer tree of the same server under the same
/// host is in use, the idle one is `superseded`, still only reported.
#[test]
fn silent_sessions_turn_suspect_after_idle_after_and_are_only_reported() {
    if !privileged("silent_sessions_turn_suspect_after_idle_after_and_are_only_reported") {
        return;
    }
    let cfg = Config::from_toml_str(
        &format!("{}\nidle_after = \"3s\"\n", host_rule().trim_end()),
        "idle",
    )
    .unwrap();
    let daemon = Daemon::start(SourceChoice::Ebpf, cfg);
    let mut host = TestHost::start();
    let old = host.spawn("old", Transport::Socket, &[]);
    daemon.wait_tracked_live(old.pid);
    let pids = server_tree_pids(old.pid);
    host.silence("old");
    let state_of = |pid: u32| {
        daemon.read(|s| {
            s.trees
                .iter()
                .find(|t| t.root.tgid == pid)
                .map(|t| (t.state, t.reason.clone()))
        })
    };
    // Not before idle_after: still live one second in.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        state_of(old.pid).map(|s| s.0),
        Some(mcp_reaper::trees::TreeState::Live)
    );
    assert!(wait_until(Duration::from_secs(15), || state_of(old.pid)
        == Some((
            mcp_reaper::trees::TreeState::Suspect,
            Some("idle".into())
        ))));
    // A newer session of the same server, in use, supersedes it.
    let new = host.spawn("new", Transport::Socket, &[]);
    daemon.wait_tracked_live(new.pid);
    let superseded = wait_until(Duration::from_secs(15), || {
        assert!(host.ping("new"));
        state_of(old.pid)
            == Some((
                mcp_reaper::trees::TreeState::Suspect,
                Some("superseded".into()),
            ))
    });
    assert!(superseded, "old tree: {:?}", state_of(old.pid));
    assert!(
        all_alive(&pids),
        "suspect trees are never reaped by default"
    );
    assert!(host.ping("old"), "and the idle session still works");
    assert!(daemon.read(|s| s.reaps.is_empty()));
    assert!(daemon.read(|s| {
        s.reported
            .iter()
            .any(|r| r.root.tgid == old.pid && r.decision == Decision::Observe)
    }));
}

/// An operator who opts in to enforcing the heuristics gets what the config
/// says: a silent session alone is reaped as `idle`, a silent one beside a
/// newer one in use as `superseded`; the session in use is never touched.
#[test]
fn enforced_idle_and_superseded_are_reaped_and_the_session_in_use_is_not() {
    if !privileged("enforced_idle_and_superseded_are_reaped_and_the_session_in_use_is_not") {
        return;
    }
    let cfg = Config::from_toml_str(
        &format!(
            "{}\nidle_after = \"2s\"\n[policy.actions]\nidle = \"enforce\"\nsuperseded = \"enforce\"\n",
            host_rule().trim_end()
        ),
        "enforce-heuristics",
    )
    .unwrap();
    let daemon = Daemon::start(SourceChoice::Ebpf, cfg);
    let mut pool = TestHost::start();
    let mut lonely_host = TestHost::start();
    // Every session is kept in use until all three are tracked: on a busy
    // machine one spawn can take longer than `idle_after`, and a session
    // silent that long before the test silences it would go too early.
    let old = pool.spawn("old", Transport::Socket, &[]);
    let lonely = lonely_host.spawn("lonely", Transport::Socket, &[]);
    assert!(pool.ping("old"));
    let new = pool.spawn("new", Transport::Socket, &[]);
    let tracked_live = wait_until(Duration::from_secs(15), || {
        assert!(pool.ping("old") && pool.ping("new") && lonely_host.ping("lonely"));
        [&old, &lonely, &new].iter().all(|s| {
            daemon.read(|d| {
                d.trees
                    .iter()
                    .any(|t| t.root.tgid == s.pid && t.state == mcp_reaper::trees::TreeState::Live)
            })
        })
    });
    assert!(
        tracked_live,
        "precondition: the three sessions are tracked live"
    );
    let (old_pids, lonely_pids, new_pids) = (
        server_tree_pids(old.pid),
        server_tree_pids(lonely.pid),
        server_tree_pids(new.pid),
    );
    pool.silence("old");
    lonely_host.silence("lonely");
    // The session in use answers throughout; the silent ones go.
    let gone = wait_until(Duration::from_secs(30), || {
        assert!(pool.ping("new"), "the session in use stopped answering");
        all_gone(&old_pids) && all_gone(&lonely_pids)
    });
    assert!(gone, "enforced idle/superseded trees survived");
    assert!(all_alive(&new_pids), "the session in use was touched");
    let reaps = daemon.wait_reaps(2);
    let reason_of = |root: u32| {
        reaps
            .iter()
            .find(|r| r.root.tgid == root)
            .and_then(|r| r.reason.clone())
    };
    assert_eq!(reason_of(old.pid).as_deref(), Some("superseded"));
    assert_eq!(reason_of(lonely.pid).as_deref(), Some("idle"));
    assert!(reaps.iter().all(|r| r.root.tgid != new.pid), "{reaps:?}");
    assert!(pool.ping("new"));
}

/// Live processes whose command line is exactly `argv`.
fn running(argv: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-x", "-f", argv])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A server that ignores SIGTERM and double-forks setsid escapees in a
/// tight loop, before and during its reap: in every tier, nothing of it is
/// left, and a bystander started by the host (outside the tree) and the
/// host itself live on.
fn double_forking_tree_leaves_nothing(source: SourceChoice, tag: &str) {
    let daemon = Daemon::start(source, config(FAKE_SERVER_RULE));
    let escapee = format!("sleep {tag}");
    let mut bystander = Command::new("sleep").arg(tag).arg("1").spawn().unwrap();
    let (mut server, end) = fake_server(&format!(
        "trap '' TERM; sleep 1; while :; do (setsid sleep {tag} &); done"
    ));
    daemon.wait_tracked_live(server.id());
    assert!(
        wait_until(Duration::from_secs(10), || running(&escapee).len() > 20),
        "precondition: the server double-forks escapees"
    );
    drop(end);
    let gone = wait_until(Duration::from_secs(40), || {
        running(&escapee).is_empty() && server.try_wait().unwrap().is_some()
    });
    assert!(
        gone,
        "{} escapees survived the reap ({source:?})",
        running(&escapee).len()
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander outside the tree was killed"
    );
    let reaps = daemon.wait_reaps(1);
    assert_eq!(reaps.len(), 1, "{reaps:?}");
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn ebpf_tier_a_tight_double_fork_loop_leaves_nothing() {
    if !privileged("ebpf_tier_a_tight_double_fork_loop_leaves_nothing") {
        return;
    }
    double_forking_tree_leaves_nothing(SourceChoice::Ebpf, "7451");
}

#[test]
fn poll_tier_a_tight_double_fork_loop_leaves_nothing() {
    if !privileged("poll_tier_a_tight_double_fork_loop_leaves_nothing") {
        return;
    }
    double_forking_tree_leaves_nothing(SourceChoice::Poll, "7452");
}

#[test]
fn pidfd_tier_a_tight_double_fork_loop_leaves_nothing() {
    if !privileged("pidfd_tier_a_tight_double_fork_loop_leaves_nothing") {
        return;
    }
    double_forking_tree_leaves_nothing(SourceChoice::Pidfd, "7453");
}

/// The kernel's fork records of a double fork are still queued (a slow
/// drain) when the root exits and a look at /proc finds nobody: the tree is
/// kept until the source has caught up, so the escapee the records name is
/// still a member, and is reaped as a remnant once the host lets go.
#[test]
fn a_tree_is_not_forgotten_while_its_fork_records_are_queued() {
    if !privileged("a_tree_is_not_forgotten_while_its_fork_records_are_queued") {
        return;
    }
    let slow_drain = EbpfOptions {
        drain_interval: Duration::from_secs(3),
        close_tier: CloseTier::Off,
        ..EbpfOptions::default()
    };
    let daemon = Daemon::start_with(SourceChoice::Ebpf, config(FAKE_SERVER_RULE), slow_drain);
    let (mut server, end) = fake_server("sleep 2; (setsid sleep 7471 &); exit 0");
    let root = server.id();
    daemon.wait_tracked_live(root);
    let _ = server.wait();
    assert!(
        wait_until(Duration::from_secs(5), || running("sleep 7471").len() == 1),
        "precondition: the escapee runs"
    );
    // Past the reconcile interval and the slow drain: the tree is still
    // known (old code forgot it at the first empty look).
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        daemon.tree(root).is_some(),
        "the tree was forgotten while its fork records were queued"
    );
    drop(end);
    assert!(
        wait_until(Duration::from_secs(20), || running("sleep 7471").is_empty()),
        "the escapee of a forgotten tree leaked"
    );
    let reaps = daemon.wait_reaps(1);
    assert!(reaps.iter().any(|r| r.root.tgid == root), "{reaps:?}");
}
