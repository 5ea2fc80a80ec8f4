//! The process table.
//!
//! Owns: every process the agent knows of, keyed by (tgid, start time); the
//! fork lineage between them (who forked whom, kept after the child is
//! reparented and after the forking process exits); the MCP tree each one
//! belongs to; and the table's health: degraded after lost events or a full
//! table, until a resync from /proc.
//!
//! Must never: do I/O (liveness comes in as a closure, /proc as snapshots
//! read by `procscan`), let a bare PID stand for a process (the tgid index
//! is a lookup aid that always yields a full key), grow without bound, or
//! forget an exited process while one of its descendants lives: lineage,
//! and so tree membership, runs through it.
//!
//! Events may arrive late, twice, or out of order (an exit before the fork
//! that created the process). Every handler is idempotent, an exit for an
//! unknown process is parked until the process appears, and a fork whose
//! parent is unknown still records the child under the parent's key, so the
//! lineage joins up when the parent shows up.
//!
//! A tree admits only members whose lineage the table shows: the kernel's
//! word that a process belongs to a tree (its watch entry) is taken only
//! when the chain of lineage parents leads from the process to that tree's
//! root. A claim the table cannot show is refused and counted
//! (`lineage_rejected`); it is kept on the entry and admitted should the
//! missing lineage arrive later (events out of order). A watch entry the
//! kernel kept for an earlier holder of a PID therefore never pulls an
//! unrelated process into a tree.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::{
    event::{ProcessEvent, SourceMsg, Watch},
    identity::ProcKey,
    procscan::ProcInfo,
};

mod bounds;
pub use bounds::TableSizes;
pub(crate) use bounds::shrink;

/// Exit code recorded for a process found dead without an exit event (gone
/// from /proc, PID reused, a zombie in a snapshot). Kernel exit codes are
/// wait statuses below 2^16, so this never collides with one.
pub const EXIT_CODE_UNKNOWN: u32 = u32::MAX;

/// Most exits parked at once (fewer for a smaller table).
const MAX_PARKED: usize = 4096;

/// A parked exit is dropped after this many `gc` rounds without its process
/// appearing: by then it belongs to a process this table never sees (one
/// that lived and died between a /proc scan and the first events).
const PARKED_GC_ROUNDS: u64 = 2;

/// Where an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A /proc scan (`seed` or `resync`): lineage is the parent at the time
    /// of the scan, which may be a reaper the process was reparented to.
    Snapshot,
    /// A process event: lineage is exact.
    Event,
}

/// Which exits the event source reports, so `gc` knows which processes it
/// must check itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitReporting {
    /// The eBPF source: exits of watched processes only.
    #[default]
    WatchedOnly,
    /// The poll source: exits of every process it has seen.
    All,
}

/// One process in the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcEntry {
    pub key: ProcKey,
    /// The lineage parent: the process that forked this one (for snapshot
    /// entries, the parent /proc showed). Never updated on reparenting.
    pub parent: Option<ProcKey>,
    pub comm: String,
    /// The command line /proc showed at the last seed, resync or `refresh`
    /// (empty when none did, and cleared by an exec that changes `comm`).
    pub cmdline: Vec<String>,
    pub origin: Origin,
    /// Exit code once the process has exited (`EXIT_CODE_UNKNOWN` when it
    /// was found dead rather than reported).
    pub exited: Option<u32>,
    /// Root of the MCP tree the process belongs to, if any.
    pub tree_root: Option<ProcKey>,
    /// The process is a host: the processes it forks start new trees.
    pub host: bool,
    /// An exit event will arrive for it (watched in the kernel, or a source
    /// that reports every exit); otherwise `gc` checks its liveness.
    pub exit_reported: bool,
    /// A tree the kernel said the process belongs to, not (yet) shown by
    /// its lineage: not a membership.
    pub unproven_root: Option<ProcKey>,
}

impl ProcEntry {
    pub fn is_live(&self) -> bool {
        self.exited.is_none()
    }
}

/// Counts for metrics and `scan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    /// Entries not exited.
    pub live: usize,
    /// Exited entries kept because a descendant lives (or not yet collected).
    pub exited_kept: usize,
    /// New entries refused because the table was full.
    pub dropped: u64,
    /// Exits waiting for their process to appear.
    pub parked: usize,
    /// Parked exits pushed out by newer ones (the table degrades).
    pub parked_evicted: u64,
    /// Events the sources reported lost.
    pub lost: u64,
    /// Gaps in lineage the sources reported (a watch not written, an event
    /// skipped); each degrades the table like a loss.
    pub lineage_gaps: u64,
    /// Tree memberships the kernel claimed that lineage did not show when
    /// they arrived (refused; admitted later only if lineage joins up).
    pub lineage_rejected: u64,
    /// The table may disagree with the kernel until the next resync.
    pub degraded: bool,
}

