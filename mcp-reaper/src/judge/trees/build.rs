//! Building every tree from one /proc snapshot: the one-shot view `scan`
//! reports.
//!
//! Owns: `build` (roots, members, server identity, the stdio owner and a
//! relay chain above it, host, state and reason, memory, session id) and
//! the /proc reads only it needs (uptime, a process's environment).
//! Must never: signal anything, or judge a tree on more than this one
//! snapshot: what needs history (idle, superseded, session ended) is the
//! daemon's, and a state comes only from `state::classify` or the chain's
//! own verdict.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use super::{
    memory::pss_bytes,
    roots::{find_roots, members_of, view},
    state::{TreeState, classify},
    view::{HostView, MemberView, OwnerFd, TreeView},
};
use crate::{
    config::Config,
    ownership::{
        self, OwnerState,
        chain::{self, ChainEnd},
    },
    procs::identity::ProcKey,
    procs::procscan::{self, ProcInfo},
};

/// Builds every tree from one /proc snapshot.
pub fn build(procs: &[ProcInfo], config: &Config, proc_root: &Path) -> Vec<TreeView> {
    let snap = Snapshot {
        procs,
        by_pid: procs.iter().map(|p| (p.key.tgid, p)).collect(),
        config,
        proc_root,
        now_ticks: uptime_ticks(proc_root),
        session_vars: config
            .host_rules()
            .iter()
            .flat_map(|h| h.session_env.iter().cloned())
            .collect(),
    };
    find_roots(procs, config)
        .into_iter()
        .filter_map(|root| snap.tree(root))
        .collect()
}

/// One /proc snapshot and what every tree built from it shares.
struct Snapshot<'a> {
    procs: &'a [ProcInfo],
    by_pid: HashMap<u32, &'a ProcInfo>,
    config: &'a Config,
    proc_root: &'a Path,
    now_ticks: u64,
    /// Environment variables any host rule takes a session id from.
    session_vars: Vec<String>,
}

/// What following a relay chain up from the root's stdio found.
#[derive(Default)]
struct ChainWalk {
    /// The chain, owner first; empty when the holder is no relay.
    keys: Vec<ProcKey>,
    /// The owner at the top of a held chain of more than one hop.
    top: Option<u32>,
    /// The tree's state when the chain decides it (released, unknown).
    verdict: Option<(TreeState, Option<String>)>,
    /// The relay hop whose upstream far end was released.
    released_link: Option<ProcKey>,
}

