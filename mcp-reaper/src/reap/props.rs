//! Property: whatever the member lists say, a reap's plan never holds
//! PID 1, the daemon itself or an ancestor of it, a host or a relay, an
//! ancestor of the tree's root, or a process older than the root.
//!
//! Why: these are the processes a reap must leave alone even when
//! membership is wrong (a stale kernel claim, a reused PID, an escapee
//! rule that matched the wrong process); `reaper::guard` is the last word
//! on each key, and ARCHITECTURE.md forbids touching anything outside the
//! tree.
//!
//! A simulated system (`world`) forks (often within one clock tick) and
//! exits processes in a small PID space, reparents orphans to init, and
//! writes its live processes as a fake /proc. One process is the daemon
//! (under the test's own PID, since the reap reads its own ancestors by
//! it), one is the tree's root (sometimes exited), hosts and relays form
//! the never list. The plan's members and, in the eBPF tier, the kernel's
//! lineage are what the tree truly has plus keys drawn at random from
//! every process the system ever had (live, exited, reused); in the other
//! tiers the stdio heirs rule looks for escapees. A dry run of `reap`
//! reports what it would signal: the root checked first, every member
//! from the plan and from `lineage::Lineage` (fork descendants in /proc,
//! the kernel's lineage or the heirs) through `guard::refusal`.
//!
//! An ancestor of the root is judged while the root is alive: once it is
//! gone, nothing in /proc says whose child it was.

mod world;

use std::collections::HashSet;

use proptest::prelude::*;

use self::world::{MAX_PID, Op, World, op};
use crate::{
    procs::identity::ProcKey,
    reap::lineage::{KernelMembers, Lineage, StdioHeirs},
    reap::reaper::{self, ProcDescendants, ReapPlan},
};

/// Most steps of one simulated run.
const MAX_OPS: usize = 24;

#[derive(Clone, Debug)]
struct Case {
    ops: Vec<Op>,
    /// Picks the root and the daemon among the processes ever forked.
    root: usize,
    daemon: usize,
    /// Keys drawn from every process ever, added to the plan's members.
    claimed: Vec<usize>,
    /// The eBPF tier: the kernel's lineage names these (else the heirs
    /// rule runs).
    kernel: Option<Vec<usize>>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(op(), 1..MAX_OPS),
        any::<usize>(),
        any::<usize>(),
        prop::collection::vec(any::<usize>(), 0..6),
        prop::option::of(prop::collection::vec(any::<usize>(), 0..6)),
    )
        .prop_map(|(ops, root, daemon, claimed, kernel)| Case {
            ops,
            root,
            daemon,
            claimed,
            kernel,
        })
}

/// What must never be in the plan, and why.
struct Forbidden {
    root: ProcKey,
    /// PID -> why.
    pids: Vec<(u32, &'static str)>,
}

impl Forbidden {
    fn of(world: &World, root: ProcKey, daemon: ProcKey) -> Self {
        let mut pids = vec![(1, "PID 1"), (daemon.tgid, "the daemon")];
        pids.extend(
            world
                .ancestors(daemon)
                .into_iter()
                .map(|p| (p, "an ancestor of the daemon")),
        );
        pids.extend(
            world
                .ancestors(root)
                .into_iter()
                .map(|p| (p, "an ancestor of the root")),
        );
        for p in world.procs.iter().filter(|p| p.alive) {
            if p.host {
                pids.push((p.key.tgid, "a host"));
            }
            if p.relay {
                pids.push((p.key.tgid, "a relay"));
            }
        }
        Self { root, pids }
    }

    fn why(&self, key: ProcKey) -> Option<&'static str> {
        if key.start_ticks < self.root.start_ticks {
            return Some("older than the root");
        }
        self.pids
            .iter()
            .find(|(pid, _)| *pid == key.tgid)
            .map(|(_, why)| *why)
    }
}

/// A directory for one case's fake /proc: in memory where the system has
/// a tmpfs at /dev/shm (each case writes and reads some hundred files).
fn fake_proc_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let in_memory = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten();
    in_memory.unwrap_or_else(|| tempfile::tempdir().expect("tempdir"))
}

