//! The process table's tests, one file per part of the table, and the
//! helpers they share: event and /proc builders, and `check`, which
//! verifies that every index agrees with the entries.

use std::collections::BTreeSet;

use super::*;
use crate::{
    procs::identity::ProcKey,
    procs::procscan::ProcInfo,
    source::event::{ProcessEvent, SourceMsg, Watch},
};

/// Table sizes under process churn.
mod churn;
/// Applying events: exit codes, PID reuse, exec, degradation.
mod events;
/// Collection: what `gc` keeps, removes and polls.
mod gc;
/// Admission of tree members by lineage.
mod lineage;
/// Out-of-order, late and duplicate events; parked exits.
mod order;
/// Seeding and resyncing from /proc; a full table.
mod snapshot;

fn k(tgid: u32, start: u64) -> ProcKey {
    ProcKey::new(tgid, start)
}

fn member_of(root: ProcKey) -> Watch {
    Watch {
        root: Some(root),
        host: false,
    }
}

const HOST: Watch = Watch {
    root: None,
    host: true,
};

fn fork(parent: ProcKey, child: ProcKey, watch: Watch) -> ProcessEvent {
    ProcessEvent::Fork {
        child,
        parent,
        comm: "parent".to_owned(),
        watch,
        ktime_ns: 0,
    }
}

fn exec(key: ProcKey, parent: ProcKey, comm: &str, watch: Watch) -> ProcessEvent {
    ProcessEvent::Exec {
        key,
        parent,
        comm: comm.to_owned(),
        watch,
        ktime_ns: 0,
        image: None,
    }
}

fn exit(key: ProcKey, code: u32) -> ProcessEvent {
    ProcessEvent::Exit {
        key,
        exit_code: code,
        watch: Watch::default(),
        ktime_ns: 0,
    }
}

fn info(key: ProcKey, ppid: u32, comm: &str) -> ProcInfo {
    ProcInfo {
        key,
        ppid,
        pgid: 0,
        sid: 0,
        uid: 1000,
        state: 'S',
        comm: comm.to_owned(),
        cmdline: vec![comm.to_owned(), "--stdio".to_owned()],
        cmdline_truncated: false,
        exe: None,
        rss_bytes: 0,
        ns_pid: None,
    }
}

fn live_set(t: &Tracker) -> BTreeSet<ProcKey> {
    t.iter().filter(|e| e.is_live()).map(|e| e.key).collect()
}

fn table(t: &Tracker) -> Vec<ProcEntry> {
    let mut v: Vec<ProcEntry> = t.iter().cloned().collect();
    v.sort_by_key(|e| e.key);
    v
}

/// The indexes agree with the entries (also the property test's check).
pub(super) fn check(t: &Tracker) {
    for e in t.entries.values() {
        if e.is_live() {
            assert_eq!(
                t.by_tgid.get(&e.key.tgid),
                Some(&e.key),
                "{e:?} not indexed"
            );
        }
        if let Some(p) = e.parent {
            assert!(
                t.children[&p].contains(&e.key),
                "{e:?} missing from children"
            );
        }
        if let Some(r) = e.tree_root {
            assert!(t.trees[&r].contains(&e.key), "{e:?} missing from tree");
        }
    }
    for key in t.by_tgid.values() {
        assert!(t.entries[key].is_live());
    }
    for (p, kids) in &t.children {
        assert!(!kids.is_empty());
        for c in kids {
            assert_eq!(t.entries[c].parent, Some(*p));
        }
    }
    for (r, members) in &t.trees {
        assert!(!members.is_empty());
        for m in members {
            assert_eq!(t.entries[m].tree_root, Some(*r));
        }
    }
    assert_eq!(t.live_count(), live_set(t).len());
}

const ROOT: ProcKey = ProcKey::new(100, 10);

/// A host (50) with a tree rooted at 100 (from the seed and a fork).
fn with_host() -> Tracker {
    let mut t = Tracker::new(1000);
    t.seed(&[info(k(1, 1), 0, "init"), info(k(50, 5), 1, "host")]);
    assert!(t.mark_watched(k(50, 5), HOST));
    t.apply(&fork(k(50, 5), ROOT, member_of(ROOT)));
    t
}
