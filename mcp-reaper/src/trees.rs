//! MCP trees: which server trees exist, who owns each, and their state.
//!
//! Owns: grouping processes into MCP trees (a root the host spawned plus
//! every descendant), naming the host and session that own each tree,
//! asking `ownership` for the stdio verdict, and turning it into a tree
//! state with a reason. Also the per-tree memory (RSS and PSS) figures.
//! Must never: signal anything, or call a tree orphaned on less than the
//! kernel's word (an `Unknown` ownership stays `unknown`, never orphaned).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use serde::Serialize;

use crate::{
    classify::{self, Placement, Role},
    config::{Config, ProcView},
    identity::ProcKey,
    ownership::{
        self, FdHolder, Inode, OwnerState, StdioOwnership,
        chain::{self, ChainEnd},
        fdtable,
    },
    procscan::{self, ProcInfo},
};

/// A tree's state, as `scan` and the metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeState {
    /// Its owner holds the far end of its stdio.
    Live,
    /// Its owner let go (reason says how); a candidate for reaping.
    Orphaned,
    /// A heuristic says it may be abandoned; never reaped by default.
    Suspect,
    /// Ownership could not be established; never acted on.
    Unknown,
}

impl TreeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Orphaned => "orphaned",
            Self::Suspect => "suspect",
            Self::Unknown => "unknown",
        }
    }
}

/// The host process at the far end of a tree's stdio (or its parent).
#[derive(Clone, Debug, Serialize)]
pub struct HostView {
    pub pid: u32,
    pub start_ticks: u64,
    pub comm: String,
    /// Host rule name (a bounded label), `generic` or `unknown`.
    pub rule: String,
}

/// One member process of a tree.
#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub pid: u32,
    pub start_ticks: u64,
    pub ppid: u32,
    pub comm: String,
    /// Command line with control characters escaped.
    pub cmdline: String,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
}

/// One MCP server tree.
#[derive(Clone, Debug, Serialize)]
pub struct TreeView {
    pub root: ProcKey,
    /// Bounded server identity (e.g. `server-everything`).
    pub server: String,
    pub host: Option<HostView>,
    /// Session id from the environment, when the host passes one.
    pub session_id: Option<String>,
    /// The host fds that hold the far end of the root's stdio.
    pub owner_fds: Vec<OwnerFd>,
    /// The host side of a relay chain, owner first, then each relay or
    /// anchor hop down to the one holding the root's stdio; empty when the
    /// holder is no relay. Never part of the tree.
    pub chain: Vec<HostView>,
    /// The process whose upstream far end was released (a relay hop, or
    /// the root itself), when orphaned by a release.
    pub released_link: Option<ProcKey>,
    pub state: TreeState,
    /// Who judged `state`: `scan` (this snapshot) or `daemon` (a running
    /// daemon's view, which adds what needs history: idle, superseded,
    /// session-ended).
    pub judged_by: &'static str,
    /// Why the tree is in its state (`peer-released`, `host-exited`, ...).
    pub reason: Option<String>,
    pub age_seconds: u64,
    pub members: Vec<MemberView>,
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// The full ownership evidence.
    pub ownership: StdioOwnership,
}

/// A host fd holding the far end of a tree's stdio, named completely: the
/// process by (pid, start time), and the object by its inode, so that a
/// recycled PID or a reused fd number never stands for this holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OwnerFd {
    pub pid: u32,
    pub start_ticks: u64,
    pub fd: u32,
    /// Inode of the socket or pipe behind `fd` when it was seen; 0 when the
    /// fd could no longer be read (such an entry matches no fd-named
    /// release).
    pub inode: u64,
}

impl OwnerFd {
    /// The holder `h` as it is now: its fd's inode is read from /proc.
    pub fn observe(h: &FdHolder, proc_root: &Path) -> Self {
        let inode = fdtable::read_fd(proc_root, h.key.tgid, h.fd)
            .ok()
            .flatten()
            .and_then(|(target, _)| target.inode())
            .map_or(0, |i| match i {
                Inode::Socket(n) | Inode::Pipe(n) => n,
            });
        Self {
            pid: h.key.tgid,
            start_ticks: h.key.start_ticks,
            fd: h.fd,
            inode,
        }
    }

