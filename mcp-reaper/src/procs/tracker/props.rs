//! Property: whatever becomes of the kernel's events on their way (lost,
//! delivered twice, delivered in any order), a resync from /proc makes the
//! process table agree with /proc again.
//!
//! Why: the table is what every tree, verdict and reap is built from, and
//! the only promise after a loss is that `resync` repairs it. A table that
//! kept a dead process alive, missed a live one, or let a reused PID stand
//! for its previous holder would put the wrong process in a tree.
//!
//! A simulated kernel (`world`) forks, execs and exits processes in a
//! small PID space (so PIDs come back under later start times), reparents
//! orphans to init and leaves zombies; some forks carry a watch left for
//! another process. Its events reach the tracker with losses, duplicates
//! and delays, then the tracker resyncs from the simulated /proc. After
//! that, by (tgid, start time):
//! - the live entries are exactly the processes /proc shows alive, each
//!   holding its PID, and /proc's zombies are entries that exited;
//! - the indexes agree with the entries, and the table is not degraded;
//! - every lineage parent is a true ancestor that started no later;
//! - every live tree member truly descends from its tree's root (not yet
//!   that the table's own lineage shows it: a fork that arrives after the
//!   child's exec joins the child to its forker's tree while the entry
//!   keeps exec's parent, init; an open question for `admit`);
//! - a second resync with the same scan changes nothing.

mod world;

use std::collections::BTreeSet;

use proptest::prelude::*;

use self::world::{HOST, Op, World, op};
use super::{ProcEntry, Tracker};
use crate::{
    procs::identity::ProcKey, procs::procscan::ProcInfo, source::event::ProcessEvent,
    source::event::Watch,
};

/// Most steps of one simulated run.
const MAX_OPS: usize = 40;

/// What becomes of one true event on its way: how many copies arrive (0:
/// it is lost) and how late each arrives, in events.
#[derive(Clone, Debug)]
struct Fate {
    copies: usize,
    delays: [usize; 2],
}

#[derive(Clone, Debug)]
struct Case {
    ops: Vec<Op>,
    fates: Vec<Fate>,
    /// Longest delay (0: every copy in true order).
    spread: usize,
    /// /proc lists processes in PID order, not start order.
    scan_reversed: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let fate = (
        prop_oneof![1 => Just(0), 6 => Just(1), 1 => Just(2)],
        [any::<usize>(), any::<usize>()],
    )
        .prop_map(|(copies, delays)| Fate { copies, delays });
    (
        prop::collection::vec(op(), 0..MAX_OPS),
        prop::collection::vec(fate, MAX_OPS),
        prop_oneof![Just(0), 1..MAX_OPS],
        any::<bool>(),
    )
        .prop_map(|(ops, fates, spread, scan_reversed)| Case {
            ops,
            fates,
            spread,
            scan_reversed,
        })
}

/// The events as they arrive, and how many were lost.
fn deliver(events: &[ProcessEvent], case: &Case) -> (Vec<ProcessEvent>, u64) {
    let mut arriving: Vec<(usize, &ProcessEvent)> = Vec::new();
    let mut lost = 0;
    for (i, (ev, fate)) in events.iter().zip(&case.fates).enumerate() {
        if fate.copies == 0 {
            lost += 1;
        }
        for delay in fate.delays.iter().take(fate.copies) {
            arriving.push((i + delay % (case.spread + 1), ev));
        }
    }
    // Stable: copies due at the same point keep their true order.
    arriving.sort_by_key(|&(at, _)| at);
    (
        arriving.into_iter().map(|(_, ev)| ev.clone()).collect(),
        lost,
    )
}

fn sorted(t: &Tracker) -> Vec<ProcEntry> {
    let mut v: Vec<ProcEntry> = t.iter().cloned().collect();
    v.sort_by_key(|e| e.key);
    v
}

/// Seeds a tracker from the simulated start, runs the case, delivers its
/// events and resyncs: the table and the world to compare.
fn run(case: &Case) -> (Tracker, World, Vec<ProcInfo>) {
    let mut world = World::new();
    let mut t = Tracker::new(10_000);
    t.seed(&world.proc_scan());
    let host = Watch {
        root: None,
        host: true,
    };
    assert!(t.mark_watched(HOST, host));
    world.run(&case.ops);
    let (arriving, lost) = deliver(&world.events, case);
    for ev in &arriving {
        t.apply(ev);
    }
    if lost > 0 {
        t.mark_lost(lost);
        assert!(t.degraded());
    }
    let mut scan = world.proc_scan();
    if case.scan_reversed {
        scan.reverse();
    }
    t.resync(&scan);
    (t, world, scan)
}

/// The table agrees with the scan, by (tgid, start time).
fn assert_matches_proc(t: &Tracker, scan: &[ProcInfo]) {
    assert!(!t.degraded(), "a resync that fits clears `degraded`");
    let alive: BTreeSet<ProcKey> = scan
        .iter()
        .filter(|p| !p.is_zombie())
        .map(|p| p.key)
        .collect();
    let live: BTreeSet<ProcKey> = t.iter().filter(|e| e.is_live()).map(|e| e.key).collect();
    assert_eq!(live, alive, "live entries against /proc");
    for p in scan {
        let entry = t.get(p.key);
        if p.is_zombie() {
            assert!(entry.is_some_and(|e| !e.is_live()), "zombie {}", p.key);
        } else {
            let holder = t.live_by_tgid(p.key.tgid).map(|e| e.key);
            assert_eq!(holder, Some(p.key), "holder of PID {}", p.key.tgid);
        }
    }
    super::tests::check(t);
}

/// Lineage and tree membership are true of the simulated system.
fn assert_lineage_true(t: &Tracker, world: &World) {
    for e in t.iter() {
        if let Some(p) = e.parent {
            assert!(
                p.start_ticks <= e.key.start_ticks,
                "{p} parent of {}",
                e.key
            );
            assert!(world.had(p), "{p}, parent of {}, never existed", e.key);
            assert!(world.descends(e.key, p), "{p} is no ancestor of {}", e.key);
        }
        if let Some(root) = e.tree_root.filter(|_| e.is_live()) {
            assert!(world.descends(e.key, root), "{} is not of {root}", e.key);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn resync_converges_to_proc_whatever_became_of_the_events(case in case()) {
        let (mut t, world, scan) = run(&case);
        assert_matches_proc(&t, &scan);
        assert_lineage_true(&t, &world);
        let once = sorted(&t);
        t.resync(&scan);
        assert_eq!(sorted(&t), once, "a second resync changes nothing");
    }
}
