//! Discovering trees: classifying each process as it execs (or at start
//! from /proc), placing servers in trees by their launch chain
//! (`classify::place`), and marking hosts and members in the kernel's
//! watch map so lineage holds from the first fork.
//!
//! Owns: the hosts and relays tables, and a new tree's first record.
//! Must never: make a launcher or a gone process a host, read more of
//! /proc than a classification needs, or keep a process's details past its
//! classification unless it is a host, relay or tree root (`tables`).

use std::time::Instant;

use tracing::{debug, info, warn};

use super::{RESPAWN_WINDOW, Supervisor, TreeRecord, view};
use crate::{
    judge::classify,
    judge::trees,
    procs::identity::ProcKey,
    procs::procscan::{self, ProcInfo},
    procs::tracker::Tracker,
    source::ebpf::EbpfSource,
};

impl Supervisor {
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

    /// Classifies processes that exec'd since the last call (those queued
    /// at least `classify_delay` ago). A watched process that is gone
    /// already is classified from its exec record: a root that exits
    /// early still leaves a known tree.
    pub fn classify_pending(&mut self, tracker: &Tracker, mut ebpf: Option<&mut EbpfSource>) {
        let exited_before = self.images_exited.len();
        let now = Instant::now();
        let delay = self.classify_delay;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= delay);
        self.pending = later;
        for (key, _) in due {
            // Gone already without a record (or PID reused): nothing to
            // classify.
            if let Some((info, from_image)) = self.read_or_image(key) {
                if from_image {
                    debug!(process = %key, "classified from its exec record: gone from /proc");
                }
                self.infos.insert(key, info);
                self.classify(key, tracker, ebpf.as_deref_mut());
                self.drop_info_unless_kept(key);
            }
        }
        if self.pending.is_empty() {
            self.drop_exited_images(exited_before);
        }
    }

    fn classify(&mut self, key: ProcKey, tracker: &Tracker, ebpf: Option<&mut EbpfSource>) {
        let Some(info) = self.infos.get(&key) else {
            return;
        };
        let v = view(info);
        // Protected processes (or ones whose protect fields cannot be read)
        // are neither hosts nor servers.
        let protected = crate::reap::protect::check_info(&self.config, &self.proc_root, info)
            != crate::reap::protect::Protection::Free;
        // A process is classified by what it runs now: an exec can turn a
        // forked copy of a host into a server, or the other way round.
        self.hosts.remove(&key);
        self.relays.remove(&key);
        // A process known only from its exec record (gone from /proc) can
        // still be a server or the root line of a tree, never a live host.
        if protected || info.is_zombie() && self.config.classify_server(&v).is_none() {
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
                // A gone ancestor counts as its exec record showed it.
                match self.read_or_image(k) {
                    Some((info, _)) => {
                        self.infos.insert(k, info);
                    }
                    None => break, // gone: the chain ends here
                }
            }
            let Some(info) = self.infos.get(&k) else {
                break;
            };
            let protected = crate::reap::protect::check_info(&self.config, &self.proc_root, info)
                != crate::reap::protect::Protection::Free;
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
}
