//! A simulated kernel for the tracker's property test: processes forked,
//! exec'd and exited in a small PID space, so PIDs are reused under later
//! start times, children reparented to init when their parent exits, and
//! zombies left in /proc. It records the events the kernel would report,
//! in their true order, and its process table is the /proc truth.

use proptest::prelude::*;

use crate::{
    procs::identity::ProcKey,
    procs::procscan::ProcInfo,
    source::event::{ProcessEvent, Watch},
};

/// PIDs 2..=MAX_PID: few enough that they are reused often.
const MAX_PID: u32 = 10;

pub(super) const INIT: ProcKey = ProcKey::new(1, 1);
pub(super) const HOST: ProcKey = ProcKey::new(2, 2);

/// One step of the simulated system. Indices pick among the processes
/// alive at that point (modulo their number).
#[derive(Clone, Debug)]
pub(super) enum Op {
    Fork {
        parent: usize,
        pid: u32,
        /// The clock ticks before the child starts (else it shares its
        /// start tick with the previous fork).
        tick: bool,
        /// The kernel reports a watch left for another process (any one
        /// the simulation ever had): a claim lineage must not admit.
        stale_claim: Option<usize>,
    },
    Exec {
        who: usize,
        becomes_host: bool,
    },
    Exit {
        who: usize,
        code: u16,
        zombie: bool,
    },
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<usize>(), 2..=MAX_PID, any::<bool>(), prop::option::weighted(0.2, any::<usize>()))
            .prop_map(|(parent, pid, tick, stale_claim)| Op::Fork { parent, pid, tick, stale_claim }),
        1 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(who, becomes_host)| Op::Exec { who, becomes_host }),
        2 => (any::<usize>(), any::<u16>(), prop::bool::weighted(0.3))
            .prop_map(|(who, code, zombie)| Op::Exit { who, code, zombie }),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Live,
    Zombie,
    Gone,
}

#[derive(Clone, Debug)]
struct Proc {
    key: ProcKey,
    /// The process that forked it (`None` for init).
    forker: Option<ProcKey>,
    /// The current parent's PID (0 for init).
    ppid: u32,
    host: bool,
    /// The tree the kernel's watch puts it in.
    root: Option<ProcKey>,
    state: State,
}

/// The simulated system: every process it ever had, and the events the
/// kernel reported, in order.
pub(super) struct World {
    procs: Vec<Proc>,
    clock: u64,
    pub(super) events: Vec<ProcessEvent>,
}

impl World {
    /// Init and a host, there before the daemon started.
    pub(super) fn new() -> Self {
        let proc = |key, forker, ppid, host| Proc {
            key,
            forker,
            ppid,
            host,
            root: None,
            state: State::Live,
        };
        Self {
            procs: vec![proc(INIT, None, 0, false), proc(HOST, Some(INIT), 1, true)],
            clock: 10,
            events: Vec::new(),
        }
    }

    /// Runs `ops` in order, recording the events.
    pub(super) fn run(&mut self, ops: &[Op]) {
        for op in ops {
            match *op {
                Op::Fork {
                    parent,
                    pid,
                    tick,
                    stale_claim,
                } => self.fork(parent, pid, tick, stale_claim),
                Op::Exec { who, becomes_host } => self.exec(who, becomes_host),
                Op::Exit { who, code, zombie } => self.exit(who, code, zombie),
            }
        }
    }

    /// Indices of the live processes other than init.
    fn live(&self) -> Vec<usize> {
        (1..self.procs.len())
            .filter(|&i| self.procs[i].state == State::Live)
            .collect()
    }

    /// A PID nobody holds whose last holder started before now (so the
    /// new key differs), trying `want` first.
    fn free_pid(&self, want: u32) -> Option<u32> {
        (0..MAX_PID - 1)
            .map(|i| 2 + (want - 2 + i) % (MAX_PID - 1))
            .find(|&pid| {
                self.procs
                    .iter()
                    .filter(|p| p.key.tgid == pid)
                    .all(|p| p.state == State::Gone && p.key.start_ticks < self.clock)
            })
    }