/// Runs the case: the world, its root and daemon, and the keys a dry run
/// of the reap would signal.
fn run(case: &Case, self_pid: u32) -> (World, ProcKey, ProcKey, Vec<ProcKey>) {
    let mut world = World::new();
    world.run(&case.ops);
    let n = world.procs.len();
    let daemon_at = {
        let live: Vec<usize> = world.live().into_iter().filter(|&i| i != 0).collect();
        live.get(case.daemon % live.len().max(1)).copied()
    };
    if let Some(i) = daemon_at {
        let pid = world.procs[i].key.tgid;
        // Every process that ever had the daemon's PID takes the test's.
        world.rename_pid(pid, self_pid);
    }
    let root_at = 1 + case.root % (n - 1).max(1);
    let root = world
        .procs
        .get(root_at)
        .map_or(world.procs[0].key, |p| p.key);
    let daemon = daemon_at.map_or(ProcKey::new(self_pid, 0), |i| world.procs[i].key);
    let pick =
        |is: &[usize]| -> Vec<ProcKey> { is.iter().map(|i| world.procs[i % n].key).collect() };

    let dir = fake_proc_dir();
    world.write_proc(dir.path());
    let proc_root = dir.path().to_path_buf();

    // What the supervisor names: the tree's members by lineage, plus
    // whatever a wrong claim adds.
    let mut members = world.descendants(root);
    members.extend(pick(&case.claimed));
    let never: Vec<ProcKey> = world
        .procs
        .iter()
        .filter(|p| p.alive && (p.host || p.relay))
        .map(|p| p.key)
        .collect();
    let plan = ReapPlan {
        never,
        dry_run: true,
        proc_root: proc_root.clone(),
        ..ReapPlan::new(root, members.clone())
    };
    let kernel = case.kernel.as_ref().map(|is| {
        let mut claimed = world.descendants(root);
        claimed.extend(pick(is));
        Box::new(move || claimed.clone()) as KernelMembers
    });
    let heirs = kernel.is_none().then(|| StdioHeirs {
        proc_root: proc_root.clone(),
        root,
        inodes: world
            .procs
            .get(root_at)
            .map(|p| p.stdio.to_vec())
            .unwrap_or_default(),
    });
    let procs = ProcDescendants::new(proc_root, root, &members);
    let mut source = Lineage::new(procs, kernel, heirs);
    let report = reaper::reap(&plan, &mut source, &|_| None);
    let planned = report.members.iter().map(|m| m.key).collect();
    (world, root, daemon, planned)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_plan_never_holds_what_a_reap_must_leave_alone(case in case()) {
        let self_pid = std::process::id();
        prop_assume!(self_pid > MAX_PID);
        let (world, root, daemon, planned) = run(&case, self_pid);
        let forbidden = Forbidden::of(&world, root, daemon);
        let mut seen = HashSet::new();
        for key in planned {
            prop_assert!(seen.insert(key), "{} planned twice", key);
            if let Some(why) = forbidden.why(key) {
                prop_assert!(false, "{} planned: {} (root {}, daemon {})", key, why, root, daemon);
            }
        }
    }
}

/// The hole the property found: the root's parent, forked by init within
/// the root's own clock tick and no host, passed every check of
/// `guard::refusal` (not older than the root, not the daemon's ancestor,
/// not on the never list). A wrong claim names it; so does the heirs rule
/// alone, when the root inherited its parent's stdio (the parent is then
/// reparented to init, younger than nothing and holding the root's ends).
#[test]
fn a_parent_of_the_root_from_the_same_tick_is_never_planned() {
    let self_pid = std::process::id();
    assert!(self_pid > MAX_PID);
    let fork = |parent, pid, tick| Op::Fork {
        parent,
        pid,
        tick,
        inherit: true,
        host: false,
        relay: false,
    };
    // init (0) forks 2 (1), which forks 3 (2) in the same tick; 3 is the
    // root, 4 (3) a child of init runs the reap.
    let ops = vec![fork(0, 2, true), fork(1, 3, false), fork(0, 4, true)];
    // A claim that names 2 (eBPF tier), or no claim and the heirs rule.
    for (claimed, kernel) in [(vec![1], Some(vec![])), (vec![], None)] {
        let case = Case {
            ops: ops.clone(),
            root: 1,
            daemon: 2,
            claimed,
            kernel,
        };
        let (world, root, daemon, planned) = run(&case, self_pid);
        let parent = world.procs[1].key;
        assert_eq!((root.tgid, parent.start_ticks), (3, root.start_ticks));
        assert_eq!(daemon.tgid, self_pid);
        assert_eq!(
            planned,
            vec![root],
            "{parent} is the root's parent: {case:?}"
        );
    }
}
