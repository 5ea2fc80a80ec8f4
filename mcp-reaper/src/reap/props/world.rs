//! A simulated process table for the reap plan's property: processes
//! forked (often within one clock tick) and exited in a small PID space,
//! so PIDs come back under later start times; children of an exited
//! process reparented to init; hosts and relays among them; the daemon
//! running the reap somewhere in the tree; and the stdio ends each process
//! holds (inherited from its parent, or a pipe of its own). Written out as
//! a fake /proc, it is the truth the reap reads.

use std::{collections::HashSet, fs, path::Path};

use proptest::prelude::*;

use crate::procs::identity::ProcKey;

/// PIDs 2..=MAX_PID: few enough that they are reused often.
pub(super) const MAX_PID: u32 = 16;

/// One step of the simulated system. Indices pick among the processes
/// alive at that point (modulo their number).
#[derive(Clone, Debug)]
pub(super) enum Op {
    Fork {
        parent: usize,
        pid: u32,
        /// The clock ticks before the child starts (else it shares its
        /// parent's tick, as a fork right after an exec does).
        tick: bool,
        /// The child keeps its parent's stdio (else it gets a pipe of its
        /// own, as a spawned server does).
        inherit: bool,
        host: bool,
        relay: bool,
    },
    Exit {
        who: usize,
    },
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            any::<usize>(),
            2..=MAX_PID,
            prop::bool::weighted(0.4),
            any::<bool>(),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(parent, pid, tick, inherit, host, relay)| Op::Fork {
                parent,
                pid,
                tick,
                inherit,
                host,
                relay,
            }),
        1 => any::<usize>().prop_map(|who| Op::Exit { who }),
    ]
}

#[derive(Clone, Debug)]
pub(super) struct Proc {
    pub(super) key: ProcKey,
    /// The current parent's PID (0 for init).
    pub(super) ppid: u32,
    pub(super) alive: bool,
    pub(super) host: bool,
    pub(super) relay: bool,
    /// Inodes behind fds 0 and 1.
    pub(super) stdio: [u64; 2],
}

/// Every process the simulated system ever had (index 0: init).
pub(super) struct World {
    pub(super) procs: Vec<Proc>,
    clock: u64,
    next_inode: u64,
}

impl World {
    pub(super) fn new() -> Self {
        let init = Proc {
            key: ProcKey::new(1, 1),
            ppid: 0,
            alive: true,
            host: false,
            relay: false,
            stdio: [1, 1],
        };
        Self {
            procs: vec![init],
            clock: 10,
            next_inode: 100,
        }
    }

    pub(super) fn run(&mut self, ops: &[Op]) {
        for op in ops {
            match *op {
                Op::Fork {
                    parent,
                    pid,
                    tick,
                    inherit,
                    host,
                    relay,
                } => self.fork(parent, pid, tick, inherit, host, relay),
                Op::Exit { who } => self.exit(who),
            }
        }
    }

