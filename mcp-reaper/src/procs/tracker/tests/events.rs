//! Applying events: exit codes, PID reuse settled by start time, new
//! images, hosts whose children start trees, and losses that degrade.

use super::*;

#[test]
fn first_exit_code_stands_but_replaces_an_unknown_one() {
    let mut t = with_host();
    t.apply(&exit(ROOT, 15));
    t.apply(&exit(ROOT, 0));
    assert_eq!(t.get(ROOT).unwrap().exited, Some(15));

    let mut t = with_host();
    let child = k(101, 11);
    t.apply(&fork(ROOT, child, member_of(ROOT)));
    t.resync(&[
        info(k(1, 1), 0, "init"),
        info(k(50, 5), 1, "host"),
        info(child, 1, "node"),
    ]);
    assert_eq!(t.get(ROOT).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    t.apply(&exit(ROOT, 9));
    assert_eq!(t.get(ROOT).unwrap().exited, Some(9));
}

#[test]
fn pid_reuse_retires_the_old_process() {
    let mut t = with_host();
    let old = k(101, 11);
    let new = k(101, 90);
    t.apply(&fork(ROOT, old, member_of(ROOT)));
    // The old exit was lost; the PID comes back for someone else.
    t.apply(&exec(new, k(1, 1), "cron", Watch::default()));
    assert_eq!(t.get(old).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    assert_eq!(t.live_by_tgid(101).unwrap().key, new);
    assert_eq!(t.tree_members(ROOT), [ROOT]);

    // A late event about an even earlier holder of the PID.
    let ancient = k(101, 3);
    t.apply(&exec(ancient, k(1, 1), "old", Watch::default()));
    assert_eq!(t.get(ancient).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    assert_eq!(t.live_by_tgid(101).unwrap().key, new);

    // The new holder's exit does not touch the old entries' codes.
    t.apply(&exit(new, 0));
    assert_eq!(t.live_by_tgid(101), None);
    assert_eq!(t.get(new).unwrap().exited, Some(0));
    check(&t);
}

#[test]
fn exit_of_a_new_holder_retires_the_previous_one() {
    let mut t = with_host();
    let old = k(101, 11);
    t.apply(&exec(old, k(1, 1), "sh", Watch::default()));
    t.apply(&exit(k(101, 70), 0));
    assert_eq!(t.get(old).unwrap().exited, Some(EXIT_CODE_UNKNOWN));
    assert_eq!(t.live_by_tgid(101), None);
    check(&t);
}

#[test]
fn host_children_start_their_own_trees() {
    let mut t = with_host();
    // The kernel lost the watch entry: the rule applies in userspace.
    let other = k(200, 20);
    t.apply(&fork(k(50, 5), other, Watch::default()));
    assert_eq!(t.get(other).unwrap().tree_root, Some(other));
    let grandchild = k(201, 21);
    t.apply(&fork(other, grandchild, Watch::default()));
    assert_eq!(t.get(grandchild).unwrap().tree_root, Some(other));
    assert_eq!(t.tree_members(other), [other, grandchild]);
    assert_eq!(t.tree_members(ROOT), [ROOT]);
    check(&t);
}

#[test]
fn exec_with_a_new_comm_clears_the_old_cmdline() {
    let mut t = Tracker::new(100);
    t.seed(&[info(k(1, 1), 0, "init"), info(k(9, 9), 1, "sh")]);
    t.apply(&exec(k(9, 9), k(1, 1), "sh", Watch::default()));
    assert_eq!(t.get(k(9, 9)).unwrap().cmdline, ["sh", "--stdio"]);
    t.apply(&exec(k(9, 9), k(1, 1), "node", Watch::default()));
    let e = t.get(k(9, 9)).unwrap();
    assert_eq!(e.comm, "node");
    assert!(e.cmdline.is_empty());
    assert!(t.refresh(&info(k(9, 9), 1, "node")));
    assert_eq!(t.get(k(9, 9)).unwrap().cmdline, ["node", "--stdio"]);
    assert!(!t.refresh(&info(k(9, 10), 1, "node")));
}

#[test]
fn impossible_parents_are_ignored_and_cycles_terminate() {
    let mut t = Tracker::new(100);
    // A parent that started after its child, and a self-parent.
    t.apply(&fork(k(2, 50), k(3, 10), Watch::default()));
    t.apply(&exec(k(4, 10), k(4, 10), "x", Watch::default()));
    assert_eq!(t.get(k(3, 10)).unwrap().parent, None);
    assert_eq!(t.get(k(4, 10)).unwrap().parent, None);

    // Two processes started in the same tick, each naming the other.
    let (a, b) = (k(10, 7), k(11, 7));
    t.apply(&fork(a, b, Watch::default()));
    t.apply(&fork(b, a, Watch::default()));
    assert_eq!(t.descendants(a), [b]);
    assert_eq!(t.descendants(b), [a]);
    assert_eq!(t.gc(|_| true), 0, "gc walks a cycle of live entries");
    t.apply(&exit(a, 0));
    t.apply(&exit(b, 0));
    t.gc(|_| true);
    assert!(t.get(a).is_none() && t.get(b).is_none());
    check(&t);
}

#[test]
fn lost_messages_degrade_until_resync() {
    let mut t = with_host();
    t.apply_msg(&SourceMsg::Lost(4));
    t.apply_msg(&SourceMsg::Event(exit(ROOT, 0)));
    assert!(t.degraded());
    assert_eq!(t.get(ROOT).unwrap().exited, Some(0));
    t.resync(&[info(k(1, 1), 0, "init"), info(k(50, 5), 1, "host")]);
    assert!(!t.degraded());
    assert_eq!(t.stats().lost, 4);
    let json = serde_json::to_string(&t.stats()).unwrap();
    assert!(json.contains("\"lost\":4"), "{json}");
}
