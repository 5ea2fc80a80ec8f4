//! The reaper against real process trees: everything in the tree dies,
//! nothing outside it is touched. Each test asserts both. Needs root (it
//! signals and reads other processes); skips with a printed reason
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use mcp_reaper::{
    identity::ProcKey,
    procscan::{self, is_alive, read_key},
    reaper::{self, Outcome, ProcDescendants, ReapPlan, ReapReport},
    trees::members_of,
};
use mcp_reaper_tests::{cannot_run, kill_if_same, privileged, wait_until};

const PROC: &str = "/proc";

fn proc() -> &'static Path {
    Path::new(PROC)
}

fn key_of(pid: u32) -> ProcKey {
    read_key(proc(), pid).unwrap_or_else(|| panic!("no process {pid}"))
}

fn alive(key: ProcKey) -> bool {
    is_alive(proc(), key)
}

fn tree(root: ProcKey) -> Vec<ProcKey> {
    members_of(root, &procscan::snapshot(proc()).procs)
}

fn sleep(arg: &str) -> Child {
    Command::new("sleep")
        .arg(arg)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn sh(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Live processes whose command line is exactly `argv`.
fn with_cmdline(argv: &[&str]) -> Vec<ProcKey> {
    procscan::snapshot(proc())
        .procs
        .into_iter()
        .filter(|p| {
            !p.is_zombie()
                && p.cmdline
                    .iter()
                    .map(String::as_str)
                    .eq(argv.iter().copied())
        })
        .map(|p| p.key)
        .collect()
}

/// Kills whatever a failed test leaves behind (children of the test and
/// everything carrying `marker` as an argument).
struct Cleanup {
    children: Vec<Child>,
    keys: Vec<ProcKey>,
    markers: Vec<Vec<&'static str>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for key in &self.keys {
            for k in tree(*key) {
                kill_if_same(k.tgid, k.start_ticks);
            }
        }
        for m in &self.markers {
            for k in with_cmdline(m) {
                kill_if_same(k.tgid, k.start_ticks);
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn plan(root: ProcKey, members: Vec<ProcKey>, grace_ms: u64) -> ReapPlan {
    ReapPlan {
        grace_term: Duration::from_millis(grace_ms),
        ..ReapPlan::new(root, members)
    }
}

fn reap(plan: &ReapPlan) -> ReapReport {
    let mut source = ProcDescendants::new(PROC, plan.root, &plan.members);
    let report = reaper::reap(plan, &mut source, &|_| None);
    eprintln!(
        "outcome {:?}, {} members, {} signals, {:?}, refused {:?}",
        report.outcome,
        report.members.len(),
        report.signals_sent,
        report.duration,
        report.refused
    );
    report
}

/// The test process and its parent are alive and appear nowhere in the
/// report's signalled members.
fn assert_self_untouched(report: &ReapReport) {
    let me = key_of(std::process::id());
    // SAFETY: getppid has no preconditions.
    let parent = key_of(unsafe { libc::getppid() } as u32);
    for k in [me, parent] {
        assert!(alive(k), "{k} must be alive");
        assert!(
            report.members.iter().all(|m| m.key.tgid != k.tgid),
            "{k} was treated as a member"
        );
    }
}

/// root sh -> sh ignoring SIGTERM -> sleep (inherits the ignored TERM).
const STUBBORN: &str = "sh -c \"trap '' TERM; sleep 7301 & wait\" & wait";

#[test]
fn stubborn_tree_is_killed_and_its_identical_sibling_survives() {
    if !privileged("stubborn_tree_is_killed_and_its_identical_sibling_survives") {
        return;
    }
    let target = sh(STUBBORN);
    let sibling = sh(STUBBORN);
    let (t_root, s_root) = (key_of(target.id()), key_of(sibling.id()));
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![t_root, s_root],
        markers: vec![],
    };
    assert!(wait_until(Duration::from_secs(5), || tree(t_root).len()
        == 3
        && tree(s_root).len() == 3));
    let members = tree(t_root);
    let sibling_members = tree(s_root);

    let report = reap(&plan(t_root, members.clone(), 300));

    assert_eq!(report.outcome, Outcome::Killed);
    for k in &members {
        assert!(!alive(*k), "member {k} survived");
    }
    // The TERM-ignoring sh and its sleep (which inherits the ignored TERM)
    // needed SIGKILL.
    for k in members.iter().filter(|k| **k != t_root) {
        let m = report.members.iter().find(|m| m.key == *k).unwrap();
        assert!(m.signals.contains(&"SIGKILL"), "{k}: {:?}", m.signals);
    }
    assert!(
        report
            .members
            .iter()
            .all(|m| m.exited && members.contains(&m.key))
    );
    // Not in the tree: the identical sibling tree, the test itself.
    for k in &sibling_members {
        assert!(alive(*k), "sibling {k} was killed");
    }
    assert_self_untouched(&report);
    cleanup.children = vec![target, sibling];
}

#[test]
fn setsid_double_fork_escapee_is_reaped() {
    if !privileged("setsid_double_fork_escapee_is_reaped") {
        return;
    }
    let mut host = Command::new(env!("CARGO_BIN_EXE_tree-spawner"))
        .arg("escape")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let host_key = key_of(host.id());
    let mut stdin = host.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    // Read on a thread: a stuck shape fails the test instead of hanging it.
    // Processes of the shape report themselves, possibly after `done`.
    let rx = mcp_reaper_tests::lines_of(host.stdout.take().unwrap());
    let mut pids = std::collections::HashMap::new();
    while !(pids.contains_key("done") && pids.contains_key("escapee")) {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (role, pid) = line.split_once(' ').unwrap();
        pids.insert(role.to_owned(), pid.parse::<u32>().unwrap());
    }
    let root = key_of(pids["root"]);
    let escapee = key_of(pids["escapee"]);
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![root, escapee],
        markers: vec![],
    };
    // It really escaped: not a descendant of the root by /proc, own session.
    assert!(!tree(root).contains(&escapee));
    let info = procscan::read_process(proc(), escapee.tgid).unwrap();
    assert_ne!(
        info.sid,
        procscan::read_process(proc(), root.tgid).unwrap().sid
    );

    let report = reap(&ReapPlan {
        never: vec![host_key],
        ..plan(root, vec![root, escapee], 2000)
    });

    assert_eq!(report.outcome, Outcome::Terminated);
    assert!(!alive(root) && !alive(escapee));
    assert!(alive(host_key), "the host must survive");
    assert!(report.members.iter().all(|m| m.key != host_key));
    assert_self_untouched(&report);
    drop(stdin);
    cleanup.children = vec![host];
}

/// The never list, the reaper itself and its ancestors are checked for every
/// member, not only above the root: a never-listed process inside the tree,
/// and the test process and its parent handed over as members (as wrong
/// evidence would hand them), are refused and survive; the rest goes.
#[test]
fn never_listed_self_and_ancestor_members_are_refused_inside_the_tree() {
    if !privileged("never_listed_self_and_ancestor_members_are_refused_inside_the_tree") {
        return;
    }
    let target = sh("sleep 7313 & sleep 7314 & wait");
    let root = key_of(target.id());
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![root],
        markers: vec![vec!["sleep", "7314"]],
    };
    assert!(
        wait_until(Duration::from_secs(5), || tree(root).len() == 3),
        "the tree never had its two sleeps: {:?}",
        tree(root)
    );
    let members = tree(root);
    let kept = *with_cmdline(&["sleep", "7314"])
        .iter()
        .find(|k| members.contains(k))
        .expect("the never-listed sleep is a member");
    let me = key_of(std::process::id());
    // SAFETY: getppid has no preconditions.
    let parent = key_of(unsafe { libc::getppid() } as u32);
    let mut handed = members.clone();
    handed.extend([me, parent]);

    let report = reap(&ReapPlan {
        never: vec![kept],
        ..plan(root, handed, 300)
    });

    assert!(alive(kept), "the never-listed member {kept} was killed");
    for k in members.iter().filter(|k| **k != kept) {
        assert!(!alive(*k), "member {k} survived");
    }
    for (k, why) in [
        (kept, reaper::WHY_NEVER),
        (me, reaper::WHY_SELF),
        (parent, reaper::WHY_ANCESTOR),
    ] {
        assert!(
            report.refused.contains(&(k, why)),
            "{k} not refused as {why:?}: {:?}",
            report.refused
        );
    }
    assert!(report.members.iter().all(|m| m.key != kept));
    assert_self_untouched(&report);
    cleanup.children = vec![target];
}

#[test]
fn tree_forking_in_a_tight_loop_is_reaped_completely() {
    if !privileged("tree_forking_in_a_tight_loop_is_reaped_completely") {
        return;
    }
    const MARK: [&str; 2] = ["sleep", "7302"];
    let bomb = sh("while :; do sleep 7302 & done");
    let root = key_of(bomb.id());
    let bystander = sleep("7302");
    let bystander_key = key_of(bystander.id());
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![root],
        markers: vec![MARK.to_vec()],
    };
    assert!(wait_until(Duration::from_secs(5), || tree(root).len() > 20));
    let members = tree(root);

    let report = reap(&plan(root, members.clone(), 1000));

    assert!(
        matches!(report.outcome, Outcome::Terminated | Outcome::Killed),
        "{:?}",
        report.outcome
    );
    assert!(
        report.members.len() > members.len(),
        "members born during the reap were found"
    );
    for m in &report.members {
        assert!(!alive(m.key), "{} survived", m.key);
    }
    // Nothing of the tree is left anywhere, however it was reparented:
    // only the bystander (same command line, not in the tree) runs it.
    assert_eq!(with_cmdline(&MARK), vec![bystander_key]);
    assert!(report.members.iter().all(|m| m.key != bystander_key));
    assert_self_untouched(&report);
    cleanup.children = vec![bomb, bystander];
}

