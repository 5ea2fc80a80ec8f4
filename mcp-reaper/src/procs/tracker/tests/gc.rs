//! Collection: exited entries stay while lineage runs through them, and
//! only processes whose exit is not reported are polled.

use super::*;

#[test]
fn middle_of_three_levels_exits_and_lineage_still_runs_through_it() {
    let mut t = with_host();
    let (mid, leaf) = (k(101, 11), k(102, 12));
    t.apply(&fork(ROOT, mid, member_of(ROOT)));
    t.apply(&fork(mid, leaf, member_of(ROOT)));
    t.apply(&exit(mid, 0));
    // The leaf, reparented to init, execs: its current parent is 1.
    t.apply(&exec(leaf, k(1, 1), "node", member_of(ROOT)));

    let e = t.get(leaf).unwrap();
    assert_eq!(e.parent, Some(mid), "lineage parent survives reparenting");
    assert_eq!(e.comm, "node");
    assert_eq!(t.descendants(ROOT), [mid, leaf]);
    assert_eq!(t.children(mid), [leaf]);
    assert_eq!(t.tree_members(ROOT), [ROOT, leaf]);
    assert!(t.children(k(1, 1)).iter().all(|c| *c != leaf));

    // gc keeps the exited middle: the leaf's lineage runs through it.
    assert_eq!(t.gc(|_| true), 0);
    assert!(t.get(mid).is_some());
    check(&t);
}

#[test]
fn setsid_double_fork_escapee_is_still_a_descendant() {
    let mut t = with_host();
    let (a, b, c) = (k(101, 11), k(102, 12), k(103, 13));
    // root -> a -> b (setsid, a exits: b is reparented) -> c
    t.apply(&fork(ROOT, a, member_of(ROOT)));
    t.apply(&fork(a, b, member_of(ROOT)));
    t.apply(&exit(a, 0));
    t.apply(&exit(ROOT, 0));
    t.apply(&fork(b, c, member_of(ROOT)));
    t.apply(&exec(c, b, "node", member_of(ROOT)));

    assert_eq!(t.descendants(ROOT), [a, b, c]);
    assert_eq!(t.tree_members(ROOT), [b, c]);
    assert_eq!(t.gc(|_| true), 0);
    assert!(t.get(ROOT).is_some() && t.get(a).is_some());
    assert_eq!(t.descendants(ROOT), [a, b, c]);
    check(&t);
}

#[test]
fn gc_keeps_exited_ancestors_while_a_descendant_lives_then_removes_them() {
    let mut t = with_host();
    let (a, b) = (k(101, 11), k(102, 12));
    t.apply(&fork(ROOT, a, member_of(ROOT)));
    t.apply(&fork(a, b, member_of(ROOT)));
    t.apply(&exit(ROOT, 0));
    t.apply(&exit(a, 0));
    let before = t.len();
    let init = k(1, 1);
    let polled = |key| {
        assert_eq!(key, init, "watched processes are not polled");
        true
    };
    assert_eq!(t.gc(polled), 0);
    assert_eq!(t.len(), before);
    assert_eq!(t.stats().exited_kept, 2);

    t.apply(&exit(b, 0));
    assert_eq!(t.gc(|_| true), 3);
    assert!(t.get(ROOT).is_none() && t.get(a).is_none() && t.get(b).is_none());
    assert!(t.descendants(ROOT).is_empty());
    assert!(t.tree_members(ROOT).is_empty());
    assert!(t.trees.is_empty());
    assert_eq!(t.stats().exited_kept, 0);
    check(&t);
}

#[test]
fn gc_polls_only_processes_whose_exit_is_not_reported() {
    let mut t = with_host();
    let plain = k(400, 40);
    t.apply(&exec(plain, k(1, 1), "bash", Watch::default()));
    assert!(!t.get(plain).unwrap().exit_reported);
    assert!(t.get(ROOT).unwrap().exit_reported);
    assert!(t.get(k(50, 5)).unwrap().exit_reported, "hosts are watched");
    assert!(!t.get(k(1, 1)).unwrap().exit_reported);

    let asked = std::cell::RefCell::new(Vec::new());
    t.gc(|key| {
        asked.borrow_mut().push(key);
        key != plain
    });
    let mut asked = asked.into_inner();
    asked.sort();
    assert_eq!(asked, [k(1, 1), plain]);
    assert_eq!(t.get(plain), None, "dead, no descendants: collected");
    assert!(t.live_by_tgid(1).is_some());
    check(&t);
}

#[test]
fn poll_source_reports_every_exit() {
    let mut t = Tracker::new(100).with_exit_reporting(ExitReporting::All);
    t.seed(&[info(k(1, 1), 0, "init")]);
    t.apply(&exec(k(9, 9), k(1, 0), "sh", Watch::default()));
    assert!(t.iter().all(|e| e.exit_reported));
    // The poll source knows the parent's PID only.
    assert_eq!(t.get(k(9, 9)).unwrap().parent, Some(k(1, 1)));
    t.gc(|_| panic!("nothing to poll"));
}