#[derive(Clone, Copy, Debug)]
struct Parked {
    code: u32,
    /// `gc` round it was parked in.
    round: u64,
    /// Arrival order, for evicting the oldest.
    seq: u64,
}

/// The process table. See the module header.
#[derive(Debug)]
pub struct Tracker {
    entries: HashMap<ProcKey, ProcEntry>,
    /// tgid -> the live entry holding it. Exactly the live entries.
    by_tgid: HashMap<u32, ProcKey>,
    /// Lineage parent -> children. The parent need not be in the table yet.
    children: HashMap<ProcKey, BTreeSet<ProcKey>>,
    /// Tree root -> members (live or exited).
    trees: HashMap<ProcKey, BTreeSet<ProcKey>>,
    parked: HashMap<ProcKey, Parked>,
    parked_seq: u64,
    max_entries: usize,
    exit_reporting: ExitReporting,
    gc_round: u64,
    degraded: bool,
    dropped: u64,
    parked_evicted: u64,
    lost: u64,
    lineage_gaps: u64,
    lineage_rejected: u64,
}

impl Tracker {
    /// An empty table holding at most `max_entries` processes (live and
    /// exited). Exits are taken to be reported for watched processes only.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_tgid: HashMap::new(),
            children: HashMap::new(),
            trees: HashMap::new(),
            parked: HashMap::new(),
            parked_seq: 0,
            max_entries,
            exit_reporting: ExitReporting::default(),
            gc_round: 0,
            degraded: false,
            dropped: 0,
            parked_evicted: 0,
            lost: 0,
            lineage_gaps: 0,
            lineage_rejected: 0,
        }
    }

    /// Says which exits the event source reports (set before `seed`).
    #[must_use]
    pub fn with_exit_reporting(mut self, reporting: ExitReporting) -> Self {
        self.exit_reporting = reporting;
        self
    }

    /// Fills the table from a /proc scan at start-up. Processes already in
    /// the table (from events that came first) keep their lineage; their
    /// comm and command line are refreshed. Nothing is marked exited.
    pub fn seed(&mut self, snapshot: &[ProcInfo]) {
        self.absorb(snapshot);
    }

    /// Makes the table agree with a /proc scan after events were lost:
    /// live entries missing from the scan (or zombies in it) are marked
    /// exited, processes missing from the table are added (origin
    /// `Snapshot`, parent from ppid), and entries present in both keep their
    /// lineage and tree (an exit already recorded stands). Exited entries
    /// with no live descendant that the scan does not show are dropped to
    /// make room. Clears `degraded` unless the table overflows again.
    ///
    /// Take the scan while no events are applied, and apply the events
    /// queued meanwhile afterwards: they are idempotent against the scan.
    pub fn resync(&mut self, snapshot: &[ProcInfo]) {
        let shown: HashSet<ProcKey> = snapshot.iter().map(|p| p.key).collect();
        let gone: Vec<ProcKey> = self
            .entries
            .values()
            .filter(|e| e.is_live() && !shown.contains(&e.key))
            .map(|e| e.key)
            .collect();
        for key in gone {
            self.mark_exited(key, EXIT_CODE_UNKNOWN);
        }
        self.degraded = false;
        // Entries the scan shows are kept, exited or not, so that `absorb`
        // finds them instead of adding them back as live.
        self.prune(&shown);
        self.absorb(snapshot);
    }

    /// Applies one event. Unknown, duplicate and out-of-order events are
    /// all fine (see the module header).
    pub fn apply(&mut self, ev: &ProcessEvent) {
        if ev.key().tgid == 0 {
            return; // the idle task is not a process
        }
        match ev {
            ProcessEvent::Exec {
                key,
                parent,
                comm,
                watch,
                ..
            } => self.on_exec(*key, *parent, comm, *watch),
            ProcessEvent::Fork {
                child,
                parent,
                comm,
                watch,
                ..
            } => self.on_fork(*child, *parent, comm, *watch),
            ProcessEvent::Exit { key, exit_code, .. } => self.on_exit(*key, *exit_code),
            // Not a process-table change (the supervisor acts on it).
            ProcessEvent::Close { .. } => {}
        }
    }

    /// Applies what a source sent: an event, or a loss.
    pub fn apply_msg(&mut self, msg: &SourceMsg) {
        match msg {
            SourceMsg::Event(ev) => self.apply(ev),
            SourceMsg::Lost(n) => self.mark_lost(*n),
            SourceMsg::Gap(_, n) => self.mark_gap(*n),
            SourceMsg::Drained(_) => {}
        }
    }

    /// `n` gaps in lineage (a watch that could not be written, a kernel
    /// event skipped): as after a loss, nothing may act on the table until
    /// the next `resync`.
    pub fn mark_gap(&mut self, n: u64) {
        self.lineage_gaps = self.lineage_gaps.saturating_add(n);
        self.degraded = true;
    }

    /// A source dropped `n` events: nothing may act on the table until the
    /// next `resync`.
    pub fn mark_lost(&mut self, n: u64) {
        self.lost = self.lost.saturating_add(n);
        self.degraded = true;
    }

    /// The table may be missing processes or exits.
    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Records watch state decided in userspace (a process found to be a
    /// host, or the root of a tree); a tree is joined only as lineage shows
    /// (see the module header). `false` if `key` is not in the table.
    pub fn mark_watched(&mut self, key: ProcKey, watch: Watch) -> bool {
        if !self.entries.contains_key(&key) {
            return false;
        }
        self.apply_watch(key, watch);
        true
    }

    /// Makes `key` a member of the tree rooted at `root` on the word of a
    /// previous run's tree table (`persist`), which wrote it from the
    /// kernel's lineage: lineage this table cannot show any more (the
    /// member was reparented while the daemon was down). The caller has
    /// checked that `key` is alive with that start time. `false` if `key`
    /// is not in the table.
    pub fn adopt(&mut self, key: ProcKey, root: ProcKey) -> bool {
        if !self.entries.contains_key(&key) {
            return false;
        }
        self.set_tree_root(key, root);
        if let Some(e) = self.entries.get_mut(&key) {
            e.unproven_root = None;
        }
        true
    }

    /// Updates comm and command line from a fresh read of /proc. `false` if
    /// the process is not in the table.
    pub fn refresh(&mut self, info: &ProcInfo) -> bool {
        let Some(entry) = self.entries.get_mut(&info.key) else {
            return false;
        };
        entry.comm.clone_from(&info.comm);
        entry.cmdline.clone_from(&info.cmdline);
        true
    }

    pub fn get(&self, key: ProcKey) -> Option<&ProcEntry> {
        self.entries.get(&key)
    }

    /// The live process holding `tgid` now, if the table knows it.
    pub fn live_by_tgid(&self, tgid: u32) -> Option<&ProcEntry> {
        self.by_tgid.get(&tgid).and_then(|k| self.entries.get(k))
    }

    /// Processes `key` forked (live or exited), in key order.
    pub fn children(&self, key: ProcKey) -> Vec<ProcKey> {
        self.children
            .get(&key)
            .map(|c| c.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every process descended from `key` by fork lineage (live or exited),
    /// parents before children. Includes descendants that were reparented
    /// or called setsid(); terminates on any parent graph.
    pub fn descendants(&self, key: ProcKey) -> Vec<ProcKey> {
        let mut out = Vec::new();
        let mut seen = HashSet::from([key]);
        let mut queue = VecDeque::from([key]);
        while let Some(k) = queue.pop_front() {
            for &child in self.children.get(&k).into_iter().flatten() {
                if seen.insert(child) {
                    out.push(child);
                    queue.push_back(child);
                }
            }
        }
        out
    }

    /// The live members of the tree rooted at `root` (the root included
    /// while it lives), in key order.
    pub fn tree_members(&self, root: ProcKey) -> Vec<ProcKey> {
        self.trees
            .get(&root)
            .into_iter()
            .flatten()
            .copied()
            .filter(|k| self.entries.get(k).is_some_and(ProcEntry::is_live))
            .collect()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ProcEntry> {
        self.entries.values()
    }

    pub fn live_count(&self) -> usize {
        self.by_tgid.len()
    }

    /// Entries, live and exited.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            live: self.by_tgid.len(),
            exited_kept: self.entries.len() - self.by_tgid.len(),
            dropped: self.dropped,
            parked: self.parked.len(),
            parked_evicted: self.parked_evicted,
            lost: self.lost,
            lineage_gaps: self.lineage_gaps,
            lineage_rejected: self.lineage_rejected,
            degraded: self.degraded,
        }
    }

    /// Periodic clean-up. Live entries no exit will be reported for are
    /// checked with `is_alive` and marked exited when dead; exited entries
    /// with no live descendant are removed; stale parked exits expire.
    /// Returns the number of entries removed.
    pub fn gc(&mut self, is_alive: impl Fn(ProcKey) -> bool) -> usize {
        let unreported: Vec<ProcKey> = self
            .entries
            .values()
            .filter(|e| e.is_live() && !e.exit_reported)
            .map(|e| e.key)
            .collect();
        for key in unreported {
            if !is_alive(key) {
                self.mark_exited(key, EXIT_CODE_UNKNOWN);
            }
        }
        self.gc_round += 1;
        let round = self.gc_round;
        self.parked
            .retain(|_, p| p.round + PARKED_GC_ROUNDS > round);
        let removed = self.prune(&HashSet::new());
        self.shrink_tables();
        removed
    }

    fn on_exec(&mut self, key: ProcKey, parent: ProcKey, comm: &str, watch: Watch) {
        let parent = self.resolve_parent(parent, key);
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.comm != comm {
                // A new image: the old command line no longer describes it.
                comm.clone_into(&mut entry.comm);
                entry.cmdline.clear();
            }
            self.fill_parent(key, parent);
            self.apply_watch(key, watch);
            return;
        }
        // Its fork was not reported (an unwatched parent) or is late. Exec's
        // parent is the current one, so tree membership is not inferred from
        // it: the kernel's watch says whether the process is in a tree, and
        // lineage must show it.
        if self.insert(ProcEntry {
            key,
            parent,
            comm: comm.to_owned(),
            cmdline: Vec::new(),
            origin: Origin::Event,
            exited: None,
            tree_root: None,
            host: watch.host,
            exit_reported: self.exit_reported_for(watch),
            unproven_root: None,
        }) && let Some(root) = watch.root
        {
            self.claim(key, root);
        }
    }

    fn on_fork(&mut self, child: ProcKey, parent: ProcKey, comm: &str, watch: Watch) {
        let parent = self.resolve_parent(parent, child);
        if self.entries.contains_key(&child) {
            self.fill_parent(child, parent);
            self.apply_watch(child, watch);
            if self
                .entries
                .get(&child)
                .is_some_and(|e| e.tree_root.is_none())
                && let Some(root) = self.parent_tree_root(child, parent)
            {
                self.set_tree_root(child, root);
            }
            return;
        }
        let inserted = self.insert(ProcEntry {
            key: child,
            parent,
            comm: comm.to_owned(),
            cmdline: Vec::new(),
            origin: Origin::Event,
            exited: None,
            tree_root: None,
            host: watch.host,
            exit_reported: self.exit_reported_for(watch),
            unproven_root: None,
        });
        if !inserted {
            return;
        }
        if let Some(root) = watch.root {
            self.claim(child, root);
        }
        if self
            .entries
            .get(&child)
            .is_some_and(|e| e.tree_root.is_none())
            && let Some(root) = self.parent_tree_root(child, parent)
        {
            self.set_tree_root(child, root);
        }
    }

    fn on_exit(&mut self, key: ProcKey, code: u32) {
        if self.mark_exited(key, code) {
            return;
        }
        // A live entry on the same PID that started earlier is dead: its PID
        // has been reused by the process whose exit this is.
        if let Some(&old) = self.by_tgid.get(&key.tgid)
            && old.start_ticks < key.start_ticks
        {
            self.mark_exited(old, EXIT_CODE_UNKNOWN);
        }
        self.park(key, code);
    }

    /// The tree a forked child belongs to by the kernel's rule applied to
    /// its lineage parent: a host's child roots a new tree, a member's child
    /// joins its parent's tree. Used when the kernel did not say (or said
    /// what lineage cannot show): either way the child is linked to that
    /// root through its parent.
    fn parent_tree_root(&self, child: ProcKey, parent: Option<ProcKey>) -> Option<ProcKey> {
        let parent = self.entries.get(&parent?)?;
        if parent.host {
            Some(child)
        } else {
            parent.tree_root
        }
    }

    /// Whether the chain of lineage parents from `key` reaches `root`
    /// (`key` itself counts). The chain may end in a parent the table does
    /// not hold yet, which counts when it is `root`.
    pub fn descends_from(&self, key: ProcKey, root: ProcKey) -> bool {
        let mut cur = key;
        // Bounded: a cycle of impossible parents must not hang the table.
        for _ in 0..=self.entries.len() {
            if cur == root {
                return true;
            }
            match self.entries.get(&cur).and_then(|e| e.parent) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    /// The kernel says `key` belongs to the tree rooted at `root`: admitted
    /// when lineage shows it, otherwise refused, counted, and kept on the
    /// entry in case the missing lineage arrives later.
    fn claim(&mut self, key: ProcKey, root: ProcKey) {
        if self.descends_from(key, root) {
            self.set_tree_root(key, root);
            if let Some(e) = self.entries.get_mut(&key) {
                e.unproven_root = None;
            }
            return;
        }
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if e.tree_root == Some(root) {
            return; // already a member by lineage
        }
        if e.unproven_root != Some(root) {
            e.unproven_root = Some(root);
            self.lineage_rejected += 1;
        }
    }

    /// Lineage through `key` just changed (it appeared, or got its parent):
    /// claims below it that lineage now shows are admitted.
    fn readmit_below(&mut self, key: ProcKey) {
        let mut below = vec![key];
        below.extend(self.descendants(key));
        for k in below {
            if let Some(root) = self.entries.get(&k).and_then(|e| e.unproven_root)
                && self.descends_from(k, root)
            {
                self.claim(k, root);
            }
        }
    }

    fn exit_reported_for(&self, watch: Watch) -> bool {
        self.exit_reporting == ExitReporting::All || watch.root.is_some() || watch.host
    }

    /// The table's key for a parent named by an event. `None` for no
    /// parent (PID 0) and for impossible ones (itself, or one that started
    /// after the child). A parent with start time 0 comes from a source that
    /// knows only its PID and is looked up by tgid.
    fn resolve_parent(&self, parent: ProcKey, child: ProcKey) -> Option<ProcKey> {
        if parent.tgid == 0 || parent.tgid == child.tgid {
            return None;
        }
        let parent = if parent.start_ticks == 0 && !self.entries.contains_key(&parent) {
            *self.by_tgid.get(&parent.tgid)?
        } else {
            parent
        };
        (parent.start_ticks <= child.start_ticks).then_some(parent)
    }

    /// Adds a process not yet in the table. `false` when the table is full.
    fn insert(&mut self, mut entry: ProcEntry) -> bool {
        if self.entries.len() >= self.max_entries {
            self.dropped += 1;
            self.degraded = true;
            return false;
        }
        let key = entry.key;
        if let Some(parked) = self.parked.remove(&key) {
            entry.exited = Some(parked.code);
        }
        if entry.is_live() {
            match self.by_tgid.get(&key.tgid).copied() {
                // A later process holds the PID: this one's events are late
                // and it is long gone.
                Some(newer) if newer.start_ticks > key.start_ticks => {
                    entry.exited = Some(EXIT_CODE_UNKNOWN);
                }
                // PID reuse: the earlier holder has exited.
                Some(older) => {
                    self.mark_exited(older, EXIT_CODE_UNKNOWN);
                    self.by_tgid.insert(key.tgid, key);
                }
                None => {
                    self.by_tgid.insert(key.tgid, key);
                }
            }
        }
        if let Some(parent) = entry.parent {
            self.children.entry(parent).or_default().insert(key);
        }
        if let Some(root) = entry.tree_root {
            self.trees.entry(root).or_default().insert(key);
        }
        self.entries.insert(key, entry);
        if self.children.contains_key(&key) {
            self.readmit_below(key);
        }
        true
    }

    /// Marks `key` exited (a known code replaces an unknown one; otherwise
    /// the first exit stands). `false` if `key` is not in the table.
    fn mark_exited(&mut self, key: ProcKey, code: u32) -> bool {
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        match entry.exited {
            None => {
                entry.exited = Some(code);
                if self.by_tgid.get(&key.tgid) == Some(&key) {
                    self.by_tgid.remove(&key.tgid);
                }
            }
            Some(EXIT_CODE_UNKNOWN) => entry.exited = Some(code),
            Some(_) => {}
        }
        true
    }

    fn park(&mut self, key: ProcKey, code: u32) {
        if let Some(parked) = self.parked.get_mut(&key) {
            parked.code = code;
            return;
        }
        let cap = self.max_entries.clamp(1, MAX_PARKED);
        while self.parked.len() >= cap {
            let Some(oldest) = self
                .parked
                .iter()
                .min_by_key(|(_, p)| p.seq)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.parked.remove(&oldest);
            self.parked_evicted += 1;
            // That exit may belong to a process still to appear, which would
            // then look alive forever.
            self.degraded = true;
        }
        self.parked_seq += 1;
        self.parked.insert(
            key,
            Parked {
                code,
                round: self.gc_round,
                seq: self.parked_seq,
            },
        );
    }

    /// Sets the lineage parent of an entry that has none.
    fn fill_parent(&mut self, key: ProcKey, parent: Option<ProcKey>) {
        let Some(parent) = parent else { return };
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if entry.parent.is_none() {
            entry.parent = Some(parent);
            self.children.entry(parent).or_default().insert(key);
            self.readmit_below(key);
        }
    }

    fn apply_watch(&mut self, key: ProcKey, watch: Watch) {
        if let Some(root) = watch.root {
            self.claim(key, root);
        }
        let reported = self.exit_reported_for(watch);
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.host |= watch.host;
            entry.exit_reported |= reported;
        }
    }

    fn set_tree_root(&mut self, key: ProcKey, root: ProcKey) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        match entry.tree_root.replace(root) {
            Some(old) if old == root => return,
            Some(old) => remove_from(&mut self.trees, old, key),
            None => {}
        }
        self.trees.entry(root).or_default().insert(key);
    }

    /// Adds what a /proc scan shows and the table lacks; refreshes the rest.
    fn absorb(&mut self, snapshot: &[ProcInfo]) {
        let by_pid: HashMap<u32, ProcKey> = snapshot.iter().map(|p| (p.key.tgid, p.key)).collect();
        // Oldest first: parents before children, and when the table fills
        // up the processes dropped are the newest.
        let mut order: Vec<&ProcInfo> = snapshot.iter().collect();
        order.sort_by_key(|p| (p.key.start_ticks, p.key.tgid));
        for info in order {
            let key = info.key;
            let parent = if info.ppid == 0 {
                None
            } else {
                let ppid_key = by_pid
                    .get(&info.ppid)
                    .copied()
                    .unwrap_or(ProcKey::new(info.ppid, 0));
                self.resolve_parent(ppid_key, key)
            };
            if self.entries.contains_key(&key) {
                self.refresh(info);
                self.fill_parent(key, parent);
            } else {
                // Children of tree members are watched by the kernel from
                // birth; one added from /proc joins its parent's tree.
                let tree_root = parent
                    .and_then(|p| self.entries.get(&p))
                    .filter(|p| !p.host)
                    .and_then(|p| p.tree_root);
                self.insert(ProcEntry {
                    key,
                    parent,
                    comm: info.comm.clone(),
                    cmdline: info.cmdline.clone(),
                    origin: Origin::Snapshot,
                    exited: None,
                    tree_root,
                    host: false,
                    exit_reported: self.exit_reporting == ExitReporting::All,
                    unproven_root: None,
                });
            }
            if info.is_zombie() {
                self.mark_exited(key, EXIT_CODE_UNKNOWN);
            }
        }
    }

    /// Removes exited entries that no live entry descends from, except
    /// those in `keep`.
    fn prune(&mut self, keep: &HashSet<ProcKey>) -> usize {
        let mut needed = HashSet::new();
        for entry in self.entries.values().filter(|e| e.is_live()) {
            let mut up = entry.parent;
            while let Some(parent) = up {
                let Some(p) = self.entries.get(&parent) else {
                    break;
                };
                if !needed.insert(parent) {
                    break; // the rest of the chain is marked already
                }
                up = p.parent;
            }
        }
        let doomed: Vec<ProcKey> = self
            .entries
            .values()
            .filter(|e| !e.is_live() && !needed.contains(&e.key) && !keep.contains(&e.key))
            .map(|e| e.key)
            .collect();
        for &key in &doomed {
            self.remove(key);
        }
        doomed.len()
    }

    /// Drops an entry no live entry needs. Its children are unneeded too and
    /// go in the same pass (or, kept by `prune`'s `keep`, stay in the
    /// children index under this key, to join up if it is seen again).
    fn remove(&mut self, key: ProcKey) {
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        if let Some(parent) = entry.parent {
            remove_from(&mut self.children, parent, key);
        }
        if let Some(root) = entry.tree_root {
            remove_from(&mut self.trees, root, key);
        }
        if self.by_tgid.get(&key.tgid) == Some(&key) {
            self.by_tgid.remove(&key.tgid);
        }
    }
}

