//! The daemon's live map of MCP trees and the decisions about them.
//!
//! Owns: the `Supervisor` and the routing of each event to the trees it
//! concerns. Its work is split along the way a tree goes:
//! - `discover`: classifying execs and placing servers in trees;
//! - `images`: what the kernel recorded at a watched process's exec;
//! - `check`: gathering one tree's evidence and recording its verdict;
//! - `verdict`: the pure weighing of that evidence (state and reason);
//! - `schedule`: when trees are checked, and the tick's decisions;
//! - `scan_view`: the trees as `scan` shows them, from the tables alone;
//! - `watches`: the kernel's watch map and the table kept across restarts;
//! - `tables`: the bounds of every table, and the outboxes.
//!
//! Reaping itself is `reaper`'s; this module hands it a plan.
//!
//! Must never: produce a reap plan for a tree it has not re-confirmed as
//! orphaned right before, include a host or relay in a plan, plan anything
//! while the tracker is degraded, write a watch for a process known to
//! have exited, let a watch it failed to write go unreported
//! (`take_gaps`), or keep anything about a process past its
//! classification unless it is a host, relay, server or tree (`tables`).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    config::{Config, ProcView},
    procs::identity::ProcKey,
    procs::procscan::{self, ProcInfo},
    procs::tracker::Tracker,
    source::event::{CloseKind, GapCause, ProcessEvent},
};

mod check;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod churn_tests;
mod discover;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod early_exit_tests;
mod images;
/// Property: no kill of a held tree, on a guess, or in observe mode.
#[cfg(test)]
mod props;
mod record;
mod scan_view;
mod schedule;
mod tables;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
pub mod verdict;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod verdict_tests;
mod watches;

pub use record::{Action, TableSizes, TreeRecord};
pub use verdict::{ReleaseJudgement, SESSION_ENDED, judge_release};

/// A tree of the same server started again by the same host within this
/// window, after the previous one ended, counts as a respawn.
pub const RESPAWN_WINDOW: Duration = Duration::from_secs(60);

/// Whether a host's close event can have released tree `t`: a close that
/// names the tree's stdio socket (as the peer of the closed socket) or its
/// pipe. A close_range, a relay chain (the host closes its own link, not the
/// tree's) or a tree whose stdio is not known yet gets the benefit of the
/// doubt: the check is what decides, this only spares unrelated trees.
fn close_may_release(ev: &ProcessEvent, t: &TreeRecord) -> bool {
    let ProcessEvent::Close {
        inode,
        peer_inode,
        kind,
        ..
    } = ev
    else {
        return false;
    };
    if !t.chain.is_empty() || t.stdio_inodes.is_empty() {
        return true;
    }
    match kind {
        CloseKind::Range { .. } => true,
        CloseKind::UnixSocket => t.stdio_inodes.contains(peer_inode),
        CloseKind::Pipe { .. } => t.stdio_inodes.contains(inode),
    }
}

/// After a close that may have released a tree, the delays of its second
/// and third looks (the first is at once).
pub const CLOSE_FOLLOWUPS: [Duration; 2] = [Duration::from_millis(5), Duration::from_millis(100)];

/// Trees re-checked per supervision tick by the reconcile.
pub const RECONCILE_BATCH: usize = 16;