    fn fork(&mut self, parent: usize, pid: u32, tick: bool, stale_claim: Option<usize>) {
        let mut candidates = self.live();
        candidates.push(0); // init forks too
        let parent = self.procs[candidates[parent % candidates.len()]].clone();
        self.clock += u64::from(tick);
        let Some(pid) = self.free_pid(pid) else {
            return;
        };
        let key = ProcKey::new(pid, self.clock);
        // The kernel's rule: a host's child roots a tree, a member's child
        // joins its parent's.
        let root = if parent.host { Some(key) } else { parent.root };
        self.procs.push(Proc {
            key,
            forker: Some(parent.key),
            ppid: parent.key.tgid,
            host: false,
            root,
            state: State::Live,
        });
        let claim = match stale_claim {
            Some(i) => Some(self.procs[i % self.procs.len()].key),
            None => root,
        };
        self.events.push(ProcessEvent::Fork {
            child: key,
            parent: parent.key,
            comm: "fork".to_owned(),
            watch: Watch {
                root: claim,
                host: false,
            },
            ktime_ns: 0,
        });
    }

    fn exec(&mut self, who: usize, becomes_host: bool) {
        let live = self.live();
        let Some(&i) = live.get(who % live.len().max(1)) else {
            return;
        };
        self.procs[i].host |= becomes_host;
        let p = self.procs[i].clone();
        // Exec names the current parent: init, once the forker is gone.
        let parent = self.holder(p.ppid).unwrap_or(INIT);
        self.events.push(ProcessEvent::Exec {
            key: p.key,
            parent,
            comm: if p.host { "host" } else { "node" }.to_owned(),
            watch: Watch {
                root: p.root,
                host: p.host,
            },
            ktime_ns: 0,
            image: None,
        });
    }

    fn exit(&mut self, who: usize, code: u16, zombie: bool) {
        let live = self.live();
        let Some(&i) = live.get(who % live.len().max(1)) else {
            return;
        };
        let key = self.procs[i].key;
        self.procs[i].state = if zombie { State::Zombie } else { State::Gone };
        // Init adopts the children and reaps the zombies among them.
        for p in &mut self.procs {
            if p.ppid == key.tgid && p.state != State::Gone && p.key != key {
                p.ppid = 1;
                if p.state == State::Zombie {
                    p.state = State::Gone;
                }
            }
        }
        self.events.push(ProcessEvent::Exit {
            key,
            exit_code: u32::from(code),
            watch: Watch::default(),
            ktime_ns: 0,
        });
    }

    /// The process holding `pid` now (live or zombie).
    fn holder(&self, pid: u32) -> Option<ProcKey> {
        self.procs
            .iter()
            .find(|p| p.key.tgid == pid && p.state != State::Gone)
            .map(|p| p.key)
    }

    /// What a scan of /proc shows now.
    pub(super) fn proc_scan(&self) -> Vec<ProcInfo> {
        self.procs
            .iter()
            .filter(|p| p.state != State::Gone)
            .map(|p| ProcInfo {
                key: p.key,
                ppid: p.ppid,
                pgid: 0,
                sid: 0,
                uid: 1000,
                state: if p.state == State::Zombie { 'Z' } else { 'S' },
                comm: if p.host { "host" } else { "node" }.to_owned(),
                cmdline: Vec::new(),
                cmdline_truncated: false,
                exe: None,
                rss_bytes: 0,
                ns_pid: None,
            })
            .collect()
    }

    /// Whether `ancestor` is `key` or forked it, directly or not.
    pub(super) fn descends(&self, key: ProcKey, ancestor: ProcKey) -> bool {
        let mut cur = Some(key);
        while let Some(k) = cur {
            if k == ancestor {
                return true;
            }
            cur = self
                .procs
                .iter()
                .find(|p| p.key == k)
                .and_then(|p| p.forker);
        }
        false
    }

    /// Whether the simulation ever had process `key`.
    pub(super) fn had(&self, key: ProcKey) -> bool {
        self.procs.iter().any(|p| p.key == key)
    }
}
