//! The table against /proc: seeding at start-up, resyncing after a loss,
//! and a full table that degrades until a resync fits.

use super::*;

#[test]
fn resync_after_loss_converges_to_exactly_the_proc_set() {
    let mut t = with_host();
    let (a, b, gone) = (k(101, 11), k(102, 12), k(103, 13));
    t.apply(&fork(ROOT, a, member_of(ROOT)));
    t.apply(&fork(a, b, member_of(ROOT)));
    t.apply(&fork(ROOT, gone, member_of(ROOT)));
    t.mark_lost(17);
    assert!(t.degraded());
    assert_eq!(t.stats().lost, 17);
    // Lost: exit of `gone`, exit of `a`, the fork of `c` by `b` and the
    // PID reuse of 50 (the host) by an unrelated process.
    let c = k(104, 14);
    let reused = k(50, 80);
    let mut zombie = info(k(105, 15), 1, "defunct");
    zombie.state = 'Z';
    let proc_now = [
        info(k(1, 1), 0, "init"),
        info(ROOT, 50, "npm exec"),
        info(b, 1, "node"),
        info(c, 102, "node"),
        info(reused, 1, "other"),
        zombie,
        info(k(106, 16), 1, "late"),
    ];
    t.resync(&proc_now);
    assert!(!t.degraded());

    let want: BTreeSet<ProcKey> = proc_now
        .iter()
        .filter(|p| p.state != 'Z')
        .map(|p| p.key)
        .collect();
    assert_eq!(live_set(&t), want);
    assert_eq!(t.get(gone), None, "exited, no descendants: dropped");
    assert_eq!(t.get(a).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    // Lineage and tree of entries that existed are kept.
    assert_eq!(t.get(b).unwrap().parent, Some(a));
    assert_eq!(t.get(b).unwrap().tree_root, Some(ROOT));
    assert_eq!(t.get(b).unwrap().origin, Origin::Event);
    assert_eq!(t.get(b).unwrap().cmdline, ["node", "--stdio"]);
    // New entries come from /proc, parent from ppid, in their parent's tree.
    let e = t.get(c).unwrap();
    assert_eq!(
        (e.origin, e.parent, e.tree_root),
        (Origin::Snapshot, Some(b), Some(ROOT))
    );
    assert_eq!(t.live_by_tgid(50).unwrap().key, reused);
    assert_eq!(t.get(k(50, 5)).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    assert_eq!(t.descendants(ROOT), [a, b, c]);
    assert_eq!(t.tree_members(ROOT), [ROOT, b, c]);

    // A second resync with the same scan changes nothing.
    let once = table(&t);
    t.resync(&proc_now);
    assert_eq!(table(&t), once);
    check(&t);
}

#[test]
fn resync_does_not_revive_a_reported_exit() {
    let mut t = with_host();
    t.apply(&exit(ROOT, 3));
    t.resync(&[
        info(k(1, 1), 0, "init"),
        info(k(50, 5), 1, "host"),
        info(ROOT, 50, "npm exec"),
    ]);
    assert_eq!(t.get(ROOT).unwrap().exited, Some(3));
    assert_eq!(t.live_by_tgid(100), None);
    check(&t);
}

#[test]
fn seed_takes_parents_from_ppid_and_zombies_as_exited() {
    let mut t = Tracker::new(100);
    let mut z = info(k(30, 30), 20, "z");
    z.state = 'Z';
    // Children listed before parents, as PID order may have it.
    t.seed(&[
        info(k(40, 40), 20, "child"),
        info(k(20, 20), 1, "parent"),
        info(k(1, 1), 0, "init"),
        z,
    ]);
    assert_eq!(t.get(k(40, 40)).unwrap().parent, Some(k(20, 20)));
    assert_eq!(t.get(k(20, 20)).unwrap().parent, Some(k(1, 1)));
    assert_eq!(t.get(k(1, 1)).unwrap().parent, None);
    assert_eq!(t.get(k(30, 30)).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    assert!(
        t.iter()
            .all(|e| e.origin == Origin::Snapshot && !e.exit_reported)
    );
    assert_eq!(t.children(k(20, 20)), [k(30, 30), k(40, 40)]);
    assert_eq!(t.live_count(), 3);
    assert_eq!(t.len(), 4);
    check(&t);
}

#[test]
fn seed_after_early_events_keeps_their_lineage() {
    let mut t = Tracker::new(100);
    t.apply(&fork(k(20, 20), k(40, 40), member_of(k(40, 40))));
    // By the time of the scan, 40 was reparented to init.
    t.seed(&[info(k(20, 20), 1, "host"), info(k(40, 40), 1, "node")]);
    let e = t.get(k(40, 40)).unwrap();
    assert_eq!(e.parent, Some(k(20, 20)));
    assert_eq!(e.origin, Origin::Event);
    assert_eq!(e.cmdline, ["node", "--stdio"]);
    check(&t);
}

#[test]
fn a_full_table_drops_new_entries_and_degrades() {
    let mut t = Tracker::new(3);
    t.seed(&[
        info(k(1, 1), 0, "init"),
        info(k(2, 2), 1, "a"),
        info(k(3, 3), 1, "b"),
    ]);
    assert!(!t.degraded());
    t.apply(&fork(k(2, 2), k(4, 4), Watch::default()));
    assert_eq!(t.get(k(4, 4)), None);
    assert_eq!(t.len(), 3);
    let s = t.stats();
    assert_eq!((s.dropped, s.live, s.degraded), (1, 3, true));
    assert!(t.degraded());

    // Once room is made, a resync fills the table and clears the state.
    t.apply(&exit(k(3, 3), 0));
    t.resync(&[
        info(k(1, 1), 0, "init"),
        info(k(2, 2), 1, "a"),
        info(k(4, 4), 2, "c"),
    ]);
    assert!(!t.degraded());
    assert_eq!(live_set(&t), BTreeSet::from([k(1, 1), k(2, 2), k(4, 4)]));

    // A resync that cannot fit the scan stays degraded.
    t.resync(&[
        info(k(1, 1), 0, "init"),
        info(k(2, 2), 1, "a"),
        info(k(4, 4), 2, "c"),
        info(k(5, 5), 2, "d"),
    ]);
    assert!(t.degraded());
    assert_eq!(t.stats().dropped, 2);
    check(&t);
}

#[test]
fn resync_drops_what_only_a_zombie_descends_from_at_once() {
    // Found by the property test in `props`: zombies were marked exited
    // after the prune, so the first resync kept their exited ancestors and
    // the next one dropped them: two resyncs with one scan disagreed.
    let mut t = Tracker::new(100);
    t.seed(&[info(k(1, 1), 0, "init"), info(k(10, 10), 1, "parent")]);
    t.apply(&fork(k(10, 10), k(11, 11), Watch::default()));
    // Lost: the exit of 10, then that of 11, reparented to init meanwhile
    // and not reaped yet.
    t.mark_lost(2);
    let mut zombie = info(k(11, 11), 1, "child");
    zombie.state = 'Z';
    let scan = [info(k(1, 1), 0, "init"), zombie];
    t.resync(&scan);
    assert_eq!(t.get(k(10, 10)), None, "no live descendant: dropped");
    assert_eq!(t.get(k(11, 11)).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    let once = table(&t);
    t.resync(&scan);
    assert_eq!(table(&t), once);
    check(&t);
}
