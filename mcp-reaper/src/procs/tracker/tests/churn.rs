//! Process churn: however many processes come and go, the table returns to
//! what is alive (and what a live process's lineage runs through).

use super::*;

/// Unrelated processes (exits unreported: `gc` finds them dead) and tree
/// members (exits reported), many times over, with PIDs reused.
fn churn(t: &mut Tracker, cycles: u32, start: u64) {
    let host = k(50, 5);
    for i in 0..cycles {
        let tick = start + u64::from(i) * 10;
        // A burst of unrelated processes forked by init, and one by another.
        for j in 0..20 {
            let p = k(1000 + j, tick + u64::from(j));
            t.apply(&exec(p, k(1, 1), "true", Watch::default()));
        }
        t.apply(&exec(
            k(1100, tick),
            k(1000, tick),
            "sleep",
            Watch::default(),
        ));
        // A tree member of the live tree, and a new tree under the host
        // with a member of its own; all of them exit, reported.
        let member = k(2000, tick);
        t.apply(&fork(ROOT, member, member_of(ROOT)));
        let root = k(3000, tick);
        t.apply(&fork(host, root, member_of(root)));
        let grandchild = k(3001, tick + 1);
        t.apply(&fork(root, grandchild, member_of(root)));
        for p in [member, root, grandchild] {
            t.apply(&exit(p, 0));
        }
        if i % 50 == 49 {
            t.gc(|p| p.tgid < 1000);
        }
    }
}

#[test]
fn churn_leaves_only_what_is_alive() {
    let mut t = with_host();
    t.gc(|_| true);
    let at_rest = t.table_sizes();
    churn(&mut t, 520, 1_000);
    // Exits of unwatched processes are not reported: until gc polls them,
    // they are live entries.
    assert!(t.table_sizes().entries > at_rest.entries);
    t.gc(|p| p.tgid < 1000);
    check(&t);
    assert_eq!(t.table_sizes(), at_rest);
    assert_eq!(live_set(&t), [k(1, 1), k(50, 5), ROOT].into());
    // Again, after the maps have shrunk.
    churn(&mut t, 230, 100_000);
    t.gc(|p| p.tgid < 1000);
    assert_eq!(t.table_sizes(), at_rest);
}

#[test]
fn churn_under_a_live_descendant_keeps_exactly_its_lineage() {
    let mut t = with_host();
    // A member forks a child and exits: the child lives, so the exited
    // member stays (lineage runs through it); everything else goes.
    let mid = k(200, 20);
    let child = k(201, 21);
    t.apply(&fork(ROOT, mid, member_of(ROOT)));
    t.apply(&fork(mid, child, member_of(ROOT)));
    t.apply(&exit(mid, 0));
    t.gc(|_| true);
    let at_rest = t.table_sizes();
    churn(&mut t, 300, 1_000);
    t.gc(|p| p.tgid < 1000);
    check(&t);
    assert_eq!(t.table_sizes(), at_rest);
    assert!(t.get(mid).is_some_and(|e| !e.is_live()));
    assert_eq!(t.descendants(ROOT), [mid, child]);
    assert_eq!(t.tree_members(ROOT), [ROOT, child]);
}
