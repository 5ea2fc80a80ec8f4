//! Process churn: whatever the machine runs, the supervisor's tables come
//! back to its hosts, relays, servers and live trees. Processes live in a
//! fake /proc (a directory per PID, removed when the process "exits").

use std::{path::Path, sync::Arc, time::Duration};

use super::{Supervisor, TableSizes};
use crate::{
    config::Config,
    procs::identity::ProcKey,
    procs::procscan,
    procs::tracker::Tracker,
    source::event::{ProcessEvent, Watch},
};

const CONFIG: &str = r#"
presets = []
builtin_servers = false

[[host]]
name = "h"
comm = 'fake-host'

[[server]]
name = "fake"
cmdline = 'fake-server( .*)?'

[policy]
grace = "1h"
"#;

pub(super) fn config() -> Arc<Config> {
    Arc::new(Config::from_toml_str(CONFIG, "test").unwrap())
}

/// Writes `key` into the fake /proc as a child of `ppid` running `argv`.
pub(super) fn spawn(proc_root: &Path, key: ProcKey, ppid: u32, argv: &[&str]) {
    let dir = proc_root.join(key.tgid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let (pid, start, comm) = (key.tgid, key.start_ticks, argv[0]);
    std::fs::write(
        dir.join("stat"),
        format!(
            "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 {start} \
             3133440 385 18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 7 8 8 \
             9 0\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("status"),
        format!("Name:\t{comm}\nTgid:\t{pid}\nUid:\t0\t0\t0\t0\n"),
    )
    .unwrap();
    let mut cmdline = argv.join("\0");
    cmdline.push('\0');
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
}

pub(super) fn exit(proc_root: &Path, key: ProcKey) {
    std::fs::remove_dir_all(proc_root.join(key.tgid.to_string())).unwrap();
}

pub(super) fn exec_ev(
    key: ProcKey,
    parent: ProcKey,
    comm: &str,
    root: Option<ProcKey>,
) -> ProcessEvent {
    ProcessEvent::Exec {
        key,
        parent,
        comm: comm.into(),
        watch: Watch { root, host: false },
        ktime_ns: 0,
        image: None,
    }
}

pub(super) fn exit_ev(key: ProcKey, root: Option<ProcKey>) -> ProcessEvent {
    ProcessEvent::Exit {
        key,
        exit_code: 0,
        watch: Watch { root, host: false },
        ktime_ns: 0,
    }
}

pub(super) struct World {
    pub(super) dir: tempfile::TempDir,
    pub(super) s: Supervisor,
    pub(super) t: Tracker,
}

pub(super) const INIT: ProcKey = ProcKey::new(1, 1);
pub(super) const HOST: ProcKey = ProcKey::new(50, 5);

impl World {
    /// init and a live host, seeded as at start-up.
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        spawn(dir.path(), INIT, 0, &["init"]);
        spawn(dir.path(), HOST, 1, &["fake-host"]);
        let mut s = Supervisor::new(config(), dir.path().into());
        let mut t = Tracker::new(1 << 16);
        let snap = procscan::snapshot(dir.path());
        assert!(snap.error.is_none(), "{:?}", snap.error);
        t.seed(&snap.procs);
        s.seed(&snap.procs, &t, None);
        Self { dir, s, t }
    }

    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn apply(&mut self, ev: &ProcessEvent) {
        self.t.apply(ev);
        self.s.observe(ev, &self.t);
    }

    pub(super) fn gc(&mut self) {
        let root = self.dir.path().to_path_buf();
        self.t.gc(|k| procscan::is_alive(&root, k));
        self.s.gc(|k| procscan::is_alive(&root, k));
        let _ = self.s.tick(&self.t, false);
        self.s.take_detected();
        self.s.take_respawns();
        self.s.take_owner_hosts();
    }
}

/// Unrelated processes: exec'd, classified, gone without an exit event
/// (the kernel reports exits of watched processes only).
fn unrelated(w: &mut World, cycles: u32) {
    for i in 0..cycles {
        let start = 100 + u64::from(i);
        let keys: Vec<ProcKey> = (0..10).map(|j| ProcKey::new(1000 + j, start)).collect();
        for &key in &keys {
            spawn(w.root(), key, 1, &["/bin/true", "--some", "arguments"]);
            w.apply(&exec_ev(key, INIT, "true", None));
        }
        w.s.classify_pending(&w.t, None);
        // Nothing about them is kept past their classification.
        assert_eq!(w.s.infos.len(), 1, "only the host's details");
        for key in keys {
            exit(w.root(), key);
        }
    }
}

#[test]
fn unrelated_processes_leave_nothing_behind() {
    let mut w = World::new();
    w.gc();
    let at_rest = (w.s.table_sizes(), w.t.table_sizes());
    assert_eq!(at_rest.0.hosts, 1);
    unrelated(&mut w, 300);
    w.gc();
    assert_eq!((w.s.table_sizes(), w.t.table_sizes()), at_rest);
}

/// A tree under the host: a server root with a helper child; both exit
/// (reported, as watched members), and the tree is forgotten.
fn tree(w: &mut World, i: u32) -> ProcKey {
    let start = 10_000 + u64::from(i) * 2;
    let root = ProcKey::new(3000, start);
    let helper = ProcKey::new(3001, start + 1);
    spawn(w.root(), root, HOST.tgid, &["fake-server", "--stdio"]);
    w.apply(&exec_ev(root, HOST, "fake-server", None));
    w.s.classify_pending(&w.t, None);
    assert!(w.s.tree(root).is_some(), "tree {root} discovered");
    spawn(w.root(), helper, root.tgid, &["helper"]);
    w.apply(&exec_ev(helper, root, "helper", Some(root)));
    w.s.classify_pending(&w.t, None);
    // The idle clock a live check would start.
    w.s.activity.sample(root, 1, std::time::Instant::now());
    w.s.idle_for.insert(root, Duration::ZERO);
    root
}

#[test]
fn trees_that_end_leave_nothing_behind_but_live_ones_stay() {
    let mut w = World::new();
    w.gc();
    let at_rest = w.s.table_sizes();
    for i in 0..200 {
        let root = tree(&mut w, i);
        let helper = ProcKey::new(3001, root.start_ticks + 1);
        // The root exits first: the helper still lives, so the tree stays
        // through a check and a gc.
        exit(w.root(), root);
        w.apply(&exit_ev(root, Some(root)));
        w.gc();
        assert!(
            w.s.tree(root).is_some(),
            "tree {root} kept while a member lives"
        );
        exit(w.root(), helper);
        w.apply(&exit_ev(helper, Some(root)));
        let _ = w.s.tick(&w.t, false);
        assert!(w.s.tree(root).is_none(), "tree {root} forgotten");
        unrelated(&mut w, 2);
    }
    w.gc();
    // The last start of the (host, server) pair stays for the respawn
    // window; nothing else is left.
    assert_eq!(
        w.s.table_sizes(),
        TableSizes {
            starts: 1,
            ..at_rest
        }
    );
}