#[test]
fn wrong_start_time_never_reaches_the_process_holding_the_pid() {
    if !privileged("wrong_start_time_never_reaches_the_process_holding_the_pid") {
        return;
    }
    let victim = sleep("7303");
    let root = key_of(victim.id());
    // Started after the root, so only the post-open check can catch it.
    std::thread::sleep(Duration::from_millis(20));
    let other = sleep("7304");
    let other_key = key_of(other.id());
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![root, other_key],
        markers: vec![],
    };
    assert!(other_key.start_ticks > root.start_ticks);
    // Same PID as a live unrelated process, another start time: what a
    // stale member key looks like after the PID was reused.
    let stale_newer = ProcKey::new(other_key.tgid, other_key.start_ticks + 1);
    let stale_older = ProcKey::new(other_key.tgid, root.start_ticks - 1);

    let report = reap(&plan(root, vec![root, stale_newer, stale_older], 2000));

    assert_eq!(report.outcome, Outcome::Terminated);
    assert!(!alive(root));
    assert!(
        alive(other_key),
        "the process now holding the PID was signalled"
    );
    assert!(report.refused.contains(&(stale_newer, reaper::WHY_REUSED)));
    assert!(
        report
            .refused
            .contains(&(stale_older, reaper::WHY_OLDER_THAN_ROOT))
    );
    assert!(report.members.iter().all(|m| m.key.tgid != other_key.tgid));
    assert_self_untouched(&report);
    cleanup.children = vec![victim, other];
}