pub struct Supervisor {
    config: Arc<Config>,
    proc_root: PathBuf,
    infos: HashMap<ProcKey, ProcInfo>,
    hosts: HashMap<ProcKey, String>,
    /// Relay and anchor hops of host rules (host side, never reaped).
    relays: HashMap<ProcKey, String>,
    /// Execs to classify, with when they were queued.
    pending: Vec<(ProcKey, Instant)>,
    /// Watched processes as their exec records showed them (`images`).
    images: HashMap<ProcKey, ProcInfo>,
    /// Processes of `images` that exited, in exit order.
    images_exited: Vec<ProcKey>,
    /// Fault injection (tests, `MCP_REAPER_FAULT_CLASSIFY_DELAY_MS`): an
    /// exec waits this long before it is classified, as on a daemon
    /// starved of CPU. Zero in normal operation.
    pub classify_delay: Duration,
    trees: HashMap<ProcKey, TreeRecord>,
    recheck: HashSet<ProcKey>,
    last_reconcile: Instant,
    /// Processes seen holding a tree's far end, to watch as hosts.
    owner_hosts: Vec<ProcKey>,
    /// Idle clocks of live trees.
    activity: crate::judge::activity::ActivityBook,
    /// How long each live tree has been silent, at its last check.
    idle_for: HashMap<ProcKey, Duration>,
    /// Trees that became orphaned since the last `take_detected`.
    detected: Vec<(TreeRecord, Vec<ProcKey>)>,
    /// Recent tree starts per (host, server), to spot respawn loops.
    starts: Vec<(Option<ProcKey>, String, Instant)>,
    /// Respawns (host rule, server) since the last `take_respawns`.
    respawns: Vec<(String, String)>,
    /// How often every tree is re-checked even without an event.
    pub reconcile_interval: Duration,
    /// Trees still to re-check in the current reconcile round.
    reconcile_queue: std::collections::VecDeque<ProcKey>,
    /// Second looks after a close: (when, tree).
    followups: Vec<(Instant, ProcKey)>,
    /// The eBPF tier: forget an empty tree only after a drain mark.
    drain_marks: bool,
    /// The newest drain mark applied (boot-time ns).
    drained_ns: u64,
    /// Trees found with no member, and when first (boot-time ns).
    empty_since: HashMap<ProcKey, u64>,
    /// Watches written per tree root, to remove when the tree is forgotten.
    watched: HashMap<ProcKey, HashSet<ProcKey>>,
    /// Watches of forgotten trees, for `take_unwatch`.
    unwatch: Vec<ProcKey>,
    /// Watches that could not be written, for `take_gaps`.
    gaps: Vec<GapCause>,
}

fn view(p: &ProcInfo) -> ProcView<'_> {
    ProcView {
        comm: &p.comm,
        exe: p.exe.as_deref(),
        cmdline: &p.cmdline,
        uid: p.uid,
        cgroup: None,
    }
}

impl Supervisor {
    pub fn new(config: Arc<Config>, proc_root: PathBuf) -> Self {
        Self {
            config,
            proc_root,
            infos: HashMap::new(),
            hosts: HashMap::new(),
            relays: HashMap::new(),
            pending: Vec::new(),
            images: HashMap::new(),
            images_exited: Vec::new(),
            classify_delay: Duration::ZERO,
            trees: HashMap::new(),
            recheck: HashSet::new(),
            last_reconcile: Instant::now(),
            owner_hosts: Vec::new(),
            activity: crate::judge::activity::ActivityBook::default(),
            idle_for: HashMap::new(),
            detected: Vec::new(),
            starts: Vec::new(),
            respawns: Vec::new(),
            reconcile_interval: Duration::from_secs(1),
            reconcile_queue: std::collections::VecDeque::new(),
            followups: Vec::new(),
            drain_marks: false,
            drained_ns: 0,
            empty_since: HashMap::new(),
            watched: HashMap::new(),
            unwatch: Vec::new(),
            gaps: Vec::new(),
        }
    }

