//! The daemon's live map of MCP trees and the decisions about them.
//!
//! Owns: discovering trees as processes exec (and at start from /proc),
//! marking hosts and tree roots in the kernel's watch map so lineage is
//! kept from the first fork, checking each tree's stdio ownership when
//! something happens to it (and at a reconcile interval), tracking how long
//! a tree has been orphaned, and asking `policy` what to do. Reaping itself
//! is `reaper`'s; this module hands it a plan.
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

use serde::Serialize;
use tracing::{debug, info, warn};

use crate::{
    classify,
    config::{Config, ProcView},
    event::{CloseKind, GapCause, ProcessEvent},
    identity::ProcKey,
    ownership::{
        self, FdHolder, OwnerState, STDIO_FDS,
        chain::{self, ChainEnd, Link},
    },
    policy::{self, Decision, Facts},
    procscan::{self, ProcInfo},
    remnant,
    source::ebpf::{EbpfSource, Watched},
    tracker::Tracker,
    trees::{self, OwnerFd, TreeState},
};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod churn_tests;
mod tables;
pub use tables::TableSizes;

/// A tree of the same server started again by the same host within this
/// window, after the previous one ended, counts as a respawn.
pub const RESPAWN_WINDOW: Duration = Duration::from_secs(60);

/// What one of a process's descriptors is, as far as stdio ownership goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StdioLink {
    Socket(u64),
    Pipe(u64),
}

impl StdioLink {
    /// From a `/proc/PID/fd/N` link text (`socket:[N]`, `pipe:[N]`).
    fn parse(link: &str) -> Option<Self> {
        let inode = |prefix: &str| {
            link.strip_prefix(prefix)?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        };
        inode("socket:[")
            .map(Self::Socket)
            .or_else(|| inode("pipe:[").map(Self::Pipe))
    }

    fn inode(self) -> u64 {
        match self {
            Self::Socket(i) | Self::Pipe(i) => i,
        }
    }
}

/// What `pid`'s descriptor `fd` is, when it is a socket or a pipe.
fn stdio_link(proc_root: &std::path::Path, pid: u32, fd: u32) -> Option<StdioLink> {
    let link = std::fs::read_link(
        proc_root
            .join(pid.to_string())
            .join("fd")
            .join(fd.to_string()),
    )
    .ok()?;
    StdioLink::parse(link.to_str()?)
}

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

/// One MCP tree as the daemon knows it.
#[derive(Clone, Debug, Serialize)]
pub struct TreeRecord {
    pub root: ProcKey,
    pub server: String,
    pub host: Option<ProcKey>,
    /// Host rule name (bounded label).
    pub host_rule: String,
    pub session_id: Option<String>,
    pub owner_fds: Vec<OwnerFd>,
    /// The host side of a relay chain, owner first: the session's owner,
    /// then each relay or anchor hop down to the one holding the tree's
    /// stdio. Empty when the tree's stdio holder is no relay. Never part
    /// of a reap plan.
    pub chain: Vec<ProcKey>,
    /// The hop whose own upstream far end was released (the root itself
    /// when its stdin was released directly), while orphaned.
    pub released_link: Option<ProcKey>,
    /// Set by a host's `release`: the processes whose hold on the far end
    /// it covers. Every check re-confirms it (`judge_release`): it stands
    /// while nobody else holds the far end, and is withdrawn the moment
    /// another process outside the tree does.
    pub released_by: Vec<ProcKey>,
    pub state: TreeState,
    pub reason: Option<String>,
    /// When the current orphan reason was first confirmed.
    #[serde(skip)]
    pub orphan_since: Option<Instant>,
    /// Every process seen holding the far end while the tree was live.
    #[serde(skip)]
    pub owners_seen: Vec<FdHolder>,
    /// Inodes of the root's stdin and stdout (socket or pipe) at its last
    /// check: a host's close names one of them when it releases this tree.
    #[serde(skip)]
    pub stdio_inodes: Vec<u64>,
    /// A reap is under way.
    pub reaping: bool,
    /// The last decision reported (to log and audit each change once).
    pub last_decision: Option<Decision>,
}

impl TreeRecord {
    /// A tree just found (or restored), not checked yet.
    pub fn new(
        root: ProcKey,
        server: String,
        host: Option<ProcKey>,
        host_rule: String,
        session_id: Option<String>,
    ) -> Self {
        Self {
            root,
            server,
            host,
            host_rule,
            session_id,
            owner_fds: Vec::new(),
            chain: Vec::new(),
            released_link: None,
            released_by: Vec::new(),
            state: TreeState::Unknown,
            reason: Some("not checked yet".into()),
            orphan_since: None,
            owners_seen: Vec::new(),
            stdio_inodes: Vec::new(),
            reaping: false,
            last_decision: None,
        }
    }
}

/// What the daemon should do for one tree now.
#[derive(Clone, Debug)]
pub struct Action {
    pub root: ProcKey,
    pub decision: Decision,
    pub record: TreeRecord,
    /// Members at the moment of the decision (live, by lineage).
    pub members: Vec<ProcKey>,
}

pub struct Supervisor {
    config: Arc<Config>,
    proc_root: PathBuf,
    infos: HashMap<ProcKey, ProcInfo>,
    hosts: HashMap<ProcKey, String>,
    /// Relay and anchor hops of host rules (host side, never reaped).
    relays: HashMap<ProcKey, String>,
    pending: Vec<ProcKey>,
    trees: HashMap<ProcKey, TreeRecord>,
    recheck: HashSet<ProcKey>,
    last_reconcile: Instant,
    /// Processes seen holding a tree's far end, to watch as hosts.
    owner_hosts: Vec<ProcKey>,
    /// Idle clocks of live trees.
    activity: crate::activity::ActivityBook,
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
            trees: HashMap::new(),
            recheck: HashSet::new(),
            last_reconcile: Instant::now(),
            owner_hosts: Vec::new(),
            activity: crate::activity::ActivityBook::default(),
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