    pub fn key(&self) -> ProcKey {
        ProcKey::new(self.pid, self.start_ticks)
    }
}

/// Whether one of `owners` (recorded at a full check) still holds the far
/// end `peer`: that process (pid and start time) still has that fd open on
/// that inode. Two small reads per owner; no fd table is listed.
pub fn still_holds(owners: &[OwnerFd], peer: u64, proc_root: &Path) -> bool {
    owners.iter().any(|o| {
        o.inode == peer
            && fdtable::read_fd(proc_root, o.pid, o.fd)
                .ok()
                .flatten()
                .and_then(|(t, _)| t.inode())
                == Some(Inode::Socket(peer))
            && fdtable::proc_key(proc_root, o.pid) == Some(o.key())
    })
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

/// Finds the tree roots in `procs`, by `classify::place` over each
/// server's chain of parents: the root of `host -> npm exec -> sh -c ->
/// node` is `npm exec`, and a launcher above a server (`sh -c`, `env`,
/// `npx`, ...) is part of its tree, never its host. Protected processes
/// are never roots.
pub fn find_roots(procs: &[ProcInfo], config: &Config) -> Vec<ProcKey> {
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.key.tgid, p)).collect();
    let role = |p: &ProcInfo| {
        classify::role(
            config,
            &view(p),
            p.is_zombie() || config.is_protected(&view(p)),
        )
    };
    let mut roots: Vec<ProcKey> = Vec::new();
    for p in procs {
        if role(p) != Role::Server {
            continue;
        }
        let mut chain = Vec::new();
        let mut cur: Option<&ProcInfo> = Some(p);
        while let Some(c) = cur.filter(|_| chain.len() < 64) {
            chain.push(classify::Link {
                key: c.key,
                role: role(c),
                tree: None,
            });
            // A parent must be older than its child: a reused PID is not.
            cur = by_pid
                .get(&c.ppid)
                .copied()
                .filter(|pp| pp.key.tgid > 1 && pp.key.start_ticks <= c.key.start_ticks);
        }
        if let Placement::NewTree { root, .. } = classify::place(&chain)
            && !roots.contains(&root)
        {
            roots.push(root);
        }
    }
    roots.sort();
    roots
}

/// Every process below `root` by parent links (live ones only).
pub fn members_of<'a>(
    root: ProcKey,
    procs: impl IntoIterator<Item = &'a ProcInfo>,
) -> Vec<ProcKey> {
    let mut children: HashMap<u32, Vec<&ProcInfo>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = vec![root];
    let mut queue = vec![root.tgid];
    let mut seen: HashSet<u32> = HashSet::from([root.tgid]);
    while let Some(pid) = queue.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            // A child must be younger than its parent: a reused PID cannot
            // adopt another process's children.
            if c.key.start_ticks >= root.start_ticks && seen.insert(c.key.tgid) {
                out.push(c.key);
                queue.push(c.key.tgid);
            }
        }
    }
    out
}

