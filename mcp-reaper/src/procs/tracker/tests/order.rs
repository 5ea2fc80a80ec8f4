//! Events out of order, late or twice: exits parked until their process
//! appears, parents linked when they show up, and every order of a tree's
//! events giving the same table.

use super::*;

#[test]
fn exit_before_fork_is_parked_then_applied() {
    let mut t = with_host();
    let child = k(101, 11);
    t.apply(&exit(child, 256));
    assert_eq!(t.get(child), None);
    assert_eq!(t.stats().parked, 1);

    t.apply(&fork(ROOT, child, member_of(ROOT)));
    let e = t.get(child).unwrap();
    assert_eq!(e.exited, Some(256));
    assert_eq!(e.parent, Some(ROOT));
    assert_eq!(t.live_by_tgid(101), None);
    assert_eq!(t.stats().parked, 0);
    assert_eq!(t.tree_members(ROOT), [ROOT]);
    check(&t);
}

#[test]
fn exit_before_exec_is_parked_then_applied() {
    let mut t = with_host();
    t.apply(&exit(k(300, 30), 9));
    t.apply(&exec(k(300, 30), k(1, 1), "sh", Watch::default()));
    assert_eq!(t.get(k(300, 30)).unwrap().exited, Some(9));
    assert_eq!(t.live_by_tgid(300), None);
    check(&t);
}

#[test]
fn parked_exits_expire_and_are_bounded() {
    let mut t = Tracker::new(3);
    t.apply(&exit(k(7, 1), 0));
    t.gc(|_| true);
    assert_eq!(t.stats().parked, 1);
    t.gc(|_| true);
    assert_eq!(t.stats().parked, 0, "expires after two gc rounds");
    assert!(!t.degraded());

    for i in 0..5 {
        t.apply(&exit(k(10 + i, 1), 0));
    }
    let s = t.stats();
    assert_eq!((s.parked, s.parked_evicted), (3, 2));
    assert!(t.degraded(), "an evicted exit may be needed later");
    // The newest were kept.
    t.apply(&exec(k(14, 1), k(1, 1), "x", Watch::default()));
    assert_eq!(t.get(k(14, 1)).unwrap().exited, Some(0));
}

#[test]
fn duplicate_events_are_idempotent() {
    let mut t = with_host();
    let a = k(101, 11);
    let b = k(102, 12);
    let events = [
        fork(ROOT, a, member_of(ROOT)),
        exec(a, ROOT, "sh", member_of(ROOT)),
        fork(a, b, member_of(ROOT)),
        exit(b, 0),
    ];
    for ev in &events {
        t.apply(ev);
    }
    let once = table(&t);
    let stats = t.stats();
    for ev in events.iter().chain(&events) {
        t.apply(ev);
    }
    assert_eq!(table(&t), once);
    assert_eq!(t.stats(), stats);
    assert_eq!(t.children(ROOT), [a]);
    check(&t);
}

#[test]
fn fork_with_unknown_parent_records_the_child_and_links_later() {
    let mut t = Tracker::new(100);
    let (p, c) = (k(20, 2), k(21, 3));
    t.apply(&fork(p, c, member_of(p)));
    let e = t.get(c).unwrap();
    assert_eq!(e.parent, Some(p));
    assert_eq!(e.tree_root, Some(p));
    assert_eq!(e.origin, Origin::Event);
    assert_eq!(t.descendants(p), [c]);

    // The parent's own events arrive late.
    t.apply(&fork(k(1, 1), p, member_of(p)));
    assert_eq!(t.get(p).unwrap().parent, Some(k(1, 1)));
    assert_eq!(t.descendants(k(1, 1)), [p, c]);
    assert_eq!(t.tree_members(p), [p, c]);
    check(&t);
}

#[test]
fn every_order_of_a_trees_events_gives_the_same_table() {
    let (a, b, c) = (k(101, 11), k(102, 12), k(103, 13));
    let w = member_of(ROOT);
    let events = vec![
        fork(ROOT, a, w),
        exec(a, ROOT, "sh", w),
        fork(a, b, w),
        exit(a, 0),
        fork(b, c, w),
        exit(c, 2),
    ];
    let mut expected = None;
    let mut perm = events.clone();
    // Heap's algorithm over all 720 orders.
    let n = perm.len();
    let mut stack = vec![0usize; n];
    let mut run = |order: &[ProcessEvent]| {
        let mut t = with_host();
        for ev in order {
            t.apply(ev);
        }
        check(&t);
        assert_eq!(t.get(a).unwrap().parent, Some(ROOT));
        assert_eq!(t.get(b).unwrap().parent, Some(a));
        assert_eq!(t.get(c).unwrap().parent, Some(b));
        assert_eq!(t.get(a).unwrap().comm, "sh");
        assert_eq!(t.tree_members(ROOT), [ROOT, b]);
        assert_eq!(t.stats().parked, 0);
        let got = table(&t);
        match &expected {
            None => expected = Some(got),
            Some(e) => assert_eq!(&got, e, "order: {order:?}"),
        }
    };
    run(&perm);
    let mut i = 0;
    while i < n {
        if stack[i] < i {
            if i % 2 == 0 {
                perm.swap(0, i);
            } else {
                perm.swap(stack[i], i);
            }
            run(&perm);
            stack[i] += 1;
            i = 0;
        } else {
            stack[i] = 0;
            i += 1;
        }
    }
}