    /// Learns every process from a /proc snapshot (start-up and resync):
    /// hosts and trees that already exist are found and watched.
    pub fn seed(&mut self, procs: &[ProcInfo], tracker: &Tracker, ebpf: Option<&mut EbpfSource>) {
        for p in procs {
            self.infos.insert(p.key, p.clone());
        }
        let mut ebpf = ebpf;
        for p in procs {
            self.classify(p.key, tracker, ebpf.as_deref_mut());
        }
        let roots = trees::find_roots(procs, &self.config);
        for root in roots {
            if !self.trees.contains_key(&root) {
                self.add_tree(root, tracker, ebpf.as_deref_mut());
            }
        }
        for p in procs {
            self.drop_info_unless_kept(p.key);
        }
    }

    /// Feeds one process event (after the tracker applied it).
    pub fn observe(&mut self, ev: &ProcessEvent, tracker: &Tracker) {
        match ev {
            ProcessEvent::Exec { key, .. } => self.pending.push(*key),
            ProcessEvent::Fork { .. } => {}
            ProcessEvent::Exit { key, watch, .. } => {
                self.infos.remove(key);
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

    /// Classifies processes that exec'd since the last call.
    pub fn classify_pending(&mut self, tracker: &Tracker, mut ebpf: Option<&mut EbpfSource>) {
        let pending = std::mem::take(&mut self.pending);
        for key in pending {
            match procscan::read_process(&self.proc_root, key.tgid) {
                Ok(info) if info.key == key => {
                    self.infos.insert(key, info);
                    self.classify(key, tracker, ebpf.as_deref_mut());
                    self.drop_info_unless_kept(key);
                }
                _ => {} // gone already (or PID reused): nothing to classify
            }
        }
    }

    fn classify(&mut self, key: ProcKey, tracker: &Tracker, ebpf: Option<&mut EbpfSource>) {
        let Some(info) = self.infos.get(&key) else {
            return;
        };
        let v = view(info);
        // Protected processes (or ones whose protect fields cannot be read)
        // are neither hosts nor servers.
        let protected = crate::protect::check_info(&self.config, &self.proc_root, info)
            != crate::protect::Protection::Free;
        // A process is classified by what it runs now: an exec can turn a
        // forked copy of a host into a server, or the other way round.
        self.hosts.remove(&key);
        self.relays.remove(&key);
        if protected {
            return;
        }
        if let Some(rule) = self.config.classify_relay(&v) {
            let name = rule.name.clone();
            self.relays.insert(key, name);
            return;
        }
        if let Some(rule) = self.config.classify_host(&v) {
            let name = rule.name.clone();
            self.hosts.insert(key, name);
            if let Some(src) = ebpf
                && let Err(e) = src.watch_host(key)
            {
                warn!("cannot watch host {key}: {e:#}");
                self.gaps.push(e.cause());
            }
            return;
        }
        if self.config.classify_server(&v).is_none() {
            return;
        }
        // Which tree: the one lineage already puts it in, or a new one rooted
        // where the host spawned the line of launchers and servers above it
        // (`classify::place`), whichever of their execs came first.
        let chain = self.chain_of(key, tracker);
        debug!(server = %key, ?chain, "placing");
        match classify::place(&chain) {
            classify::Placement::None => {}
            classify::Placement::Member { root } => {
                if let Some(src) = ebpf {
                    self.watch_member(src, key, root);
                }
            }
            classify::Placement::NewTree { root, .. } => {
                if !self.trees.contains_key(&root) {
                    self.add_tree(root, tracker, ebpf);
                }
            }
        }
    }

    /// The evidence `classify::place` needs: `key` and its ancestors up to
    /// PID 1 (or the first one gone), each with its role and the known tree
    /// it is in. Ancestors are read from /proc afresh: their own exec may
    /// not be classified yet, and what was read at their exec can be stale,
    /// since a process title changes without an exec (npm calls itself
    /// `npm` first, `npm exec PKG` later).
    fn chain_of(&mut self, key: ProcKey, tracker: &Tracker) -> Vec<classify::Link> {
        let mut chain = Vec::new();
        let mut cur = Some(key);
        while let Some(k) = cur.filter(|k| k.tgid > 1 && chain.len() < 64) {
            if k != key || !self.infos.contains_key(&k) {
                match procscan::read_process(&self.proc_root, k.tgid) {
                    Ok(info) if info.key == k => {
                        self.infos.insert(k, info);
                    }
                    _ => break, // gone: the chain ends here
                }
            }
            let Some(info) = self.infos.get(&k) else {
                break;
            };
            let protected = crate::protect::check_info(&self.config, &self.proc_root, info)
                != crate::protect::Protection::Free;
            let role = classify::role(&self.config, &view(info), protected);
            let tree = if self.trees.contains_key(&k) {
                Some(k)
            } else {
                tracker
                    .get(k)
                    .and_then(|e| e.tree_root)
                    .filter(|r| self.trees.contains_key(r))
            };
            chain.push(classify::Link { key: k, role, tree });
            cur = self.parent_of(k, tracker);
        }
        chain
    }

    fn parent_of(&self, key: ProcKey, tracker: &Tracker) -> Option<ProcKey> {
        tracker.get(key).and_then(|e| e.parent).or_else(|| {
            let info = self.infos.get(&key)?;
            procscan::read_key(&self.proc_root, info.ppid)
        })
    }

    fn add_tree(&mut self, root: ProcKey, tracker: &Tracker, ebpf: Option<&mut EbpfSource>) {
        let parent = self.parent_of(root, tracker).filter(|p| p.tgid > 1);
        let host_rule = parent
            .and_then(|p| {
                self.hosts
                    .get(&p)
                    .or_else(|| self.relays.get(&p))
                    .cloned()
                    .or_else(|| {
                        let info = self.info_or_read(p)?;
                        self.config
                            .classify_relay(&view(&info))
                            .map(|r| r.name.clone())
                    })
            })
            .or_else(|| self.config.generic_host().map(|r| r.name.clone()))
            .unwrap_or_else(|| "unknown".into());
        // Watch the root and whatever it already forked, so lineage holds
        // from here on even for members that later call setsid. Members
        // known to have exited are not written: a watch for a dead process
        // would be inherited by the next process given its PID (the source
        // checks each one is alive as well).
        if let Some(src) = ebpf {
            let mut members = vec![root];
            members.extend(tracker.descendants(root));
            // The processes known from /proc (all of them while seeding;
            // else the tracked ones: the tracker's lineage covers the rest).
            if self.infos.contains_key(&root) {
                members.extend(trees::members_of(root, self.infos.values()));
            }
            members.retain(|m| tracker.get(*m).is_none_or(|e| e.is_live()));
            members.sort();
            members.dedup();
            for m in members {
                self.watch_member(src, m, root);
            }
        }
        let cmdlines: Vec<Vec<String>> = self
            .infos
            .get(&root)
            .map(|i| vec![i.cmdline.clone()])
            .unwrap_or_default();
        let refs: Vec<&[String]> = cmdlines.iter().map(Vec::as_slice).collect();
        let server = self
            .config
            .bounded_label(crate::config::server_identity(&refs, &self.config));
        let session_vars: Vec<String> = self
            .config
            .host_rules()
            .iter()
            .flat_map(|h| h.session_env.iter().cloned())
            .collect();
        let session_id = trees::session_from_env(&self.proc_root, root.tgid, &session_vars);
        info!(root = %root, server = %server, host = ?parent.map(|p| p.tgid), "tree discovered");
        // The same host starting the same server again within the window,
        // after the previous one ended, is a respawn (a loop is alertable).
        let now = Instant::now();
        self.starts
            .retain(|(_, _, t)| now.duration_since(*t) < RESPAWN_WINDOW);
        let again = self.starts.iter().any(|(h, srv, _)| {
            *h == parent
                && *srv == server
                && !self
                    .trees
                    .values()
                    .any(|t| t.host == parent && t.server == server)
        });
        if again {
            self.respawns.push((host_rule.clone(), server.clone()));
        }
        // Only the latest start of a (host, server) pair counts.
        self.starts
            .retain(|(h, srv, _)| !(*h == parent && *srv == server));
        self.starts.push((parent, server.clone(), now));
        self.trees.insert(
            root,
            TreeRecord::new(root, server, parent, host_rule, session_id),
        );
        self.recheck.insert(root);
    }

    /// Live members of a tree by lineage: the kernel's tree marks, fork
    /// descendants (through reparenting and setsid), and the root.
    pub fn members(&self, root: ProcKey, tracker: &Tracker) -> Vec<ProcKey> {
        let mut m: Vec<ProcKey> = tracker.tree_members(root);
        m.extend(tracker.descendants(root));
        m.push(root);
        m.retain(|k| tracker.get(*k).is_none_or(|e| e.is_live()));
        m.retain(|k| procscan::is_alive(&self.proc_root, *k));
        m.sort();
        m.dedup();
        m
    }

    /// Re-checks one tree's ownership now. Returns false when the tree
    /// ended by itself (nothing of it is left) and was forgotten.
    pub fn check(&mut self, root: ProcKey, tracker: &Tracker) -> bool {
        let members = self.members(root, tracker);
        if members.is_empty() {
            if self.events_caught_up(root) {
                info!(root = %root, "tree ended by itself");
                self.forget(root);
                return false;
            }
            // Fork records of members that double-forked may still be on
            // their way: keep the tree until the source has caught up.
            return true;
        }
        self.empty_since.remove(&root);
        let Some(rec) = self.trees.get(&root) else {
            return false;
        };
        let member_pids: HashSet<u32> = members.iter().map(|k| k.tgid).collect();
        let candidates: Vec<u32> = rec.host.iter().map(|h| h.tgid).collect();
        let lineage = self.lineage_fds(&rec.host_rule);
        let relay_of = |k: ProcKey| self.relay_ctl(k);
        let root_alive = members.contains(&root);
        let stdio: Vec<(u32, StdioLink)> = if root_alive {
            STDIO_FDS
                .iter()
                .filter_map(|&fd| Some((fd, stdio_link(&self.proc_root, root.tgid, fd)?)))
                .collect()
        } else {
            Vec::new()
        };
        let mut chain_seen: Vec<ProcKey> = Vec::new();
        let mut released_link = None;
        // Fast path for a tree already known live over a UNIX socket: the
        // kernel's record of the root's end still names a peer and no
        // shutdown, and an owner outside the tree recorded at the last full
        // check still holds that very peer (same process, fd and inode), so
        // nothing was released. A peer that is still there but no longer
        // held by a recorded owner (handed over, or left only to the tree's
        // own members) gets the full walk.
        // A released tree always gets the full walk: its confirmation needs
        // to know who holds the far end, not only that someone does.
        let still_held = root_alive
            && rec.released_by.is_empty()
            && rec.state == TreeState::Live
            && !rec.owners_seen.is_empty()
            && rec.chain.is_empty()
            && match stdio.first() {
                Some((0, StdioLink::Socket(ino))) => {
                    ownership::unix_socket(u32::try_from(*ino).unwrap_or(u32::MAX))
                        .ok()
                        .flatten()
                        .is_some_and(|info| {
                            info.shutdown == 0
                                && info.peer_inode.is_some_and(|peer| {
                                    crate::trees::still_holds(
                                        &rec.owner_fds,
                                        u64::from(peer),
                                        &self.proc_root,
                                    )
                                })
                        })
                }
                _ => false,
            };
        let (mut state, mut reason, mut owners) = if still_held {
            (TreeState::Live, None, Vec::new())
        } else if root_alive {
            let own = ownership::stdio_owner(root, &member_pids, &candidates, &self.proc_root);
            let refined = own
                .state
                .clone()
                .with_previous_owners(&rec.owners_seen, &self.proc_root);
            let host_gone = rec
                .host
                .is_some_and(|h| !procscan::is_alive(&self.proc_root, h));
            match &refined {
                OwnerState::Held { owners } => {
                    // Follow relay and anchor hops up to the session owner:
                    // the tree's state is the top owner's.
                    match chain::follow(owners, &member_pids, &relay_of, &self.proc_root) {
                        ChainEnd::Held { chain, owners: top } => {
                            if chain.len() > 1 {
                                chain_seen = chain;
                            }
                            let mut all = owners.clone();
                            if chain_seen.len() > 1 {
                                all.extend(top);
                            }
                            (TreeState::Live, None, all)
                        }
                        ChainEnd::Released { chain, link } => {
                            chain_seen = chain;
                            released_link = Some(link);
                            (
                                TreeState::Orphaned,
                                Some(format!("{} (relay)", ownership::PEER_RELEASED)),
                                owners.clone(),
                            )
                        }
                        ChainEnd::Unknown { chain, reason } => {
                            chain_seen = chain;
                            (TreeState::Unknown, Some(reason.to_string()), owners.clone())
                        }
                    }
                }
                other => {
                    let (s, r) = trees::classify(other, host_gone);
                    if s == TreeState::Orphaned {
                        released_link = Some(root);
                    }
                    (s, r, Vec::new())
                }
            }
        } else {
            // The root is gone; what is left is a remnant unless some
            // member still holds a link to a live owner (`remnant`).
            let (state, reason, held, chain) =
                self.remnant_check(&members, &member_pids, &candidates, &lineage);
            if chain.len() > 1 {
                chain_seen = chain;
            }
            (state, reason, held)
        };
        // Lineage fds (per host rule) are ownership links too: a member
        // holding one whose far end leads to a live owner keeps the tree.
        if root_alive && state == TreeState::Orphaned && !lineage.is_empty() {
            for m in &members {
                match chain::fd_links(
                    *m,
                    &lineage,
                    &member_pids,
                    &candidates,
                    &relay_of,
                    &self.proc_root,
                ) {
                    Link::Owner(ChainEnd::Held { chain, owners: o }) => {
                        if chain.len() > 1 {
                            chain_seen = chain;
                        }
                        state = TreeState::Live;
                        reason = None;
                        released_link = None;
                        owners = o;
                        break;
                    }
                    Link::Owner(_) | Link::Unknown(_) => {
                        state = TreeState::Unknown;
                        reason = Some("lineage-unproven".into());
                        released_link = None;
                    }
                    Link::None | Link::Released => {}
                }
            }
        }
        // A host's `release` stands only while nobody but the processes it
        // covers holds the far end (relay hops are the host's side).
        let holders: Vec<ProcKey> = owners
            .iter()
            .map(|o| o.key)
            .filter(|k| !chain_seen.contains(k) && !self.trees[&root].chain.contains(k))
            .collect();
        let judged = judge_release(&self.trees[&root].released_by, state, reason, &holders);
        let (keep_release, withdrawn_by) = (judged.keep, judged.withdrawn_by);
        (state, reason) = (judged.state, judged.reason);
        if let Some(other) = withdrawn_by {
            info!(root = %root, holder = %other, "release withdrawn: another process holds the far end");
        }
        // Heuristics, for live trees only: silent for longer than
        // `idle_after` is `idle`; idle while a newer tree of the same
        // server under the same host is in use is `superseded`.
        if state == TreeState::Live {
            let reads: u64 = members
                .iter()
                .filter_map(|m| crate::activity::io_chars(&self.proc_root, m.tgid))
                .sum();
            let idle_for = self.activity.sample(root, reads, Instant::now());
            self.idle_for.insert(root, idle_for);
            if idle_for >= self.config.policy.idle_after {
                state = TreeState::Suspect;
                let rec = &self.trees[&root];
                let newer_in_use = self.trees.values().any(|t| {
                    t.root != root
                        && t.host == rec.host
                        && t.server == rec.server
                        && t.root.start_ticks > root.start_ticks
                        && t.state == TreeState::Live
                });
                reason = Some(if newer_in_use { "superseded" } else { "idle" }.into());
            }
        } else {
            self.idle_for.remove(&root);
        }
        let Some(rec) = self.trees.get_mut(&root) else {
            return false;
        };
        let newly_orphaned =
            state == TreeState::Orphaned && (rec.orphan_since.is_none() || rec.reason != reason);
        if state == TreeState::Orphaned {
            if newly_orphaned {
                rec.orphan_since = Some(Instant::now());
            }
        } else if state == TreeState::Suspect {
            // A suspicion's clock starts when it is first raised.
            if rec.state != TreeState::Suspect || rec.reason != reason {
                rec.orphan_since = Some(Instant::now());
            }
        } else {
            rec.orphan_since = None;
        }
        if !owners.is_empty() {
            for o in &owners {
                if !rec.owners_seen.contains(o) {
                    rec.owners_seen.push(*o);
                    // Whoever holds a tree's far end is its host for the
                    // kernel too: its closes are what end the session.
                    self.owner_hosts.push(o.key);
                }
            }
            rec.owner_fds = owners
                .iter()
                .map(|h| OwnerFd::observe(h, &self.proc_root))
                .collect();
            rec.owner_fds.sort();
            rec.owner_fds.dedup();
        }
        if !chain_seen.is_empty() {
            // The session owner is the chain's top, not the nearest hop.
            if state == TreeState::Live
                && let Some(top) = chain_seen.first()
            {
                rec.host = Some(*top);
            }
            rec.chain = chain_seen;
        }
        rec.released_link = released_link;
        if !keep_release {
            rec.released_by.clear();
        }
        rec.state = state;
        rec.reason = reason;
        // Kept once the root is gone: a reap without the kernel's lineage
        // finds escapees by the stdio they inherited from the root.
        if !stdio.is_empty() {
            rec.stdio_inodes = stdio.iter().map(|(_, l)| l.inode()).collect();
            rec.stdio_inodes.dedup();
        }
        if newly_orphaned {
            self.detected.push((rec.clone(), members));
        }
        true
    }

    /// The evidence and verdict for a tree whose root is gone: each
    /// member's stdin, stdout and lineage fds (`remnant::member_hold`).
    /// Returns the state, its reason, the owners holding the tree and the
    /// relay chain they were reached through.
    fn remnant_check(
        &self,
        members: &[ProcKey],
        member_pids: &HashSet<u32>,
        candidates: &[u32],
        lineage: &[u32],
    ) -> (TreeState, Option<String>, Vec<FdHolder>, Vec<ProcKey>) {
        let relay_of = |k: ProcKey| self.relay_ctl(k);
        let mut held = Vec::new();
        let mut chain_seen = Vec::new();
        let mut holds = Vec::new();
        for m in members {
            let mut links = [&[0][..], &[1][..], lineage].map(|fds| {
                chain::fd_links(*m, fds, member_pids, candidates, &relay_of, &self.proc_root)
            });
            let [stdin, stdout, lin] = links.each_ref().map(remnant::Hold::from);
            if stdin == remnant::Hold::Released {
                links[1] = Link::Released; // the host ended its input
            }
            let hold = remnant::member_hold(stdin, stdout, lin);
            if hold == remnant::Hold::Held {
                for link in links {
                    if let Link::Owner(ChainEnd::Held { chain, owners }) = link {
                        if chain.len() > 1 && chain_seen.is_empty() {
                            chain_seen = chain;
                        }
                        held.extend(owners);
                    }
                }
            }
            holds.push(hold);
        }
        let (state, reason) = remnant::verdict(&holds);
        if state != TreeState::Live {
            held.clear();
        }
        (state, reason, held, chain_seen)
    }

    /// When the next follow-up check after a close is due, if any.
    pub fn next_followup(&self) -> Option<Instant> {
        self.followups.iter().map(|&(due, _)| due).min()
    }

    /// Whether an event asked for a check that has not run yet.
    pub fn has_due_checks(&self) -> bool {
        !self.recheck.is_empty()
    }

    /// Marks trees orphaned by the owner's own word (`release`), each with
    /// the processes the release covers. Every later check re-confirms it
    /// (`judge_release`), the one right before a reap included.
    pub fn release(&mut self, released: &[crate::release::Released]) {
        for r in released {
            if let Some(rec) = self.trees.get_mut(&r.root) {
                rec.state = TreeState::Orphaned;
                rec.reason = Some(SESSION_ENDED.into());
                rec.orphan_since = Some(Instant::now());
                rec.released_by.clone_from(&r.by);
                self.detected.push((rec.clone(), Vec::new()));
                self.recheck.insert(r.root);
            }
        }
    }

    /// Queues the next reconcile batch for the coming `tick`. The reconcile
    /// re-checks every tree once per interval, a batch per timer tick, so a
    /// host with hundreds of trees never stalls the loop that handles the
    /// event-driven checks (those ticks do not call this).
    pub fn reconcile_step(&mut self) {
        let now = Instant::now();
        if self.reconcile_queue.is_empty()
            && now.duration_since(self.last_reconcile) >= self.reconcile_interval
        {
            self.last_reconcile = now;
            self.reconcile_queue.extend(self.trees.keys().copied());
        }
        for _ in 0..RECONCILE_BATCH {
            let Some(root) = self.reconcile_queue.pop_front() else {
                break;
            };
            self.recheck.insert(root);
        }
    }

    /// Runs due checks and returns what to do. `degraded`: the tracker has
    /// unreconciled losses (nothing is enforced then).
    pub fn tick(&mut self, tracker: &Tracker, degraded: bool) -> Vec<Action> {
        let now = Instant::now();
        // Follow-ups that are due, for trees not already judged orphaned.
        let trees = &self.trees;
        let recheck = &mut self.recheck;
        self.followups.retain(|&(due, root)| {
            if due > now {
                return true;
            }
            if trees
                .get(&root)
                .is_some_and(|t| t.state != TreeState::Orphaned && !t.reaping)
            {
                recheck.insert(root);
            }
            false
        });
        // Relays that exited (their process info is dropped on exit).
        let infos = &self.infos;
        self.relays.retain(|k, _| infos.contains_key(k));
        let due: Vec<ProcKey> = self.recheck.drain().collect();
        for root in due {
            if self.trees.get(&root).is_some_and(|t| !t.reaping) {
                self.check(root, tracker);
            }
        }
        let mut actions = Vec::new();
        let roots: Vec<ProcKey> = self.trees.keys().copied().collect();
        for root in roots {
            let Some(rec) = self.trees.get(&root) else {
                continue;
            };
            // A tree with nothing alive waits for the source to catch up
            // (`events_caught_up`): nothing to decide, and nothing to reap.
            if rec.reaping || self.empty_since.contains_key(&root) {
                continue;
            }
            let facts = Facts {
                reason: rec
                    .reason
                    .as_deref()
                    .and_then(policy::parse_reason)
                    .filter(|_| matches!(rec.state, TreeState::Orphaned | TreeState::Suspect)),
                orphaned_for: rec
                    .orphan_since
                    .map_or(Duration::ZERO, |t| now.duration_since(t)),
                degraded,
            };
            let decision = policy::decide(&self.config.policy, facts);
            if decision == Decision::None || decision == Decision::Wait {
                if let Some(rec) = self.trees.get_mut(&root) {
                    rec.last_decision = Some(decision);
                }
                continue;
            }
            // Confirm once more, right before acting: a host's `release`
            // too, since the far end may have changed hands since. An
            // orphan must still be orphaned; a suspicion an operator chose
            // to enforce (idle, superseded) must still be that suspicion.
            if decision == Decision::Enforce {
                let (was_state, was_reason) = (rec.state, rec.reason.clone());
                if !self.check(root, tracker)
                    || self.empty_since.contains_key(&root)
                    || self
                        .trees
                        .get(&root)
                        .is_none_or(|t| !still_confirmed(was_state, was_reason.as_deref(), t))
                {
                    continue;
                }
            }
            let members = self.members(root, tracker);
            let Some(rec) = self.trees.get_mut(&root) else {
                continue;
            };
            let changed = rec.last_decision != Some(decision);
            rec.last_decision = Some(decision);
            if decision == Decision::Enforce {
                rec.reaping = true;
            } else if !changed {
                continue; // observe / dry-run / hold: report once per change
            }
            actions.push(Action {
                root,
                decision,
                record: rec.clone(),
                members,
            });
        }
        actions
    }

    /// The reap of `root` finished: forget the tree if it is gone.
    pub fn reaped(&mut self, root: ProcKey, tracker: &Tracker) {
        if let Some(rec) = self.trees.get_mut(&root) {
            rec.reaping = false;
        }
        if self.members(root, tracker).is_empty() && self.events_caught_up(root) {
            self.forget(root);
        } else {
            self.recheck.insert(root);
        }
    }

    /// The tree table to keep across a restart (`persist`): every tree
    /// with its live members by the tracker's lineage (no /proc reads).
    pub fn saved_table(&self, tracker: &Tracker) -> crate::persist::SavedTable {
        let trees = self
            .trees
            .values()
            .map(|t| {
                let mut members = tracker.tree_members(t.root);
                members.extend(tracker.descendants(t.root));
                members.push(t.root);
                members.retain(|k| tracker.get(*k).is_some_and(|e| e.is_live()));
                crate::persist::SavedTree {
                    root: t.root,
                    host: t.host,
                    host_rule: t.host_rule.clone(),
                    server: t.server.clone(),
                    members,
                }
            })
            .collect();
        crate::persist::SavedTable::new(trees)
    }

    /// Takes back the trees a previous run saved (already verified against
    /// /proc): each live member is adopted into its tree (and watched in
    /// the kernel), and a tree this run has not found (its root exited
    /// while the daemon was down) is known again, to be judged like any
    /// other: a remnant when nobody holds what its members hold.
    pub fn restore(
        &mut self,
        saved: Vec<crate::persist::SavedTree>,
        tracker: &mut Tracker,
        mut ebpf: Option<&mut EbpfSource>,
    ) {
        for t in saved {
            let root = t.root;
            for &m in &t.members {
                tracker.adopt(m, root);
                if let Some(src) = ebpf.as_deref_mut() {
                    self.watch_member(src, m, root);
                }
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = self.trees.entry(root) {
                info!(root = %root, members = t.members.len(), "tree restored from the previous run's table");
                slot.insert(TreeRecord::new(root, t.server, t.host, t.host_rule, None));
            }
            self.recheck.insert(root);
        }
    }

    /// The event source waits to be caught up before a tree with no member
    /// left is forgotten (the eBPF tier, whose records may be queued).
    pub fn wait_for_drain_marks(&mut self) {
        self.drain_marks = true;
    }

    /// Every kernel record made before `ns` (boot time) has been applied.
    pub fn drained_to(&mut self, ns: u64) {
        self.drained_ns = self.drained_ns.max(ns);
        // Trees waiting for it are checked again.
        let drained = self.drained_ns;
        let ready: Vec<ProcKey> = self
            .empty_since
            .iter()
            .filter(|&(_, &since)| drained >= since)
            .map(|(r, _)| *r)
            .collect();
        self.recheck.extend(ready);
    }

    /// Whether a tree `root` that shows no member may be forgotten: at once
    /// in the tiers without queued records; in the eBPF tier only once a
    /// drain mark newer than the first look that found it empty has been
    /// applied, so that a fork made before that look (a member that double
    /// forked) has been seen.
    fn events_caught_up(&mut self, root: ProcKey) -> bool {
        if !self.drain_marks {
            return true;
        }
        let Some(now) = crate::identity::boottime_ns() else {
            return true;
        };
        let since = *self.empty_since.entry(root).or_insert(now);
        self.drained_ns >= since
    }

    /// Drops a tree that has nothing left; the watches written for it are
    /// handed to `take_unwatch`.
    fn forget(&mut self, root: ProcKey) {
        self.trees.remove(&root);
        self.empty_since.remove(&root);
        self.idle_for.remove(&root);
        self.activity.forget(root);
        self.unwatch
            .extend(self.watched.remove(&root).unwrap_or_default());
    }

    /// Writes the kernel's watch for `member` of the tree rooted at `root`.
    /// A watch that cannot be written is a gap in lineage (`take_gaps`).
    fn watch_member(&mut self, src: &mut EbpfSource, member: ProcKey, root: ProcKey) {
        match src.watch_member(member, root) {
            Ok(Watched::Added) => {
                self.watched.entry(root).or_default().insert(member);
            }
            Ok(Watched::Gone) => debug!("not watching {member}: it has exited"),
            Err(e) => {
                warn!("cannot watch {member} of tree {root}: {e:#}");
                self.gaps.push(e.cause());
            }
        }
    }

    /// Writes the watches a resync finds missing: each host's, and each
    /// live member's of every tree, where the kernel holds no entry naming
    /// that process (a fork the map had no room for, a watch that failed).
    pub fn rewatch(&mut self, tracker: &Tracker, src: &mut EbpfSource) {
        let names = |src: &EbpfSource, k: ProcKey| {
            src.watched(k.tgid)
                .is_some_and(|e| ProcKey::from_kernel(k.tgid, e.self_start_ns) == k)
        };
        let hosts: Vec<ProcKey> = self.hosts.keys().copied().collect();
        for h in hosts {
            if !names(src, h)
                && let Err(e) = src.watch_host(h)
            {
                warn!("cannot watch host {h}: {e:#}");
                self.gaps.push(e.cause());
            }
        }
        let roots: Vec<ProcKey> = self.trees.keys().copied().collect();
        for root in roots {
            for m in self.members(root, tracker) {
                if !names(src, m) {
                    self.watch_member(src, m, root);
                }
            }
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
    pub fn watch_links(&self) -> Vec<(ProcKey, Vec<crate::stdin_watch::Link>)> {
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
    fn relay_ctl(&self, key: ProcKey) -> Option<Vec<u32>> {
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
    fn lineage_fds(&self, rule: &str) -> Vec<u32> {
        self.config
            .host_rules()
            .iter()
            .find(|h| h.name == rule)
            .map(|h| h.lineage_fds.clone())
            .unwrap_or_default()
    }
}

/// Whether a fresh check (`now`) still confirms the verdict a decision to
/// enforce was made on (`state`, `reason`): an orphan is still orphaned
/// (for any ground-truth reason); a suspicion is still the same suspicion.
fn still_confirmed(state: TreeState, reason: Option<&str>, now: &TreeRecord) -> bool {
    match state {
        TreeState::Orphaned => now.state == TreeState::Orphaned,
        TreeState::Suspect => now.state == TreeState::Suspect && now.reason.as_deref() == reason,
        TreeState::Live | TreeState::Unknown => false,
    }
}

/// The reason of a tree its host declared over (`release`).
pub const SESSION_ENDED: &str = "session-ended";

/// A check's verdict once a host's `release` has been weighed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseJudgement {
    pub state: TreeState,
    pub reason: Option<String>,
    /// The release still stands (keep `released_by`).
    pub keep: bool,
    /// The release was withdrawn because this process holds the far end.
    pub withdrawn_by: Option<ProcKey>,
}

/// Weighs a host's `release` (`released_by`: the processes it covers)
/// against a fresh check (`state`, `reason`) and the processes outside the
/// tree and its relay chain that hold the far end now (`holders`).
///
/// - No release: the check's verdict, unchanged.
/// - The check found the far end released (orphaned): that verdict, and the
///   release stands.
/// - Held only by processes the release covers: `session-ended`.
/// - Held by anyone else (the end was handed over, or a reused fd number
///   named the wrong tree): the release is withdrawn, the check's verdict
///   stands.
/// - The check could not tell, or found a holder it could not name: `unknown`
///   (never reaped), and the release waits for evidence.
pub fn judge_release(
    released_by: &[ProcKey],
    state: TreeState,
    reason: Option<String>,
    holders: &[ProcKey],
) -> ReleaseJudgement {
    let keep = |state, reason| ReleaseJudgement {
        state,
        reason,
        keep: true,
        withdrawn_by: None,
    };
    if released_by.is_empty() {
        return ReleaseJudgement {
            state,
            reason,
            keep: false,
            withdrawn_by: None,
        };
    }
    match state {
        TreeState::Orphaned => keep(state, reason),
        TreeState::Live | TreeState::Suspect => {
            if let Some(other) = holders.iter().find(|h| !released_by.contains(h)) {
                ReleaseJudgement {
                    state,
                    reason,
                    keep: false,
                    withdrawn_by: Some(*other),
                }
            } else if holders.is_empty() {
                keep(
                    TreeState::Unknown,
                    Some(format!("{SESSION_ENDED}-unconfirmed")),
                )
            } else {
                keep(TreeState::Orphaned, Some(SESSION_ENDED.into()))
            }
        }
        TreeState::Unknown => keep(
            TreeState::Unknown,
            Some(format!(
                "{SESSION_ENDED}-unconfirmed: {}",
                reason.as_deref().unwrap_or("unknown")
            )),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(root: u32, owner: (u32, u32), session: Option<&str>) -> TreeRecord {
        TreeRecord {
            root: ProcKey::new(root, 1),
            server: "s".into(),
            host: Some(ProcKey::new(owner.0, 1)),
            host_rule: "h".into(),
            session_id: session.map(str::to_string),
            owner_fds: vec![OwnerFd {
                pid: owner.0,
                start_ticks: 1,
                fd: owner.1,
                inode: 0,
            }],
            released_by: vec![],
            state: TreeState::Live,
            reason: None,
            orphan_since: None,
            owners_seen: vec![],
            stdio_inodes: vec![],
            chain: vec![],
            released_link: None,
            reaping: false,
            last_decision: None,
        }
    }

    #[test]
    fn a_tree_waiting_for_queued_records_is_neither_reaped_nor_forgotten_early() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            Config::from_toml_str("presets = []\n[policy]\ngrace = \"0s\"\n", "t").unwrap();
        let mut s = Supervisor::new(Arc::new(config), dir.path().into());
        s.wait_for_drain_marks();
        let tracker = Tracker::new(1024);
        let mut t = record(10, (1, 5), None);
        t.state = TreeState::Orphaned;
        t.reason = Some("peer-released".into());
        t.orphan_since = Some(Instant::now() - Duration::from_secs(60));
        s.trees.insert(t.root, t);
        s.recheck.insert(ProcKey::new(10, 1));
        // Nothing of it is alive in this /proc, but no drain mark has come:
        // kept, and not enforced (it used to be reaped again and again).
        for _ in 0..3 {
            assert!(s.tick(&tracker, false).is_empty());
            assert!(s.tree(ProcKey::new(10, 1)).is_some());
        }
        // A mark newer than the first empty look: forgotten, still no reap.
        s.drained_to(u64::MAX);
        assert!(s.tick(&tracker, false).is_empty());
        assert!(s.tree(ProcKey::new(10, 1)).is_none());
    }

    #[test]
    fn enforcing_needs_the_same_verdict_on_the_last_look() {
        let mut now = record(10, (1, 5), None);
        let cases = [
            // (decided on, now, confirmed)
            (
                (TreeState::Orphaned, Some("peer-released")),
                (TreeState::Orphaned, Some("host-exited")),
                true,
            ),
            (
                (TreeState::Orphaned, Some("peer-released")),
                (TreeState::Live, None),
                false,
            ),
            (
                (TreeState::Orphaned, Some("peer-released")),
                (TreeState::Unknown, Some("scan-incomplete")),
                false,
            ),
            (
                (TreeState::Suspect, Some("idle")),
                (TreeState::Suspect, Some("idle")),
                true,
            ),
            (
                (TreeState::Suspect, Some("superseded")),
                (TreeState::Suspect, Some("superseded")),
                true,
            ),
            // Used again since the decision, or the newer tree went idle.
            (
                (TreeState::Suspect, Some("idle")),
                (TreeState::Live, None),
                false,
            ),
            (
                (TreeState::Suspect, Some("superseded")),
                (TreeState::Suspect, Some("idle")),
                false,
            ),
            (
                (TreeState::Suspect, Some("idle")),
                (TreeState::Unknown, Some("x")),
                false,
            ),
            ((TreeState::Live, None), (TreeState::Live, None), false),
            (
                (TreeState::Unknown, None),
                (TreeState::Orphaned, Some("remnant")),
                false,
            ),
        ];
        for ((was, was_reason), (is, is_reason), want) in cases {
            now.state = is;
            now.reason = is_reason.map(str::to_string);
            assert_eq!(
                still_confirmed(was, was_reason, &now),
                want,
                "{was:?} {was_reason:?} -> {is:?} {is_reason:?}"
            );
        }
    }

    #[test]
    fn a_release_stands_only_while_nobody_else_holds_the_far_end() {
        let host = ProcKey::new(7, 100);
        let helper = ProcKey::new(8, 120);
        let recycled = ProcKey::new(7, 500);
        let r = |s: &str| Some(s.to_string());
        let orphaned = (TreeState::Orphaned, r(SESSION_ENDED), true, None);
        let cases = [
            // Not released: the check's verdict, whatever it is.
            (
                vec![],
                TreeState::Live,
                None,
                vec![host],
                (TreeState::Live, None, false, None),
            ),
            // Released, held only by the host that said so.
            (
                vec![host],
                TreeState::Live,
                None,
                vec![host],
                orphaned.clone(),
            ),
            (
                vec![host],
                TreeState::Suspect,
                r("idle"),
                vec![host],
                orphaned.clone(),
            ),
            // The end was handed to a helper: withdrawn.
            (
                vec![host],
                TreeState::Live,
                None,
                vec![host, helper],
                (TreeState::Live, None, false, Some(helper)),
            ),
            (
                vec![host],
                TreeState::Live,
                None,
                vec![helper],
                (TreeState::Live, None, false, Some(helper)),
            ),
            // A recycled PID is another process: withdrawn.
            (
                vec![host],
                TreeState::Live,
                None,
                vec![recycled],
                (TreeState::Live, None, false, Some(recycled)),
            ),
            // The kernel says the far end is gone: orphaned by its reason.
            (
                vec![host],
                TreeState::Orphaned,
                r("peer-released"),
                vec![],
                (TreeState::Orphaned, r("peer-released"), true, None),
            ),
            // Evidence incomplete: unknown, never reaped; the release waits.
            (
                vec![host],
                TreeState::Unknown,
                r("scan-incomplete"),
                vec![],
                (
                    TreeState::Unknown,
                    r("session-ended-unconfirmed: scan-incomplete"),
                    true,
                    None,
                ),
            ),
            (
                vec![host],
                TreeState::Live,
                None,
                vec![],
                (
                    TreeState::Unknown,
                    r("session-ended-unconfirmed"),
                    true,
                    None,
                ),
            ),
        ];
        for (by, state, reason, holders, want) in cases {
            let got = judge_release(&by, state, reason.clone(), &holders);
            assert_eq!(
                (got.state, got.reason, got.keep, got.withdrawn_by),
                want,
                "{by:?} {state:?} {reason:?} {holders:?}"
            );
        }
    }

    fn close(inode: u64, peer_inode: u64, kind: CloseKind) -> ProcessEvent {
        ProcessEvent::Close {
            key: ProcKey::new(1, 1),
            fd: 9,
            inode,
            peer_inode,
            kind,
            last_ref: true,
            via_dup: false,
            via_release: false,
            ktime_ns: 0,
        }
    }

    #[test]
    fn a_close_rechecks_only_the_tree_whose_stdio_it_names() {
        let mut t = record(10, (1, 5), None);
        t.stdio_inodes = vec![100, 200];
        let sock = |ino, peer| close(ino, peer, CloseKind::UnixSocket);
        let pipe = |ino| {
            close(
                ino,
                0,
                CloseKind::Pipe {
                    write_end: true,
                    ends: 1,
                },
            )
        };
        // The host's end of the tree's socket: its peer is the tree's stdin.
        assert!(close_may_release(&sock(99, 100), &t));
        assert!(close_may_release(&sock(99, 200), &t));
        // Another socket of the host, and one whose peer is already gone.
        assert!(!close_may_release(&sock(100, 300), &t));
        assert!(!close_may_release(&sock(98, 0), &t));
        // A pipe is the same inode on both ends.
        assert!(close_may_release(&pipe(200), &t));
        assert!(!close_may_release(&pipe(201), &t));
        // close_range did not look at files: every tree of the host.
        assert!(close_may_release(
            &close(0, 0, CloseKind::Range { last_fd: 20 }),
            &t
        ));
        // A relay chain: the host closes its own link, not the tree's.
        let mut chained = t.clone();
        chained.chain = vec![ProcKey::new(1, 1), ProcKey::new(2, 1)];
        assert!(close_may_release(&sock(5, 6), &chained));
        // Not checked yet: stdio unknown, so any close may be the one.
        let mut fresh = t.clone();
        fresh.stdio_inodes.clear();
        assert!(close_may_release(&pipe(7), &fresh));
    }

    #[test]
    fn stdio_links_are_read_from_proc_fd_text() {
        assert_eq!(
            StdioLink::parse("socket:[4242]"),
            Some(StdioLink::Socket(4242))
        );
        assert_eq!(StdioLink::parse("pipe:[17]"), Some(StdioLink::Pipe(17)));
        for other in ["/dev/null", "anon_inode:[eventfd]", "socket:[x]", "pipe:[1"] {
            assert_eq!(StdioLink::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_close_that_names_a_tree_schedules_a_check_now_and_two_follow_ups() {
        let mut s = Supervisor::new(Arc::new(Config::default()), "/proc".into());
        let tracker = Tracker::new(1024);
        let mut t = record(10, (1, 5), None);
        t.stdio_inodes = vec![100];
        s.trees.insert(t.root, t);
        let before = Instant::now();
        // Another socket of the same host: nothing to do.
        s.observe(&close(98, 300, CloseKind::UnixSocket), &tracker);
        assert!(!s.has_due_checks());
        assert_eq!(s.next_followup(), None);
        // The tree's own socket.
        s.observe(&close(99, 100, CloseKind::UnixSocket), &tracker);
        assert!(s.recheck.contains(&ProcKey::new(10, 1)));
        let dues: Vec<Duration> = s
            .followups
            .iter()
            .map(|&(due, root)| {
                assert_eq!(root, ProcKey::new(10, 1));
                due.duration_since(before)
            })
            .collect();
        assert_eq!(dues.len(), CLOSE_FOLLOWUPS.len());
        for (due, delay) in dues.iter().zip(CLOSE_FOLLOWUPS) {
            assert!(*due >= delay, "{due:?} < {delay:?}");
        }
        assert!(
            s.next_followup()
                .is_some_and(|d| d >= before + CLOSE_FOLLOWUPS[0])
        );
    }
}