    /// Puts a reloaded configuration in force. New rules apply to what is
    /// classified from now on; every running grace or suspicion clock starts
    /// again, so a reload never reaps anything at the moment it lands (a
    /// policy that now enforces waits a full grace period first).
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
        let now = Instant::now();
        for t in self.trees.values_mut() {
            if t.orphan_since.is_some() {
                t.orphan_since = Some(now);
            }
        }
    }

    pub fn trees(&self) -> impl Iterator<Item = &TreeRecord> {
        self.trees.values()
    }

    pub fn tree(&self, root: ProcKey) -> Option<&TreeRecord> {
        self.trees.get(&root)
    }

    /// Feeds one process event (after the tracker applied it).
    pub fn observe(&mut self, ev: &ProcessEvent, tracker: &Tracker) {
        match ev {
            ProcessEvent::Exec {
                key,
                parent,
                comm,
                image,
                ..
            } => self.queue_exec(*key, *parent, comm, image.as_ref()),
            ProcessEvent::Fork { .. } => {}
            ProcessEvent::Exit { key, watch, .. } => {
                self.infos.remove(key);
                self.image_exited(*key);
                if let Some(root) = watch
                    .root
                    .or_else(|| tracker.get(*key).and_then(|e| e.tree_root))
                    .filter(|r| self.trees.contains_key(r))
                {
                    self.recheck.insert(root);
                }
                // A relay hop that exits may have been a chain's last link.
                if self.relays.contains_key(key) {
                    let chained: Vec<ProcKey> = self
                        .trees
                        .values()
                        .filter(|t| t.chain.contains(key))
                        .map(|t| t.root)
                        .collect();
                    self.recheck.extend(chained);
                }
                if self.hosts.remove(key).is_some() {
                    let owned: Vec<ProcKey> = self
                        .trees
                        .values()
                        .filter(|t| t.host == Some(*key))
                        .map(|t| t.root)
                        .collect();
                    self.recheck.extend(owned);
                }
            }
            // A host released a socket, pipe or fd range: the trees it may
            // have let go are rechecked (sock_diag/proc confirm).
            ProcessEvent::Close {
                key, via_release, ..
            } => {
                // The release hook names the tree's socket whoever dropped
                // it; a close by a host only concerns that host's trees.
                let owned: Vec<ProcKey> = self
                    .trees
                    .values()
                    .filter(|t| {
                        (*via_release
                            || t.host == Some(*key)
                            || t.owners_seen.iter().any(|o| o.key == *key))
                            && close_may_release(ev, t)
                    })
                    .map(|t| t.root)
                    .collect();
                // The close tier reports a close as the syscall starts: the
                // check that runs at once may still see the file open, and
                // a relay hop takes a moment to exit. Look again shortly.
                let now = Instant::now();
                for root in &owned {
                    for delay in CLOSE_FOLLOWUPS {
                        self.followups.push((now + delay, *root));
                    }
                }
                self.recheck.extend(owned);
            }
        }
    }

    /// Inodes of every tracked tree's stdio, for the kernel's urgent-close
    /// set (`EbpfSource::sync_stdio_inodes`).
    pub fn stdio_inodes(&self) -> HashSet<u64> {
        self.trees
            .values()
            .filter(|t| !t.reaping)
            .flat_map(|t| t.stdio_inodes.iter().copied())
            .collect()
    }

    /// Re-checks `root` at the next tick (a pidfd-tier wake: the root
    /// exited or its stdin's far end hung up). Unknown roots are ignored.
    pub fn schedule_check(&mut self, root: ProcKey) {
        if self.trees.contains_key(&root) {
            self.recheck.insert(root);
        }
    }

    /// Hosts and relays: never part of a reap plan.
    /// Every relay chain member of every tree counts too, live or not.
    pub fn never_touch(&self) -> Vec<ProcKey> {
        let mut out: Vec<ProcKey> = self.hosts.keys().copied().collect();
        out.extend(self.relays.keys().copied());
        out.extend(self.trees.values().flat_map(|t| t.chain.iter().copied()));
        out.sort();
        out.dedup();
        out
    }

    /// Where the pidfd wakes look, per tree: the root's stdin always (the
    /// watch adds it), and behind a relay chain each hop's stdin and lineage
    /// fds below the owner: the host closing its end of either is how a
    /// chained session ends, and the tree's own stdin stays with the stuck
    /// hop.
    pub fn watch_links(&self) -> Vec<(ProcKey, Vec<crate::ownership::stdin_watch::Link>)> {
        self.trees
            .values()
            .map(|t| {
                let links = t
                    .chain
                    .iter()
                    .skip(1)
                    .flat_map(|&hop| {
                        let ctl = self.relay_ctl(hop).unwrap_or_default();
                        std::iter::once((hop, 0)).chain(ctl.into_iter().map(move |fd| (hop, fd)))
                    })
                    .collect();
                (t.root, links)
            })
            .collect()
    }

    /// Control fds of `key` if it is a relay hop of some host rule (that
    /// rule's `lineage_fds`), `None` if it is no relay.
    pub(super) fn relay_ctl(&self, key: ProcKey) -> Option<Vec<u32>> {
        let rule = match self.infos.get(&key).filter(|i| i.key == key) {
            Some(info) => self.config.classify_relay(&view(info))?,
            None => {
                let info = procscan::read_process(&self.proc_root, key.tgid)
                    .ok()
                    .filter(|i| i.key == key)?;
                self.config.classify_relay(&view(&info))?
            }
        };
        Some(rule.lineage_fds.clone())
    }

    /// The lineage fds of the named host rule (none for unknown rules).
    pub(super) fn lineage_fds(&self, rule: &str) -> Vec<u32> {
        self.config
            .host_rules()
            .iter()
            .find(|h| h.name == rule)
            .map(|h| h.lineage_fds.clone())
            .unwrap_or_default()
    }
}