/// Proportional set size of a process, from smaps_rollup (needs ptrace
/// access to the process: root, or the same user).
pub fn pss_bytes(proc_root: &Path, pid: u32) -> Option<u64> {
    let text =
        std::fs::read_to_string(proc_root.join(pid.to_string()).join("smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Per-process memory figures (RSS, PSS in bytes), read again only once
/// they are older than `max_age`: smaps_rollup walks every mapping of the
/// process, too costly to read for thousands of members on every metrics
/// refresh. Leak figures a few seconds old serve alerting just as well.
#[derive(Debug)]
pub struct MemoryCache {
    max_age: std::time::Duration,
    entries: HashMap<ProcKey, (std::time::Instant, u64, u64)>,
}

impl MemoryCache {
    pub fn new(max_age: std::time::Duration) -> Self {
        Self {
            max_age,
            entries: HashMap::new(),
        }
    }

    /// RSS and PSS of `key` from /proc, or from the cache while fresh. A
    /// process gone, or a PID now held by another process, reads as none.
    pub fn read(
        &mut self,
        proc_root: &Path,
        key: ProcKey,
        now: std::time::Instant,
    ) -> Option<(u64, u64)> {
        self.get_with(key, now, || {
            let info = procscan::read_process(proc_root, key.tgid).ok()?;
            (info.key == key).then(|| {
                let pss = pss_bytes(proc_root, key.tgid).unwrap_or(0);
                (info.rss_bytes, pss)
            })
        })
    }

    /// `read`'s cache logic, with the /proc read passed in.
    fn get_with(
        &mut self,
        key: ProcKey,
        now: std::time::Instant,
        read: impl FnOnce() -> Option<(u64, u64)>,
    ) -> Option<(u64, u64)> {
        if let Some(&(at, rss, pss)) = self.entries.get(&key)
            && now.saturating_duration_since(at) < self.max_age
        {
            return Some((rss, pss));
        }
        match read() {
            Some((rss, pss)) => {
                self.entries.insert(key, (now, rss, pss));
                Some((rss, pss))
            }
            None => {
                self.entries.remove(&key);
                None
            }
        }
    }

    /// Forgets every process not in `keep`.
    pub fn retain(&mut self, keep: &HashSet<ProcKey>) {
        self.entries.retain(|k, _| keep.contains(k));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The first of `names` set in the process's environment.
pub fn session_from_env(proc_root: &Path, pid: u32, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("environ")).ok()?;
    for var in raw.split(|&b| b == 0) {
        let Some(eq) = var.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (k, v) = (&var[..eq], &var[eq + 1..]);
        if names.iter().any(|n| n.as_bytes() == k) {
            // Bounded and printable: this is shown to operators, not parsed.
            let v: String = String::from_utf8_lossy(v)
                .chars()
                .filter(|c| !c.is_control())
                .take(128)
                .collect();
            return Some(v);
        }
    }
    None
}

/// Turns an ownership verdict into a state and reason. `reparented`: the
/// root's parent is no longer a host (PID 1 or a subreaper adopted it),
/// which with a released far end means the host itself went away.
pub fn classify(state: &OwnerState, reparented: bool) -> (TreeState, Option<String>) {
    match state {
        OwnerState::Held { .. } => (TreeState::Live, None),
        OwnerState::HostGone => (TreeState::Orphaned, Some("host-exited".into())),
        OwnerState::Released { .. } if reparented => {
            (TreeState::Orphaned, Some("host-exited".into()))
        }
        OwnerState::Released { reason } => (
            TreeState::Orphaned,
            Some(if *reason == ownership::PEER_RELEASED {
                "peer-released".to_string()
            } else {
                // peer-held-in-tree / peer-unheld: the host let go all the same.
                format!("peer-released ({reason})")
            }),
        ),
        OwnerState::Unknown { reason } => (TreeState::Unknown, Some((*reason).to_string())),
    }
}

/// Builds every tree from one /proc snapshot.
pub fn build(procs: &[ProcInfo], config: &Config, proc_root: &Path) -> Vec<TreeView> {
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.key.tgid, p)).collect();
    let now_ticks = uptime_ticks(proc_root);
    let session_vars: Vec<String> = config
        .host_rules()
        .iter()
        .flat_map(|h| h.session_env.iter().cloned())
        .collect();
    let mut trees = Vec::new();
    for root in find_roots(procs, config) {
        let Some(root_info) = by_pid.get(&root.tgid) else {
            continue;
        };
        let member_keys = members_of(root, procs);
        let member_pids: HashSet<u32> = member_keys.iter().map(|k| k.tgid).collect();
        let members: Vec<&ProcInfo> = member_keys
            .iter()
            .filter_map(|k| by_pid.get(&k.tgid).copied())
            .collect();
        let cmdlines: Vec<&[String]> = members.iter().map(|m| m.cmdline.as_slice()).collect();
        let server = config.bounded_label(crate::config::server_identity(&cmdlines, config));
        let parent = by_pid.get(&root_info.ppid).copied();
        let reparented = root_info.ppid <= 1
            || parent.is_some_and(|p| {
                let v = view(p);
                config.classify_host(&v).is_none()
                    && config.classify_relay(&v).is_none()
                    && config.generic_host().is_none()
            });
        let host_view = |p: &ProcInfo| HostView {
            pid: p.key.tgid,
            start_ticks: p.key.start_ticks,
            comm: p.comm.clone(),
            rule: config
                .classify_host(&view(p))
                .or_else(|| config.classify_relay(&view(p)))
                .map(|r| r.name.clone())
                .or_else(|| config.generic_host().map(|r| r.name.clone()))
                .unwrap_or_else(|| "unknown".into()),
        };
        let candidates: Vec<u32> = parent
            .filter(|_| root_info.ppid > 1)
            .map(|p| p.key.tgid)
            .into_iter()
            .collect();
        let own = ownership::stdio_owner(root, &member_pids, &candidates, proc_root);
        // A relay or anchor holding the root's stdio: follow the chain up
        // to the session's owner; the tree's state is the top owner's.
        let relay_of = |k: ProcKey| -> Option<Vec<u32>> {
            let p = by_pid.get(&k.tgid).filter(|p| p.key == k)?;
            config
                .classify_relay(&view(p))
                .map(|r| r.lineage_fds.clone())
        };
        let mut chain_keys: Vec<ProcKey> = Vec::new();
        let mut chain_top: Option<u32> = None;
        let mut chain_verdict: Option<(TreeState, Option<String>)> = None;
        let mut released_link = None;
        if let OwnerState::Held { owners } = &own.state {
            match chain::follow(owners, &member_pids, &relay_of, proc_root) {
                ChainEnd::Held { chain: c, .. } => {
                    if c.len() > 1 {
                        chain_top = c.first().map(|k| k.tgid);
                        chain_keys = c;
                    }
                }
                ChainEnd::Released { chain: c, link } => {
                    chain_keys = c;
                    released_link = Some(link);
                    chain_verdict = Some((
                        TreeState::Orphaned,
                        Some(format!("{} (relay)", ownership::PEER_RELEASED)),
                    ));
                }
                ChainEnd::Unknown { chain: c, reason } => {
                    chain_keys = c;
                    chain_verdict = Some((TreeState::Unknown, Some(reason.to_string())));
                }
            }
        }
        // The host is whoever holds the far end of the root's stdio; only
        // when nobody does is it the parent (if one is left). A server whose
        // launcher died and left it with init is still its owner's.
        let owner_pid = match &own.state {
            OwnerState::Held { owners } => chain_top.or(owners.first().map(|h| h.key.tgid)),
            _ => None,
        };
        let host = owner_pid
            .and_then(|pid| by_pid.get(&pid).copied())
            .or(parent.filter(|_| root_info.ppid > 1))
            .map(host_view);
        let (state, reason) = chain_verdict.unwrap_or_else(|| classify(&own.state, reparented));
        if released_link.is_none()
            && state == TreeState::Orphaned
            && matches!(own.state, OwnerState::Released { .. })
        {
            released_link = Some(root);
        }
        let chain_views: Vec<HostView> = chain_keys
            .iter()
            .filter_map(|k| by_pid.get(&k.tgid).copied().filter(|p| p.key == *k))
            .map(host_view)
            .collect();
        let mut owner_fds: Vec<OwnerFd> = own
            .fds
            .iter()
            .flat_map(|f| f.owners.iter().map(|h| OwnerFd::observe(h, proc_root)))
            .collect();
        owner_fds.sort();
        owner_fds.dedup();
        let session_id = session_from_env(proc_root, root.tgid, &session_vars);
        let member_views: Vec<MemberView> = members
            .iter()
            .map(|m| MemberView {
                pid: m.key.tgid,
                start_ticks: m.key.start_ticks,
                ppid: m.ppid,
                comm: m.comm.clone(),
                cmdline: procscan::display_cmdline(m),
                rss_bytes: m.rss_bytes,
                pss_bytes: pss_bytes(proc_root, m.key.tgid),
            })
            .collect();
        trees.push(TreeView {
            root,
            server,
            host,
            session_id,
            owner_fds,
            chain: chain_views,
            released_link,
            state,
            judged_by: "scan",
            reason,
            age_seconds: now_ticks.saturating_sub(root.start_ticks) / 100,
            rss_bytes: member_views.iter().map(|m| m.rss_bytes).sum(),
            pss_bytes: member_views.iter().filter_map(|m| m.pss_bytes).sum(),
            members: member_views,
            ownership: own,
        });
    }
    trees
}

/// Time since boot in clock ticks, from `uptime`.
fn uptime_ticks(proc_root: &Path) -> u64 {
    std::fs::read_to_string(proc_root.join("uptime"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0, |secs| (secs * 100.0) as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {

    #[test]
    fn memory_figures_are_read_again_only_once_stale_and_forgotten_when_gone() {
        use std::time::{Duration, Instant};
        let mut cache = MemoryCache::new(Duration::from_secs(10));
        let key = ProcKey {
            tgid: 42,
            start_ticks: 7,
        };
        let t0 = Instant::now();
        let mut reads = 0;
        let mut read = |v: Option<(u64, u64)>| {
            reads += 1;
            v
        };
        assert_eq!(
            cache.get_with(key, t0, || read(Some((100, 60)))),
            Some((100, 60))
        );
        // Fresh: no read, the cached figures.
        assert_eq!(
            cache.get_with(key, t0 + Duration::from_secs(9), || read(Some((1, 1)))),
            Some((100, 60))
        );
        // Stale: read again.
        assert_eq!(
            cache.get_with(key, t0 + Duration::from_secs(10), || read(Some((200, 90)))),
            Some((200, 90))
        );
        // Gone (or the PID reused): none, and not cached.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(cache.get_with(key, later, || read(None)), None);
        assert!(cache.is_empty());
        assert_eq!(reads, 3);
        cache.get_with(key, later, || Some((1, 1)));
        cache.retain(&HashSet::new());
        assert_eq!(cache.len(), 0);
    }

    use super::*;

    #[test]
    fn a_recorded_owner_still_holds_only_the_same_fd_on_the_same_peer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let proc_dir = p.join("7");
        std::fs::create_dir_all(proc_dir.join("fd")).unwrap();
        std::fs::write(
            proc_dir.join("stat"),
            "7 (h) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0",
        )
        .unwrap();
        std::fs::create_dir_all(proc_dir.join("fdinfo")).unwrap();
        for (fd, link) in [(5, "socket:[900]"), (6, "socket:[901]")] {
            std::os::unix::fs::symlink(link, proc_dir.join(format!("fd/{fd}"))).unwrap();
            std::fs::write(
                proc_dir.join(format!("fdinfo/{fd}")),
                "pos:\t0\nflags:\t02\n",
            )
            .unwrap();
        }
        let owner = |start, fd, inode| OwnerFd {
            pid: 7,
            start_ticks: start,
            fd,
            inode,
        };
        let cases = [
            (vec![owner(100, 5, 900)], 900, true),
            // Recorded for another peer, or the fd now holds another one.
            (vec![owner(100, 5, 900)], 901, false),
            (vec![owner(100, 6, 900)], 900, false),
            // The PID now names another process.
            (vec![owner(99, 5, 900)], 900, false),
            // Closed since.
            (vec![owner(100, 8, 900)], 900, false),
            (vec![], 900, false),
            (vec![owner(100, 8, 900), owner(100, 6, 901)], 901, true),
        ];
        for (owners, peer, want) in cases {
            assert_eq!(still_holds(&owners, peer, p), want, "{owners:?} {peer}");
        }
    }

    fn proc(pid: u32, start: u64, ppid: u32, comm: &str, args: &[&str]) -> ProcInfo {
        ProcInfo {
            key: ProcKey::new(pid, start),
            ppid,
            pgid: pid as i32,
            sid: pid as i32,
            uid: 1000,
            state: 'S',
            comm: comm.into(),
            cmdline: args.iter().map(|s| s.to_string()).collect(),
            cmdline_truncated: false,
            exe: None,
            rss_bytes: 1 << 20,
        }
    }

    fn npm_tree(base: u32, host: u32) -> Vec<ProcInfo> {
        vec![
            proc(
                base,
                500,
                host,
                "npm exec @mode",
                &[
                    "npm",
                    "exec",
                    "--offline",
                    "@modelcontextprotocol/server-everything",
                ],
            ),
            proc(
                base + 1,
                501,
                base,
                "sh",
                &["sh", "-c", "mcp-server-everything"],
            ),
            proc(
                base + 2,
                502,
                base + 1,
                "node",
                &["node", "/srv/node_modules/.bin/mcp-server-everything"],
            ),
        ]
    }

    #[test]
    fn the_npm_exec_shape_is_one_tree_rooted_at_npm_exec() {
        let config = Config::default();
        let mut procs = vec![proc(100, 10, 1, "python3", &["python3", "host.py"])];
        procs.extend(npm_tree(200, 100));
        let roots = find_roots(&procs, &config);
        assert_eq!(roots, vec![ProcKey::new(200, 500)]);
        let members = members_of(roots[0], &procs);
        assert_eq!(members.len(), 3);
    }

    /// The shape the TypeScript SDK produces (npm quotes the bin for `sh
    /// -c`; the kernel starts `#!/usr/bin/env node` scripts through env), in
    /// a snapshot: one tree rooted at `npm exec`, with or without the
    /// `generic` preset.
    #[test]
    fn the_sdk_shape_in_a_snapshot_is_one_tree_rooted_at_npm_exec() {
        for config in [
            Config::default(),
            Config::from_toml_str("presets = []", "t").unwrap(),
        ] {
            for npm in [
                "npm exec @modelcontextprotocol/server-everything",
                "/usr/bin/env node /usr/bin/npm exec --offline @modelcontextprotocol/server-everything",
                "npm",
            ] {
                let procs = vec![
                    proc(100, 10, 1, "node", &["node", "/srv/sdk_host.mjs"]),
                    proc(
                        200,
                        500,
                        100,
                        "npm exec @mode",
                        &npm.split(' ').collect::<Vec<_>>(),
                    ),
                    proc(
                        201,
                        501,
                        200,
                        "sh",
                        &["sh", "-c", "'mcp-server-everything'"],
                    ),
                    proc(
                        202,
                        502,
                        201,
                        "node",
                        &["node", "/srv/node_modules/.bin/mcp-server-everything"],
                    ),
                ];
                assert_eq!(
                    find_roots(&procs, &config),
                    vec![ProcKey::new(200, 500)],
                    "{npm}"
                );
            }
        }
    }

    #[test]
    fn identical_trees_under_one_host_are_separate_roots() {
        let config = Config::default();
        let mut procs = vec![proc(100, 10, 1, "python3", &["python3", "host.py"])];
        procs.extend(npm_tree(200, 100));
        procs.extend(npm_tree(300, 100));
        assert_eq!(find_roots(&procs, &config).len(), 2);
    }

    #[test]
    fn a_reused_pid_does_not_adopt_older_processes() {
        let config = Config::default();
        let mut procs = npm_tree(200, 100);
        // An older process whose ppid happens to be the root's (reused) PID.
        procs.push(proc(999, 100, 200, "old", &["old"]));
        let members = members_of(ProcKey::new(200, 500), &procs);
        assert!(!members.iter().any(|k| k.tgid == 999));
        let _ = config;
    }

    #[test]
    fn unknown_ownership_is_never_orphaned() {
        let (state, _) = classify(&OwnerState::Unknown { reason: "x" }, true);
        assert_eq!(state, TreeState::Unknown);
        let (state, reason) = classify(&OwnerState::Held { owners: vec![] }, true);
        assert_eq!((state, reason), (TreeState::Live, None));
    }

    #[test]
    fn released_with_the_host_gone_is_host_exited() {
        let released = OwnerState::Released {
            reason: ownership::PEER_RELEASED,
        };
        assert_eq!(
            classify(&released, false),
            (TreeState::Orphaned, Some("peer-released".into()))
        );
        assert_eq!(
            classify(&released, true),
            (TreeState::Orphaned, Some("host-exited".into()))
        );
        assert_eq!(
            classify(&OwnerState::HostGone, false).1.as_deref(),
            Some("host-exited")
        );
    }

    #[test]
    fn session_ids_come_from_the_named_variables_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("7")).unwrap();
        std::fs::write(
            dir.path().join("7/environ"),
            b"PATH=/bin\0OTHER=1\0MY_SESSION=abc\x07def\0",
        )
        .unwrap();
        let names = vec!["MY_SESSION".to_string()];
        assert_eq!(
            session_from_env(dir.path(), 7, &names).as_deref(),
            Some("abcdef")
        );
        assert_eq!(session_from_env(dir.path(), 7, &["NOPE".into()]), None);
        assert_eq!(session_from_env(dir.path(), 8, &names), None);
    }
}
