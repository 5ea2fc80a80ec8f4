//! Kernel event pipeline against the real kernel: the raw tracepoint programs, the
//! in-kernel watch map, the ring buffer, decoding and the tracker.
//! Needs root (BPF); skips with a printed reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::Write,
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use mcp_reaper::{
    daemon::{Agent, AgentOptions},
    identity::ProcKey,
    source::{ActiveSource, SourceChoice, ebpf::EbpfOptions},
    tracker::ProcEntry,
};
use mcp_reaper_tests::{kill_if_same, privileged, spawn_on_pid, start_ticks};

/// A running tree-spawner: the stand-in host.
struct Spawner {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines from its stdout, read on a thread so a stuck shape fails the
    /// test after a timeout instead of hanging it.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Spawner {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tree-spawner"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tree-spawner");
        let stdin = child.stdin.take();
        let lines = mcp_reaper_tests::lines_of(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn key(&self) -> ProcKey {
        let pid = self.child.id();
        ProcKey::new(pid, start_ticks(pid).expect("spawner is alive"))
    }

    /// Lets it build its shape; returns role -> pid once it has said
    /// `done` and every role in `expect` has reported (processes of the
    /// shape report themselves, possibly after the spawner's `done`).
    fn go(&mut self, expect: &[&str]) -> HashMap<String, u32> {
        writeln!(self.stdin.as_mut().unwrap(), "go").unwrap();
        let mut roles = HashMap::new();
        let mut done = false;
        while !(done && expect.iter().all(|r| roles.contains_key(*r))) {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| {
                    panic!("spawner silent for 30 s ({e}); roles so far {roles:?}")
                });
            let mut parts = line.split_whitespace();
            let (Some(role), Some(pid)) = (parts.next(), parts.next()) else {
                continue;
            };
            if role == "done" {
                done = true;
            } else {
                roles.insert(role.to_string(), pid.parse().unwrap());
            }
        }
        roles
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Time since boot in clock ticks, the unit of `ProcKey::start_ticks`.
fn uptime_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/uptime").unwrap();
    let secs: f64 = s.split_whitespace().next().unwrap().parse().unwrap();
    (secs * 100.0) as u64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An agent with no presets and no rules: these tests drive the tracker,
/// and nothing on the machine is anyone's tree to it.
fn ebpf_agent(ring_bytes: u32) -> Agent {
    let config = mcp_reaper::config::Config::from_toml_str(
        "presets = []\nbuiltin_servers = false\n",
        "none",
    )
    .unwrap();
    Agent::start(AgentOptions {
        source: SourceChoice::Ebpf,
        ebpf: EbpfOptions {
            ring_bytes,
            ..EbpfOptions::default()
        },
        config: std::sync::Arc::new(config),
        ..AgentOptions::default()
    })
    .expect("the eBPF source loads on this kernel")
}

/// The newest entry for `pid`, live or exited.
fn latest(agent: &Agent, pid: u32) -> Option<&ProcEntry> {
    agent
        .tracker()
        .iter()
        .filter(|e| e.key.tgid == pid)
        .max_by_key(|e| e.key.start_ticks)
}

/// Pumps events into the tracker until `cond` holds (or 10 s pass).
async fn pump_until(agent: &mut Agent, mut cond: impl FnMut(&Agent) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond(agent) {
        if tokio::time::timeout_at(deadline, agent.step())
            .await
            .is_err()
        {
            return cond(agent);
        }
    }
    true
}

#[test]
fn lineage_survives_reparenting_setsid_and_double_fork() {
    if !privileged("lineage_survives_reparenting_setsid_and_double_fork") {
        return;
    }
    runtime().block_on(async {
        let mut agent = ebpf_agent(4 << 20);
        assert_eq!(agent.active_source(), ActiveSource::Ebpf);
        let mut host = Spawner::start(&["escape"]);
        let host_key = host.key();
        agent.ebpf_mut().unwrap().watch_host(host_key).unwrap();
        let roles = host.go(&["root", "middle", "grandchild", "second", "escapee"]);
        let pid = |r: &str| {
            *roles
                .get(r)
                .unwrap_or_else(|| panic!("no {r} in {roles:?}"))
        };
        let (root, middle, grandchild, second, escapee) = (
            pid("root"),
            pid("middle"),
            pid("grandchild"),
            pid("second"),
            pid("escapee"),
        );
        let root_start = start_ticks(root).unwrap();
        let escapee_start = start_ticks(escapee).unwrap();
        let root_key = ProcKey::new(root, root_start);

        // Every member arrives, with its fork parent as lineage parent and
        // the root as its tree, whatever its current ppid and session.
        let all = [root, middle, grandchild, second, escapee];
        let seen = pump_until(&mut agent, |a| {
            all.iter().all(|p| latest(a, *p).is_some())
                && [middle, grandchild, second]
                    .iter()
                    .all(|p| latest(a, *p).is_some_and(|e| e.exited.is_some()))
        })
        .await;
        let t = agent.tracker();
        assert!(
            seen,
            "not every member and exit was reported: {:?}",
            t.stats()
        );
        let entry = |p: u32| latest(&agent, p).unwrap();
        assert_eq!(entry(root).key, root_key, "root identity is (tgid, start)");
        assert_eq!(entry(root).parent, Some(host_key));
        assert_eq!(entry(middle).parent, Some(root_key));
        assert_eq!(entry(grandchild).parent.map(|k| k.tgid), Some(middle));
        assert_eq!(entry(second).parent.map(|k| k.tgid), Some(grandchild));
        assert_eq!(entry(escapee).parent.map(|k| k.tgid), Some(second));
        assert_eq!(entry(escapee).key, ProcKey::new(escapee, escapee_start));
        for p in all {
            assert_eq!(entry(p).tree_root, Some(root_key), "pid {p} tree");
        }
        // The escapee now has another parent and session, yet lineage keeps it.
        let descendants = t.descendants(root_key);
        assert!(
            descendants.iter().any(|k| k.tgid == escapee),
            "escapee missing from descendants {descendants:?}"
        );
        // The kernel removed exited members from the watch map and kept the
        // live ones.
        let src = agent.ebpf_mut().unwrap();
        assert!(src.watched(escapee).is_some());
        assert!(src.watched(middle).is_none());

        kill_if_same(escapee, escapee_start);
        kill_if_same(root, root_start);
        assert!(
            pump_until(&mut agent, |a| a
                .tracker()
                .get(ProcKey::new(escapee, escapee_start))
                .is_some_and(|e| e.exited.is_some()))
            .await,
            "the escapee's exit was not reported"
        );
    });
}

#[test]
fn a_lost_burst_is_counted_and_the_table_resyncs_to_proc() {
    if !privileged("a_lost_burst_is_counted_and_the_table_resyncs_to_proc") {
        return;
    }
    runtime().block_on(async {
        // One page of ring buffer holds about 50 records; the burst makes
        // 2,000 forks and exits while nothing drains it.
        let mut agent = ebpf_agent(4096);
        let mut host = Spawner::start(&["burst", "2000"]);
        agent.ebpf_mut().unwrap().watch_host(host.key()).unwrap();
        let _ = host.go(&[]); // blocks this thread: the reader cannot drain
        let lost = pump_until(&mut agent, |a| a.status().resyncs > 0).await;
        let status = agent.status();
        assert!(lost, "no loss was reported: {status:?}");
        assert!(status.events.lost > 0);
        assert!(!status.degraded, "resync must clear the degraded flag");

        // After a resync the live table is /proc: anything that differs was
        // born after the resync started or has died since.
        let resync_tick = uptime_ticks();
        agent.resync();
        let snapshot = mcp_reaper::procscan::snapshot(std::path::Path::new("/proc"));
        let in_proc: std::collections::BTreeSet<ProcKey> = snapshot
            .procs
            .iter()
            .filter(|p| p.state != 'Z')
            .map(|p| p.key)
            .collect();
        let tracked: std::collections::BTreeSet<ProcKey> = agent
            .tracker()
            .iter()
            .filter(|e| e.is_live())
            .map(|e| e.key)
            .collect();
        assert!(tracked.len() > 10, "the table is suspiciously small");
        for k in in_proc.difference(&tracked) {
            assert!(
                k.start_ticks >= resync_tick,
                "{k} was alive before the resync but is not tracked"
            );
        }
        for k in tracked.difference(&in_proc) {
            // Gone, or a zombie now (it exited after the resync).
            assert!(
                !mcp_reaper::procscan::is_alive(std::path::Path::new("/proc"), *k),
                "{k} is tracked as live, missing from the snapshot, yet alive"
            );
        }
    });
}

/// Issue 11 at the kernel's level: a watch is never written for a process
/// that has exited, and an entry left for it anyway (as a write racing its
/// exit can leave) is not inherited by the next process given its PID:
/// that process's exec carries no watch, and its forks are neither watched
/// nor reported. Its exit deletes the leftover entry.
#[test]
fn a_dead_process_is_not_watched_and_its_pid_inherits_nothing() {
    use mcp_reaper::{
        event::{ProcessEvent, SourceMsg, Watch},
        identity::NS_PER_TICK,
        source::{
            CHANNEL_CAPACITY, SourceCounters,
            ebpf::{EbpfSource, Watched},
        },
    };
    use mcp_reaper_common::{WatchEntry, watch};
    use std::io::BufRead;

    if !privileged("a_dead_process_is_not_watched_and_its_pid_inherits_nothing") {
        return;
    }
    runtime().block_on(async {
        let mut src = EbpfSource::load(&EbpfOptions::default()).expect("the eBPF source loads");
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
        let _reader = src
            .spawn_reader(tx, std::sync::Arc::new(SourceCounters::default()))
            .unwrap();
        let me = ProcKey::new(std::process::id(), start_ticks(std::process::id()).unwrap());

        let mut gone = Command::new("sleep").arg("7431").spawn().unwrap();
        let pid = gone.id();
        let dead_start = start_ticks(pid);
        gone.kill().unwrap();
        gone.wait().unwrap();
        let dead = ProcKey::new(pid, dead_start.expect("sleep started"));
        // The PID's next holder must start in a later clock tick, or it
        // would be the same process by (tgid, start).
        while uptime_ticks() <= dead.start_ticks + 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(src.watch_member(dead, me).unwrap(), Watched::Gone);
        assert_eq!(
            src.watched(pid),
            None,
            "a watch was written for a dead process"
        );

        // What a write racing the exit could still leave behind.
        let stale = WatchEntry {
            root_tgid: me.tgid,
            flags: watch::MEMBER,
            root_start_ns: me.start_ticks * NS_PER_TICK,
            self_start_ns: dead.start_ticks * NS_PER_TICK,
        };
        src.watch_unchecked(pid, stale).unwrap();
        // The PID's next holder, forked by this unwatched process: a shell
        // that forks a child of its own once told to.
        let mut reuser = spawn_on_pid(pid, 2000, || {
            Command::new("sh")
                .args(["-c", "read x; sleep 7432 & echo $!; wait"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        });
        let reuser_key = ProcKey::new(pid, start_ticks(pid).unwrap());
        let mut cleanup = Cleanup(vec![reuser_key]);
        assert_ne!(reuser_key, dead, "the reuser must start in a later tick");
        writeln!(reuser.stdin.as_mut().unwrap(), "go").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(reuser.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let child: u32 = line
            .trim()
            .parse()
            .expect("the reuser prints its child's pid");
        let child_start = start_ticks(child).unwrap();
        cleanup.0.push(ProcKey::new(child, child_start));

        // Every exec is reported; the ring is ordered, so a fork record for
        // the child would come before the child's exec.
        let mut forks_of_child = Vec::new();
        let mut reuser_exec = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let child_exec = loop {
            let msg = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no exec record for the reuser's child {child}"))
                .expect("the reader runs");
            match msg {
                SourceMsg::Event(ev @ ProcessEvent::Fork { .. }) if ev.key().tgid == child => {
                    forks_of_child.push(ev);
                }
                SourceMsg::Event(ProcessEvent::Exec { key, watch, .. }) if key == reuser_key => {
                    reuser_exec = Some(watch);
                }
                SourceMsg::Event(ProcessEvent::Exec { key, watch, .. }) if key.tgid == child => {
                    break watch;
                }
                _ => {}
            }
        };
        assert_eq!(reuser_exec, Some(Watch::default()), "the reuser's exec");
        assert_eq!(child_exec, Watch::default(), "the reuser's child's exec");
        assert!(
            forks_of_child.is_empty(),
            "fork reported: {forks_of_child:?}"
        );
        assert_eq!(src.watched(child), None, "the child inherited the watch");

        kill_if_same(child, child_start);
        reuser.kill().unwrap();
        reuser.wait().unwrap();
        assert_eq!(src.watched(pid), None, "the reuser's exit leaves the entry");
    });
}

/// Kills these processes (if they are still themselves) when dropped, so a
/// failing test leaves nothing running.
struct Cleanup(Vec<ProcKey>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for k in self.0.iter().rev() {
            kill_if_same(k.tgid, k.start_ticks);
        }
    }
}

/// The exec of a watched process (a host's child) carries its new command
/// line and uid, read by the kernel program from the new image; the exec
/// of an unwatched one carries none.
#[test]
fn a_watched_exec_carries_its_command_line_and_an_unwatched_one_does_not() {
    use mcp_reaper::{
        event::{ExecImage, ProcessEvent, SourceMsg},
        source::{CHANNEL_CAPACITY, SourceCounters, ebpf::EbpfSource},
    };

    if !privileged("a_watched_exec_carries_its_command_line_and_an_unwatched_one_does_not") {
        return;
    }
    runtime().block_on(async {
        let mut src = EbpfSource::load(&EbpfOptions::default()).expect("the eBPF source loads");
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHANNEL_CAPACITY);
        let _reader = src
            .spawn_reader(tx, std::sync::Arc::new(SourceCounters::default()))
            .unwrap();
        let me = ProcKey::new(std::process::id(), start_ticks(std::process::id()).unwrap());
        src.watch_host(me).unwrap();
        // A long argument: the record keeps the start of the command line.
        let long = "x".repeat(600);
        let script = "exec sleep 7434";
        let mut child = Command::new("sh")
            .args(["-c", script, "argv-marker", &long])
            .spawn()
            .unwrap();
        let pid = child.id();
        let _cleanup = Cleanup(vec![ProcKey::new(pid, start_ticks(pid).unwrap())]);
        let mut images = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while images.len() < 2 {
            let msg = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no exec records for {pid}: {images:?}"))
                .expect("the reader runs");
            if let SourceMsg::Event(ProcessEvent::Exec { key, image, .. }) = msg
                && key.tgid == pid
            {
                images.push(image);
            }
        }
        let sh = images[0].clone().expect("sh's exec carries its image");
        assert_eq!(sh.uid, 0);
        assert_eq!(&sh.cmdline[..4], ["sh", "-c", script, "argv-marker"]);
        assert!(sh.truncated, "{} bytes kept", sh.cmdline.concat().len());
        assert!(sh.cmdline[4].starts_with("xxx") && sh.cmdline[4].len() < long.len());
        assert_eq!(
            images[1],
            Some(ExecImage {
                uid: 0,
                cmdline: vec!["sleep".into(), "7434".into()],
                truncated: false,
            }),
            "the same process's next exec"
        );
        child.kill().unwrap();
        child.wait().unwrap();

        // No longer a host: the next child is nobody's, and its exec
        // carries no image.
        src.unwatch(me);
        let mut other = Command::new("sleep").arg("7435").spawn().unwrap();
        let other_pid = other.id();
        let image = loop {
            let msg = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no exec record for {other_pid}"))
                .expect("the reader runs");
            if let SourceMsg::Event(ProcessEvent::Exec { key, image, .. }) = msg
                && key.tgid == other_pid
            {
                break image;
            }
        };
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(image, None);
    });
}