    /// Indices of the live processes (init included).
    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.procs.len())
            .filter(|&i| self.procs[i].alive)
            .collect()
    }

    fn free_pid(&self, want: u32) -> Option<u32> {
        (0..MAX_PID - 1)
            .map(|i| 2 + (want - 2 + i) % (MAX_PID - 1))
            .find(|&pid| {
                self.procs
                    .iter()
                    .filter(|p| p.key.tgid == pid)
                    .all(|p| !p.alive && p.key.start_ticks < self.clock)
            })
    }

    fn fork(
        &mut self,
        parent: usize,
        pid: u32,
        tick: bool,
        inherit: bool,
        host: bool,
        relay: bool,
    ) {
        let live = self.live();
        let parent = self.procs[live[parent % live.len()]].clone();
        self.clock += u64::from(tick);
        let Some(pid) = self.free_pid(pid) else {
            return;
        };
        let stdio = if inherit {
            parent.stdio
        } else {
            self.next_inode += 2;
            [self.next_inode, self.next_inode + 1]
        };
        self.procs.push(Proc {
            key: ProcKey::new(pid, self.clock),
            ppid: parent.key.tgid,
            alive: true,
            host,
            relay,
            stdio,
        });
    }

    fn exit(&mut self, who: usize) {
        let live: Vec<usize> = self.live().into_iter().filter(|&i| i != 0).collect();
        if live.is_empty() {
            return;
        }
        let i = live[who % live.len()];
        self.procs[i].alive = false;
        let pid = self.procs[i].key.tgid;
        for p in self.procs.iter_mut().filter(|p| p.alive && p.ppid == pid) {
            p.ppid = 1;
        }
        // A PID is free only once the clock moved on.
        self.clock += 1;
    }

    fn live_by_pid(&self, pid: u32) -> Option<&Proc> {
        self.procs.iter().find(|p| p.alive && p.key.tgid == pid)
    }

    /// The PIDs of the live ancestors of live `key`, init excluded.
    pub(super) fn ancestors(&self, key: ProcKey) -> HashSet<u32> {
        let mut out = HashSet::new();
        let Some(mut cur) = self.live_by_pid(key.tgid).filter(|p| p.key == key) else {
            return out;
        };
        while let Some(parent) = self.live_by_pid(cur.ppid).filter(|p| p.key.tgid > 1) {
            if !out.insert(parent.key.tgid) {
                break;
            }
            cur = parent;
        }
        out
    }

    /// Live descendants of live `key`, by the current parent links.
    pub(super) fn descendants(&self, key: ProcKey) -> Vec<ProcKey> {
        let mut out = Vec::new();
        let mut queue = vec![key];
        while let Some(k) = queue.pop() {
            for p in self.procs.iter().filter(|p| p.alive && p.ppid == k.tgid) {
                if !out.contains(&p.key) {
                    out.push(p.key);
                    queue.push(p.key);
                }
            }
        }
        out
    }

    /// Renames PID `from` to `to` everywhere (the daemon's PID must be the
    /// test's own: the reap reads its own ancestors by it).
    pub(super) fn rename_pid(&mut self, from: u32, to: u32) {
        for p in &mut self.procs {
            if p.key.tgid == from {
                p.key = ProcKey::new(to, p.key.start_ticks);
            }
            if p.ppid == from {
                p.ppid = to;
            }
        }
    }

    /// Writes the live processes as a /proc under `dir`.
    pub(super) fn write_proc(&self, dir: &Path) {
        for p in self.procs.iter().filter(|p| p.alive) {
            let pid = p.key.tgid;
            let d = dir.join(pid.to_string());
            fs::create_dir(&d).unwrap();
            fs::create_dir(d.join("fd")).unwrap();
            fs::create_dir(d.join("fdinfo")).unwrap();
            let comm = if p.host { "host" } else { "node" };
            let stat = format!(
                "{pid} ({comm}) S {} {pid} {pid} 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 {} \
                 3133440 385 18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 \
                 7 8 8 9 0\n",
                p.ppid, p.key.start_ticks
            );
            fs::write(d.join("stat"), stat).unwrap();
            let status = format!(
                "Name:\t{comm}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{}\n\
                 Uid:\t1000\t1000\t1000\t1000\nVmRSS:\t    2048 kB\nThreads:\t1\n",
                p.ppid
            );
            fs::write(d.join("status"), status).unwrap();
            fs::write(d.join("cmdline"), format!("{comm}\0")).unwrap();
            for (fd, inode) in p.stdio.iter().enumerate() {
                let link = format!("pipe:[{inode}]");
                std::os::unix::fs::symlink(link, d.join("fd").join(fd.to_string())).unwrap();
                let flags = if fd == 0 { "00" } else { "01" };
                fs::write(
                    d.join("fdinfo").join(fd.to_string()),
                    format!("pos:\t0\nflags:\t{flags}\n"),
                )
                .unwrap();
            }
        }
    }
}