/// A real reuse: the member exits, its PID is handed to a new process
/// (ns_last_pid steers the allocator), and the reaper gets the old key.
#[test]
fn reused_pid_is_not_signalled() {
    if !privileged("reused_pid_is_not_signalled") {
        return;
    }
    let mut gone = sleep("7305");
    let key = key_of(gone.id());
    gone.kill().unwrap();
    gone.wait().unwrap();
    // The new process must start in a later clock tick.
    std::thread::sleep(Duration::from_millis(30));
    let mut reuser = None;
    for _ in 0..50 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (key.tgid - 1).to_string()).is_err() {
            cannot_run(
                "reused_pid_is_not_signalled",
                "ns_last_pid is not writable here",
            );
            return;
        }
        let mut c = sleep("7306");
        if c.id() == key.tgid {
            reuser = Some(c);
            break;
        }
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let reuser = reuser.expect("could not get the PID again in 50 tries");
    let reuser_key = key_of(reuser.id());
    let _cleanup = Cleanup {
        children: vec![reuser],
        keys: vec![reuser_key],
        markers: vec![],
    };
    assert_eq!(reuser_key.tgid, key.tgid);
    assert_ne!(reuser_key, key);

    let report = reap(&plan(key, vec![key], 300));

    assert_eq!(report.outcome, Outcome::Vanished);
    assert_eq!(report.signals_sent, 0);
    assert_eq!(report.refused, vec![(key, reaper::WHY_REUSED)]);
    assert!(alive(reuser_key), "the new holder of the PID was signalled");
    assert_self_untouched(&report);
}