fn remove_from(index: &mut HashMap<ProcKey, BTreeSet<ProcKey>>, at: ProcKey, key: ProcKey) {
    if let Some(set) = index.get_mut(&at) {
        set.remove(&key);
        if set.is_empty() {
            index.remove(&at);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Table sizes under process churn.
    mod churn;
    /// Admission of tree members by lineage.
    mod lineage;

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

    /// The indexes agree with the entries.
    fn check(t: &Tracker) {
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

    #[test]
    fn exit_before_fork_is_parked_then_applied() {
        let mut t = with_host();
        let child = k(101, 11);
        t.apply(&exit(child, 256));
        assert_eq!(t.get(child), None);
        assert_eq!(t.stats().parked, 1);

        t.apply(&fork(ROOT, child, member_of(ROOT)));
        let e = t.get(child).unwrap();
        assert_eq!(e.exited, Some(256));
        assert_eq!(e.parent, Some(ROOT));
        assert_eq!(t.live_by_tgid(101), None);
        assert_eq!(t.stats().parked, 0);
        assert_eq!(t.tree_members(ROOT), [ROOT]);
        check(&t);
    }

    #[test]
    fn exit_before_exec_is_parked_then_applied() {
        let mut t = with_host();
        t.apply(&exit(k(300, 30), 9));
        t.apply(&exec(k(300, 30), k(1, 1), "sh", Watch::default()));
        assert_eq!(t.get(k(300, 30)).unwrap().exited, Some(9));
        assert_eq!(t.live_by_tgid(300), None);
        check(&t);
    }

    #[test]
    fn parked_exits_expire_and_are_bounded() {
        let mut t = Tracker::new(3);
        t.apply(&exit(k(7, 1), 0));
        t.gc(|_| true);
        assert_eq!(t.stats().parked, 1);
        t.gc(|_| true);
        assert_eq!(t.stats().parked, 0, "expires after two gc rounds");
        assert!(!t.degraded());

        for i in 0..5 {
            t.apply(&exit(k(10 + i, 1), 0));
        }
        let s = t.stats();
        assert_eq!((s.parked, s.parked_evicted), (3, 2));
        assert!(t.degraded(), "an evicted exit may be needed later");
        // The newest were kept.
        t.apply(&exec(k(14, 1), k(1, 1), "x", Watch::default()));
        assert_eq!(t.get(k(14, 1)).unwrap().exited, Some(0));
    }

    #[test]
    fn duplicate_events_are_idempotent() {
        let mut t = with_host();
        let a = k(101, 11);
        let b = k(102, 12);
        let events = [
            fork(ROOT, a, member_of(ROOT)),
            exec(a, ROOT, "sh", member_of(ROOT)),
            fork(a, b, member_of(ROOT)),
            exit(b, 0),
        ];
        for ev in &events {
            t.apply(ev);
        }
        let once = table(&t);
        let stats = t.stats();
        for ev in events.iter().chain(&events) {
            t.apply(ev);
        }
        assert_eq!(table(&t), once);
        assert_eq!(t.stats(), stats);
        assert_eq!(t.children(ROOT), [a]);
        check(&t);
    }

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
    fn fork_with_unknown_parent_records_the_child_and_links_later() {
        let mut t = Tracker::new(100);
        let (p, c) = (k(20, 2), k(21, 3));
        t.apply(&fork(p, c, member_of(p)));
        let e = t.get(c).unwrap();
        assert_eq!(e.parent, Some(p));
        assert_eq!(e.tree_root, Some(p));
        assert_eq!(e.origin, Origin::Event);
        assert_eq!(t.descendants(p), [c]);

        // The parent's own events arrive late.
        t.apply(&fork(k(1, 1), p, member_of(p)));
        assert_eq!(t.get(p).unwrap().parent, Some(k(1, 1)));
        assert_eq!(t.descendants(k(1, 1)), [p, c]);
        assert_eq!(t.tree_members(p), [p, c]);
        check(&t);
    }

    #[test]
    fn every_order_of_a_trees_events_gives_the_same_table() {
        let (a, b, c) = (k(101, 11), k(102, 12), k(103, 13));
        let w = member_of(ROOT);
        let events = vec![
            fork(ROOT, a, w),
            exec(a, ROOT, "sh", w),
            fork(a, b, w),
            exit(a, 0),
            fork(b, c, w),
            exit(c, 2),
        ];
        let mut expected = None;
        let mut perm = events.clone();
        // Heap's algorithm over all 720 orders.
        let n = perm.len();
        let mut stack = vec![0usize; n];
        let mut run = |order: &[ProcessEvent]| {
            let mut t = with_host();
            for ev in order {
                t.apply(ev);
            }
            check(&t);
            assert_eq!(t.get(a).unwrap().parent, Some(ROOT));
            assert_eq!(t.get(b).unwrap().parent, Some(a));
            assert_eq!(t.get(c).unwrap().parent, Some(b));
            assert_eq!(t.get(a).unwrap().comm, "sh");
            assert_eq!(t.tree_members(ROOT), [ROOT, b]);
            assert_eq!(t.stats().parked, 0);
            let got = table(&t);
            match &expected {
                None => expected = Some(got),
                Some(e) => assert_eq!(&got, e, "order: {order:?}"),
            }
        };
        run(&perm);
        let mut i = 0;
        while i < n {
            if stack[i] < i {
                if i % 2 == 0 {
                    perm.swap(0, i);
                } else {
                    perm.swap(stack[i], i);
                }
                run(&perm);
                stack[i] += 1;
                i = 0;
            } else {
                stack[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn middle_of_three_levels_exits_and_lineage_still_runs_through_it() {
        let mut t = with_host();
        let (mid, leaf) = (k(101, 11), k(102, 12));
        t.apply(&fork(ROOT, mid, member_of(ROOT)));
        t.apply(&fork(mid, leaf, member_of(ROOT)));
        t.apply(&exit(mid, 0));
        // The leaf, reparented to init, execs: its current parent is 1.
        t.apply(&exec(leaf, k(1, 1), "node", member_of(ROOT)));

        let e = t.get(leaf).unwrap();
        assert_eq!(e.parent, Some(mid), "lineage parent survives reparenting");
        assert_eq!(e.comm, "node");
        assert_eq!(t.descendants(ROOT), [mid, leaf]);
        assert_eq!(t.children(mid), [leaf]);
        assert_eq!(t.tree_members(ROOT), [ROOT, leaf]);
        assert!(t.children(k(1, 1)).iter().all(|c| *c != leaf));

        // gc keeps the exited middle: the leaf's lineage runs through it.
        assert_eq!(t.gc(|_| true), 0);
        assert!(t.get(mid).is_some());
        check(&t);
    }

    #[test]
    fn setsid_double_fork_escapee_is_still_a_descendant() {
        let mut t = with_host();
        let (a, b, c) = (k(101, 11), k(102, 12), k(103, 13));
        // root -> a -> b (setsid, a exits: b is reparented) -> c
        t.apply(&fork(ROOT, a, member_of(ROOT)));
        t.apply(&fork(a, b, member_of(ROOT)));
        t.apply(&exit(a, 0));
        t.apply(&exit(ROOT, 0));
        t.apply(&fork(b, c, member_of(ROOT)));
        t.apply(&exec(c, b, "node", member_of(ROOT)));

        assert_eq!(t.descendants(ROOT), [a, b, c]);
        assert_eq!(t.tree_members(ROOT), [b, c]);
        assert_eq!(t.gc(|_| true), 0);
        assert!(t.get(ROOT).is_some() && t.get(a).is_some());
        assert_eq!(t.descendants(ROOT), [a, b, c]);
        check(&t);
    }

    #[test]
    fn gc_keeps_exited_ancestors_while_a_descendant_lives_then_removes_them() {
        let mut t = with_host();
        let (a, b) = (k(101, 11), k(102, 12));
        t.apply(&fork(ROOT, a, member_of(ROOT)));
        t.apply(&fork(a, b, member_of(ROOT)));
        t.apply(&exit(ROOT, 0));
        t.apply(&exit(a, 0));
        let before = t.len();
        let init = k(1, 1);
        let polled = |key| {
            assert_eq!(key, init, "watched processes are not polled");
            true
        };
        assert_eq!(t.gc(polled), 0);
        assert_eq!(t.len(), before);
        assert_eq!(t.stats().exited_kept, 2);

        t.apply(&exit(b, 0));
        assert_eq!(t.gc(|_| true), 3);
        assert!(t.get(ROOT).is_none() && t.get(a).is_none() && t.get(b).is_none());
        assert!(t.descendants(ROOT).is_empty());
        assert!(t.tree_members(ROOT).is_empty());
        assert!(t.trees.is_empty());
        assert_eq!(t.stats().exited_kept, 0);
        check(&t);
    }

    #[test]
    fn gc_polls_only_processes_whose_exit_is_not_reported() {
        let mut t = with_host();
        let plain = k(400, 40);
        t.apply(&exec(plain, k(1, 1), "bash", Watch::default()));
        assert!(!t.get(plain).unwrap().exit_reported);
        assert!(t.get(ROOT).unwrap().exit_reported);
        assert!(t.get(k(50, 5)).unwrap().exit_reported, "hosts are watched");
        assert!(!t.get(k(1, 1)).unwrap().exit_reported);

        let asked = std::cell::RefCell::new(Vec::new());
        t.gc(|key| {
            asked.borrow_mut().push(key);
            key != plain
        });
        let mut asked = asked.into_inner();
        asked.sort();
        assert_eq!(asked, [k(1, 1), plain]);
        assert_eq!(t.get(plain), None, "dead, no descendants: collected");
        assert!(t.live_by_tgid(1).is_some());
        check(&t);
    }

    #[test]
    fn poll_source_reports_every_exit() {
        let mut t = Tracker::new(100).with_exit_reporting(ExitReporting::All);
        t.seed(&[info(k(1, 1), 0, "init")]);
        t.apply(&exec(k(9, 9), k(1, 0), "sh", Watch::default()));
        assert!(t.iter().all(|e| e.exit_reported));
        // The poll source knows the parent's PID only.
        assert_eq!(t.get(k(9, 9)).unwrap().parent, Some(k(1, 1)));
        t.gc(|_| panic!("nothing to poll"));
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
}
