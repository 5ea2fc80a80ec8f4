//! A tree root that exits before its exec is classified (a wrapper that
//! exits on EOF, leaving children, seen by a daemon slowed down): the
//! kernel's exec record still places it, so its remnants are a known tree.
//! Processes live in a fake /proc (`churn_tests`).

use std::time::Duration;

use super::churn_tests::{HOST, World, exec_ev, exit, exit_ev, spawn};
use crate::{
    procs::identity::ProcKey,
    source::event::{ExecImage, ProcessEvent, Watch},
};

const ROOT: ProcKey = ProcKey::new(3000, 9000);
const CHILD: ProcKey = ProcKey::new(3001, 9001);

/// The exec record of a watched process, as the eBPF tier sends it.
fn exec_with_image(key: ProcKey, parent: ProcKey, argv: &[&str], root: ProcKey) -> ProcessEvent {
    ProcessEvent::Exec {
        key,
        parent,
        comm: argv[0].into(),
        watch: Watch {
            root: Some(root),
            host: false,
        },
        ktime_ns: 0,
        image: Some(ExecImage {
            uid: 0,
            cmdline: argv.iter().map(|a| (*a).to_string()).collect(),
            truncated: false,
        }),
    }
}

fn fork_ev(child: ProcKey, parent: ProcKey, root: ProcKey) -> ProcessEvent {
    ProcessEvent::Fork {
        child,
        parent,
        comm: "fork".into(),
        watch: Watch {
            root: Some(root),
            host: false,
        },
        ktime_ns: 0,
    }
}

/// The host's child `ROOT` execs `root_argv`, forks `CHILD` (which stays,
/// running `sleep`) and exits, all before the daemon classifies anything.
/// `with_image`: whether the exec record carried the command line.
fn root_gone_before_classification(root_argv: &[&str], with_image: bool) -> World {
    let mut w = World::new();
    spawn(w.root(), ROOT, HOST.tgid, root_argv);
    w.apply(&if with_image {
        exec_with_image(ROOT, HOST, root_argv, ROOT)
    } else {
        exec_ev(ROOT, HOST, root_argv[0], Some(ROOT))
    });
    spawn(w.root(), CHILD, ROOT.tgid, &["sleep", "600"]);
    w.apply(&fork_ev(CHILD, ROOT, ROOT));
    w.apply(&exec_with_image(CHILD, ROOT, &["sleep", "600"], ROOT));
    exit(w.root(), ROOT);
    w.apply(&exit_ev(ROOT, Some(ROOT)));
    w.s.classify_pending(&w.t, None);
    w
}

#[test]
fn a_server_root_gone_before_classification_is_placed_from_its_exec_record() {
    let w = root_gone_before_classification(&["fake-server", "--stdio"], true);
    let tree = w.s.tree(ROOT).expect("the tree of the gone root is known");
    assert_eq!(tree.host, Some(HOST));
    assert_eq!(tree.server, "fake");
    // What is left of it is the child, by lineage.
    assert_eq!(w.s.members(ROOT, &w.t), vec![CHILD]);
}

#[test]
fn without_the_exec_record_the_gone_root_is_not_placed() {
    // The poll tier, or a record whose command line could not be read:
    // nothing is known of the root, and nothing is made up.
    let w = root_gone_before_classification(&["fake-server", "--stdio"], false);
    assert!(w.s.tree(ROOT).is_none());
    assert!(w.s.trees().next().is_none());
}

#[test]
fn a_gone_process_that_matches_no_server_makes_no_tree_and_no_host() {
    // A gone root that ran something else (`fake-host` matches the host
    // rule): neither a tree nor a host is made of it.
    let w = root_gone_before_classification(&["fake-host", "--child"], true);
    assert!(w.s.trees().next().is_none());
    assert_eq!(w.s.table_sizes().hosts, 1, "only the real host");
    let w = root_gone_before_classification(&["/usr/bin/python3", "job.py"], true);
    assert!(w.s.trees().next().is_none());
}

#[test]
fn a_gone_launcher_above_a_server_is_still_the_trees_root() {
    // host -> sh -c (gone) -> fake-server: the tree is rooted where the
    // host spawned it, whichever of the execs is classified first.
    let mut w = World::new();
    let argv = ["sh", "-c", "fake-server --stdio & exit"];
    spawn(w.root(), ROOT, HOST.tgid, &argv);
    w.apply(&exec_with_image(ROOT, HOST, &argv, ROOT));
    spawn(w.root(), CHILD, ROOT.tgid, &["fake-server", "--stdio"]);
    w.apply(&fork_ev(CHILD, ROOT, ROOT));
    w.apply(&exec_with_image(
        CHILD,
        ROOT,
        &["fake-server", "--stdio"],
        ROOT,
    ));
    exit(w.root(), ROOT);
    w.apply(&exit_ev(ROOT, Some(ROOT)));
    w.s.classify_pending(&w.t, None);
    let tree = w.s.tree(ROOT).expect("rooted at the gone launcher");
    assert_eq!(tree.host, Some(HOST));
    assert!(
        w.s.tree(CHILD).is_none(),
        "the server is a member, not a root"
    );
}

#[test]
fn exec_records_are_dropped_one_pass_after_their_process_exits() {
    let mut w = root_gone_before_classification(&["fake-server", "--stdio"], true);
    // The root's record went with the pass that used it; the live
    // child's stays until it exits, and then one more pass.
    assert_eq!(w.s.table_sizes().images, 1);
    exit(w.root(), CHILD);
    w.apply(&exit_ev(CHILD, Some(ROOT)));
    assert_eq!(w.s.table_sizes().images, 1, "kept for this pass");
    w.s.classify_pending(&w.t, None);
    assert_eq!(w.s.table_sizes().images, 0);
}

#[test]
fn a_delayed_classification_waits_and_still_places_the_gone_root() {
    let mut w = World::new();
    w.s.classify_delay = Duration::from_millis(50);
    spawn(w.root(), ROOT, HOST.tgid, &["fake-server"]);
    w.apply(&exec_with_image(ROOT, HOST, &["fake-server"], ROOT));
    spawn(w.root(), CHILD, ROOT.tgid, &["sleep", "600"]);
    w.apply(&fork_ev(CHILD, ROOT, ROOT));
    w.s.classify_pending(&w.t, None);
    assert!(w.s.tree(ROOT).is_none(), "not classified before the delay");
    assert_eq!(w.s.table_sizes().pending, 1);
    exit(w.root(), ROOT);
    w.apply(&exit_ev(ROOT, Some(ROOT)));
    std::thread::sleep(Duration::from_millis(60));
    w.s.classify_pending(&w.t, None);
    assert!(w.s.tree(ROOT).is_some());
    assert_eq!(w.s.table_sizes().images, 0, "the gone root's record went");
}