#[test]
fn dry_run_signals_nothing() {
    if !privileged("dry_run_signals_nothing") {
        return;
    }
    let child = sh("sleep 7307 & sleep 7307 & wait");
    let root = key_of(child.id());
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![root],
        markers: vec![],
    };
    assert!(wait_until(Duration::from_secs(5), || tree(root).len() == 3));
    let members = tree(root);

    let report = reap(&ReapPlan {
        dry_run: true,
        ..plan(root, vec![root], 0)
    });

    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(report.signals_sent, 0);
    let mut listed: Vec<_> = report.members.iter().map(|m| m.key).collect();
    listed.sort();
    let mut expected = members.clone();
    expected.sort();
    assert_eq!(listed, expected, "the source's members are reported");
    assert!(
        report
            .members
            .iter()
            .all(|m| m.signals.is_empty() && !m.exited)
    );
    std::thread::sleep(Duration::from_millis(100));
    for k in &members {
        let state = procscan::read_process(proc(), k.tgid).unwrap().state;
        assert!(alive(*k) && state != 'T', "{k} was touched (state {state})");
    }
    assert_self_untouched(&report);
    cleanup.children = vec![child];
}

/// The cgroup v2 hierarchy's mount point (from /proc/self/mounts).
fn cgroup2_mount() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&"cgroup2")).then(|| std::path::PathBuf::from(f[1]))
        })
        .expect("a cgroup2 hierarchy is mounted (the protect test needs one)")
}

/// A cgroup made for a test, removed (after its processes) on drop.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `[[protect]] cgroups` through the daemon's own check: the member that
/// lives in the protected cgroup is never signalled; the rest of the tree
/// goes. The check reads the real /proc/PID/cgroup.
#[test]
fn a_member_in_a_protected_cgroup_is_never_signalled() {
    if !privileged("a_member_in_a_protected_cgroup_is_never_signalled") {
        return;
    }
    let name = format!("mcp-reaper-test-{}", std::process::id());
    let cg = TestCgroup(cgroup2_mount().join(&name));
    std::fs::create_dir_all(&cg.0).unwrap();
    let mut root = sh("sleep 7411 & sleep 7412 & wait");
    let root_key = key_of(root.id());
    let mut cleanup = Cleanup {
        children: vec![],
        keys: vec![root_key],
        markers: vec![vec!["sleep", "7411"], vec!["sleep", "7412"]],
    };
    assert!(
        wait_until(Duration::from_secs(5), || tree(root_key).len() == 3),
        "the tree never had its two sleeps"
    );
    let kept = with_cmdline(&["sleep", "7412"])[0];
    let other = with_cmdline(&["sleep", "7411"])[0];
    std::fs::write(cg.0.join("cgroup.procs"), kept.tgid.to_string()).unwrap();
    assert_eq!(
        procscan::read_cgroup(proc(), kept).unwrap().as_deref(),
        Some(format!("/{name}").as_str()),
        "precondition: the member is in the test cgroup"
    );
    let config = mcp_reaper::config::Config::from_toml_str(
        &format!("presets = []\n[[protect]]\ncgroups = [\"/{name}\"]\n"),
        "test.toml",
    )
    .unwrap();
    let protect = |k: ProcKey| mcp_reaper::protect::check(&config, proc(), k).refusal();
    let p = plan(root_key, tree(root_key), 300);
    let mut source = ProcDescendants::new(PROC, p.root, &p.members);
    let report = reaper::reap(&p, &mut source, &protect);

    assert!(alive(kept), "the protected member was killed");
    assert!(
        report.members.iter().all(|m| m.key != kept),
        "the protected member was signalled: {report:?}"
    );
    assert!(report.refused.contains(&(kept, reaper::WHY_PROTECTED)));
    assert!(!alive(other), "the unprotected member survived");
    // The record names what was signalled by its command line, read when
    // its pidfd was verified (the member is dead by the time it is filed).
    let signalled = |k: ProcKey| report.members.iter().find(|m| m.key == k).cloned();
    assert_eq!(
        signalled(other).map(|m| m.cmdline),
        Some("sleep 7411".to_string())
    );
    assert_eq!(
        signalled(root_key).map(|m| m.cmdline),
        Some(r#"sh -c "sleep 7411 & sleep 7412 & wait""#.to_string())
    );
    assert!(!alive(root_key), "the unprotected root survived");
    let _ = root.wait();
    kill_if_same(kept.tgid, kept.start_ticks);
    assert!(wait_until(Duration::from_secs(5), || !alive(kept)));
    cleanup.keys.clear();
}
