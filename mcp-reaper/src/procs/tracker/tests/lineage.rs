//! A tree admits a process only when lineage leads from it to the root:
//! the kernel's watch entry alone (which may be one left for an earlier
//! holder of the PID) is not enough.

use super::*;

/// The test tracker's init, forker of unwatched processes.
const INIT: ProcKey = ProcKey::new(1, 1);

#[test]
fn a_reused_pid_with_the_old_members_watch_is_not_admitted() {
    let mut t = with_host();
    let old = k(101, 11);
    t.apply(&fork(ROOT, old, member_of(ROOT)));
    t.apply(&exit(old, 0));
    // The PID comes back for a process an unwatched parent forked; the
    // kernel (before it checked whose entry it was) reported the old
    // member's watch with its exec, and its fork inherited it.
    let reused = k(101, 90);
    t.apply(&exec(reused, INIT, "sleep", member_of(ROOT)));
    let grandchild = k(102, 91);
    t.apply(&fork(reused, grandchild, member_of(ROOT)));

    for p in [reused, grandchild] {
        let e = t.get(p).unwrap();
        assert_eq!(e.tree_root, None, "{p}");
        assert_eq!(e.unproven_root, Some(ROOT), "{p}");
    }
    assert_eq!(t.tree_members(ROOT), [ROOT]);
    assert!(!t.descendants(ROOT).contains(&reused));
    assert_eq!(t.stats().lineage_rejected, 2);
    // The same claims again are not counted again.
    t.apply(&exec(reused, INIT, "sleep", member_of(ROOT)));
    assert_eq!(t.stats().lineage_rejected, 2);
    check(&t);
}

#[test]
fn claims_are_admitted_exactly_when_lineage_reaches_the_root() {
    let other = k(300, 30); // a second tree of the host
    // (events after `with_host`, the process asked about, its tree)
    let cases: Vec<(&str, Vec<ProcessEvent>, ProcKey, Option<ProcKey>)> = vec![
        (
            "forked by the root",
            vec![fork(ROOT, k(101, 11), member_of(ROOT))],
            k(101, 11),
            Some(ROOT),
        ),
        (
            "forked by a member",
            vec![
                fork(ROOT, k(101, 11), member_of(ROOT)),
                fork(k(101, 11), k(102, 12), member_of(ROOT)),
            ],
            k(102, 12),
            Some(ROOT),
        ),
        (
            "exec with the root as parent, fork not seen",
            vec![exec(k(101, 11), ROOT, "node", member_of(ROOT))],
            k(101, 11),
            Some(ROOT),
        ),
        (
            "exec under an unrelated parent",
            vec![exec(k(101, 11), INIT, "node", member_of(ROOT))],
            k(101, 11),
            None,
        ),
        (
            "a host's child roots its own tree",
            vec![fork(k(50, 5), other, member_of(other))],
            other,
            Some(other),
        ),
        (
            "a claim on another tree falls back to the parent's",
            vec![
                fork(k(50, 5), other, member_of(other)),
                fork(other, k(301, 31), member_of(ROOT)),
            ],
            k(301, 31),
            Some(other),
        ),
        (
            "a parent that started after the child links nothing",
            vec![fork(k(101, 50), k(102, 12), member_of(ROOT))],
            k(102, 12),
            None,
        ),
    ];
    for (what, events, key, want) in cases {
        let mut t = with_host();
        for ev in &events {
            t.apply(ev);
        }
        let e = t
            .get(key)
            .unwrap_or_else(|| panic!("{what}: {key} missing"));
        assert_eq!(e.tree_root, want, "{what}");
        let rejected = u64::from(want != e.unproven_root && e.unproven_root.is_some());
        assert_eq!(t.stats().lineage_rejected, rejected, "{what}");
        if let Some(root) = want {
            assert!(t.tree_members(root).contains(&key), "{what}");
        }
        check(&t);
    }
}

#[test]
fn a_claim_waiting_for_lineage_is_admitted_when_the_parent_arrives() {
    let mut t = with_host();
    let (a, b) = (k(101, 11), k(102, 12));
    // The grandchild's fork arrives before its parent's.
    t.apply(&fork(a, b, member_of(ROOT)));
    assert_eq!(t.get(b).unwrap().tree_root, None);
    assert_eq!(t.get(b).unwrap().unproven_root, Some(ROOT));
    assert_eq!(t.stats().lineage_rejected, 1);
    t.apply(&fork(ROOT, a, member_of(ROOT)));
    let e = t.get(b).unwrap();
    assert_eq!((e.tree_root, e.unproven_root), (Some(ROOT), None));
    assert_eq!(t.tree_members(ROOT), [ROOT, a, b]);
    check(&t);
}

#[test]
fn descends_from_follows_parents_and_stops_on_cycles() {
    let mut t = with_host();
    let (a, b) = (k(101, 11), k(102, 12));
    t.apply(&fork(ROOT, a, member_of(ROOT)));
    t.apply(&fork(a, b, member_of(ROOT)));
    assert!(t.descends_from(b, ROOT));
    assert!(t.descends_from(b, b));
    assert!(t.descends_from(b, k(50, 5)), "through the root to the host");
    assert!(!t.descends_from(ROOT, b));
    assert!(!t.descends_from(k(999, 1), ROOT), "not in the table");
    // Two processes of the same tick naming each other.
    let (x, y) = (k(10, 7), k(11, 7));
    t.apply(&fork(x, y, Watch::default()));
    t.apply(&fork(y, x, Watch::default()));
    assert!(!t.descends_from(x, ROOT));
}

#[test]
fn gaps_degrade_until_resync_and_are_counted() {
    let mut t = with_host();
    t.apply_msg(&SourceMsg::Gap(
        crate::source::event::GapCause::WatchFull,
        2,
    ));
    t.mark_gap(1);
    assert!(t.degraded());
    assert_eq!(t.stats().lineage_gaps, 3);
    t.resync(&[
        info(k(1, 1), 0, "init"),
        info(k(50, 5), 1, "host"),
        info(ROOT, 50, "npm exec"),
    ]);
    assert!(!t.degraded());
    assert_eq!(t.stats().lineage_gaps, 3);
}