impl Snapshot<'_> {
    /// The tree rooted at `root`; `None` when the snapshot lacks the root.
    fn tree(&self, root: ProcKey) -> Option<TreeView> {
        let root_info = *self.by_pid.get(&root.tgid)?;
        let member_keys = members_of(root, self.procs);
        let member_pids: HashSet<u32> = member_keys.iter().map(|k| k.tgid).collect();
        let members: Vec<&ProcInfo> = member_keys
            .iter()
            .filter_map(|k| self.by_pid.get(&k.tgid).copied())
            .collect();
        let cmdlines: Vec<&[String]> = members.iter().map(|m| m.cmdline.as_slice()).collect();
        let server = self
            .config
            .bounded_label(crate::config::server_identity(&cmdlines, self.config));
        let parent = self.by_pid.get(&root_info.ppid).copied();
        let reparented = root_info.ppid <= 1 || parent.is_some_and(|p| self.is_no_host(p));
        let candidates: Vec<u32> = parent
            .filter(|_| root_info.ppid > 1)
            .map(|p| p.key.tgid)
            .into_iter()
            .collect();
        let own = ownership::stdio_owner(root, &member_pids, &candidates, self.proc_root);
        let walk = self.follow_chain(&own.state, &member_pids);
        // The host is whoever holds the far end of the root's stdio; only
        // when nobody does is it the parent (if one is left). A server whose
        // launcher died and left it with init is still its owner's.
        let owner_pid = match &own.state {
            OwnerState::Held { owners } => walk.top.or(owners.first().map(|h| h.key.tgid)),
            _ => None,
        };
        let host = owner_pid
            .and_then(|pid| self.by_pid.get(&pid).copied())
            .or(parent.filter(|_| root_info.ppid > 1))
            .map(|p| self.host_view(p));
        let (state, reason) = walk
            .verdict
            .unwrap_or_else(|| classify(&own.state, reparented));
        let mut released_link = walk.released_link;
        if released_link.is_none()
            && state == TreeState::Orphaned
            && matches!(own.state, OwnerState::Released { .. })
        {
            released_link = Some(root);
        }
        let chain_views: Vec<HostView> = walk
            .keys
            .iter()
            .filter_map(|k| self.by_pid.get(&k.tgid).copied().filter(|p| p.key == *k))
            .map(|p| self.host_view(p))
            .collect();
        let mut owner_fds: Vec<OwnerFd> = own
            .fds
            .iter()
            .flat_map(|f| f.owners.iter().map(|h| OwnerFd::observe(h, self.proc_root)))
            .collect();
        owner_fds.sort();
        owner_fds.dedup();
        let session_id = session_from_env(self.proc_root, root.tgid, &self.session_vars);
        let member_views = self.member_views(&members);
        Some(TreeView {
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
            age_seconds: self.now_ticks.saturating_sub(root.start_ticks) / 100,
            rss_bytes: member_views.iter().map(|m| m.rss_bytes).sum(),
            pss_bytes: member_views.iter().filter_map(|m| m.pss_bytes).sum(),
            members: member_views,
            ownership: Some(own),
            daemon: None,
        })
    }

    /// The root's parent is no host: no host, relay or generic host rule
    /// names it (PID 1 or a subreaper adopted the root).
    fn is_no_host(&self, p: &ProcInfo) -> bool {
        let v = view(p);
        self.config.classify_host(&v).is_none()
            && self.config.classify_relay(&v).is_none()
            && self.config.generic_host().is_none()
    }

    fn host_view(&self, p: &ProcInfo) -> HostView {
        HostView {
            pid: p.key.tgid,
            start_ticks: p.key.start_ticks,
            comm: p.comm.clone(),
            rule: self
                .config
                .classify_host(&view(p))
                .or_else(|| self.config.classify_relay(&view(p)))
                .map(|r| r.name.clone())
                .or_else(|| self.config.generic_host().map(|r| r.name.clone()))
                .unwrap_or_else(|| "unknown".into()),
            ns_pid: p.ns_pid,
            net_ns: foreign_net_ns(self.proc_root, p.key.tgid),
        }
    }

    /// A relay or anchor holding the root's stdio: follow the chain up to
    /// the session's owner; the tree's state is the top owner's.
    fn follow_chain(&self, state: &OwnerState, member_pids: &HashSet<u32>) -> ChainWalk {
        let mut walk = ChainWalk::default();
        let OwnerState::Held { owners } = state else {
            return walk;
        };
        let relay_of = |k: ProcKey| -> Option<Vec<u32>> {
            let p = self.by_pid.get(&k.tgid).filter(|p| p.key == k)?;
            self.config
                .classify_relay(&view(p))
                .map(|r| r.lineage_fds.clone())
        };
        match chain::follow(owners, member_pids, &relay_of, self.proc_root) {
            ChainEnd::Held { chain: c, .. } => {
                if c.len() > 1 {
                    walk.top = c.first().map(|k| k.tgid);
                    walk.keys = c;
                }
            }
            ChainEnd::Released { chain: c, link } => {
                walk.keys = c;
                walk.released_link = Some(link);
                walk.verdict = Some((
                    TreeState::Orphaned,
                    Some(format!("{} (relay)", ownership::PEER_RELEASED)),
                ));
            }
            ChainEnd::Unknown { chain: c, reason } => {
                walk.keys = c;
                walk.verdict = Some((TreeState::Unknown, Some(reason.to_string())));
            }
        }
        walk
    }

    fn member_views(&self, members: &[&ProcInfo]) -> Vec<MemberView> {
        members
            .iter()
            .map(|m| MemberView {
                pid: m.key.tgid,
                start_ticks: m.key.start_ticks,
                ppid: m.ppid,
                comm: m.comm.clone(),
                ns_pid: m.ns_pid,
                cmdline: procscan::display_cmdline(m),
                rss_bytes: m.rss_bytes,
                pss_bytes: pss_bytes(self.proc_root, m.key.tgid),
            })
            .collect()
    }
}

/// `net:[INODE]` of the process's network namespace when it is not this
/// process's own (nsfs links name a namespace whichever /proc shows them).
fn foreign_net_ns(proc_root: &Path, pid: u32) -> Option<String> {
    let theirs = std::fs::read_link(proc_root.join(pid.to_string()).join("ns/net")).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    (theirs != ours).then(|| theirs.to_string_lossy().into_owned())
}

/// The first of `names` set in the process's environment.
pub fn session_from_env(proc_root: &Path, pid: u32, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let raw = std::fs::read(proc_root.join(pid.to_string()).join("environ")).ok()?;
    session_in_environ(&raw, names)
}

/// The first of `names` set in `raw` (an environ file: NUL-separated
/// `NAME=value`, any bytes), bounded and printable.
pub fn session_in_environ(raw: &[u8], names: &[String]) -> Option<String> {
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

/// Time since boot in clock ticks, from `uptime`.
pub fn uptime_ticks(proc_root: &Path) -> u64 {
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
    use super::*;

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
