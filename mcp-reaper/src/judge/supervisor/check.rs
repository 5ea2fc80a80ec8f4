//! One tree's check: the evidence gathered from /proc and the kernel, and
//! the verdict recorded.
//!
//! Owns: reading what a verdict needs (the tree's live members by lineage,
//! the root's stdio and its owner followed up relay hops, a gone root's
//! members' links, lineage fds, activity) and writing the result
//! (`verdict`'s state and reason, the owners seen, the orphan and
//! suspicion clocks) into the tree's record.
//! Must never: decide anything itself (the weighing is `verdict`'s), call
//! a tree anything but `unknown` on evidence it could not read, or signal.

use std::{collections::HashSet, time::Instant};

use tracing::info;

use super::{
    Supervisor, TreeRecord,
    verdict::{self, StdioEvidence, Verdict},
};
use crate::{
    judge::remnant,
    judge::trees::{OwnerFd, TreeState},
    ownership::{
        self, OwnerState, STDIO_FDS,
        chain::{self, ChainEnd, Link},
    },
    procs::identity::ProcKey,
    procs::procscan,
    procs::tracker::Tracker,
};

/// What one of a process's descriptors is, as far as stdio ownership goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StdioLink {
    Socket(u64),
    Pipe(u64),
}

impl StdioLink {
    /// From a `/proc/PID/fd/N` link text (`socket:[N]`, `pipe:[N]`).
    pub(super) fn parse(link: &str) -> Option<Self> {
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

impl Supervisor {
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

    /// Re-checks one tree's ownership now: gathers the evidence, asks
    /// `verdict`, and records the result. Returns false when the tree
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
        let ev = Gathered {
            member_pids: members.iter().map(|k| k.tgid).collect(),
            candidates: rec.host.iter().map(|h| h.tgid).collect(),
            lineage: self.lineage_fds(&rec.host_rule),
            root_alive: members.contains(&root),
        };
        let stdio: Vec<(u32, StdioLink)> = if ev.root_alive {
            STDIO_FDS
                .iter()
                .filter_map(|&fd| Some((fd, stdio_link(&self.proc_root, root.tgid, fd)?)))
                .collect()
        } else {
            Vec::new()
        };
        let evidence = self.stdio_evidence(rec, &ev, &stdio, &members);
        let mut v = verdict::from_stdio(root, evidence);
        if verdict::lineage_matters(&v, ev.root_alive, &ev.lineage) {
            let relay_of = |k: ProcKey| self.relay_ctl(k);
            let links = members.iter().map(|m| {
                chain::fd_links(
                    *m,
                    &ev.lineage,
                    &ev.member_pids,
                    &ev.candidates,
                    &relay_of,
                    &self.proc_root,
                )
            });
            v = verdict::with_lineage(v, links);
        }
        // A host's `release` stands only while nobody but the processes it
        // covers holds the far end (relay hops are the host's side).
        let holders: Vec<ProcKey> = v
            .owners
            .iter()
            .map(|o| o.key)
            .filter(|k| !v.chain.contains(k) && !rec.chain.contains(k))
            .collect();
        let judged = verdict::judge_release(&rec.released_by, v.state, v.reason.take(), &holders);
        if let Some(other) = judged.withdrawn_by {
            info!(root = %root, holder = %other, "release withdrawn: another process holds the far end");
        }
        (v.state, v.reason) = (judged.state, judged.reason);
        self.weigh_activity(root, &members, &mut v);
        self.record_verdict(root, v, judged.keep, members, &stdio);
        true
    }

    /// The evidence on the tree's stdio: the fast path, the root's owner
    /// (followed up relay hops), or what a gone root's members hold.
    fn stdio_evidence(
        &self,
        rec: &TreeRecord,
        ev: &Gathered,
        stdio: &[(u32, StdioLink)],
        members: &[ProcKey],
    ) -> StdioEvidence {
        if !ev.root_alive {
            return self.remnant_evidence(members, ev);
        }
        if self.still_held(rec, stdio) {
            return StdioEvidence::StillHeld;
        }
        let own =
            ownership::stdio_owner(rec.root, &ev.member_pids, &ev.candidates, &self.proc_root);
        match own
            .state
            .with_previous_owners(&rec.owners_seen, &self.proc_root)
        {
            OwnerState::Held { owners } => {
                let relay_of = |k: ProcKey| self.relay_ctl(k);
                let end = chain::follow(&owners, &ev.member_pids, &relay_of, &self.proc_root);
                StdioEvidence::Held { owners, end }
            }
            state => StdioEvidence::NotHeld {
                state,
                host_gone: rec
                    .host
                    .is_some_and(|h| !procscan::is_alive(&self.proc_root, h)),
            },
        }
    }

    /// Fast path for a tree already known live over a UNIX socket: the
    /// kernel's record of the root's end still names a peer and no
    /// shutdown, and an owner outside the tree recorded at the last full
    /// check still holds that very peer (same process, fd and inode), so
    /// nothing was released. A peer that is still there but no longer
    /// held by a recorded owner (handed over, or left only to the tree's
    /// own members) gets the full walk. A released tree always gets the
    /// full walk: its confirmation needs to know who holds the far end,
    /// not only that someone does.
    fn still_held(&self, rec: &TreeRecord, stdio: &[(u32, StdioLink)]) -> bool {
        rec.released_by.is_empty()
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
                                    crate::judge::trees::still_holds(
                                        &rec.owner_fds,
                                        u64::from(peer),
                                        &self.proc_root,
                                    )
                                })
                        })
                }
                _ => false,
            }
    }

    /// The evidence for a tree whose root is gone: each member's stdin,
    /// stdout and lineage fds (`remnant::member_hold`), and the owners and
    /// relay chain of the members found held.
    fn remnant_evidence(&self, members: &[ProcKey], ev: &Gathered) -> StdioEvidence {
        let relay_of = |k: ProcKey| self.relay_ctl(k);
        let mut held = Vec::new();
        let mut chain_seen = Vec::new();
        let mut holds = Vec::new();
        for m in members {
            let mut links = [&[0][..], &[1][..], &ev.lineage[..]].map(|fds| {
                chain::fd_links(
                    *m,
                    fds,
                    &ev.member_pids,
                    &ev.candidates,
                    &relay_of,
                    &self.proc_root,
                )
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
        StdioEvidence::Remnant {
            holds,
            held,
            chain: chain_seen,
        }
    }

    /// Heuristics, for live trees only: silent for longer than
    /// `idle_after` is `idle`; idle while a newer tree of the same server
    /// under the same host is in use is `superseded` (`verdict::suspicion`).
    fn weigh_activity(&mut self, root: ProcKey, members: &[ProcKey], v: &mut Verdict) {
        if v.state != TreeState::Live {
            self.idle_for.remove(&root);
            return;
        }
        let reads: u64 = members
            .iter()
            .filter_map(|m| crate::judge::activity::io_chars(&self.proc_root, m.tgid))
            .sum();
        let idle_for = self.activity.sample(root, reads, Instant::now());
        self.idle_for.insert(root, idle_for);
        let idle_after = self.config.policy.idle_after;
        let newer_in_use = || {
            let Some(rec) = self.trees.get(&root) else {
                return false;
            };
            self.trees.values().any(|t| {
                t.root != root
                    && t.host == rec.host
                    && t.server == rec.server
                    && t.root.start_ticks > root.start_ticks
                    && t.state == TreeState::Live
            })
        };
        if let Some(why) = verdict::suspicion(
            idle_for,
            idle_after,
            idle_for >= idle_after && newer_in_use(),
        ) {
            v.state = TreeState::Suspect;
            v.reason = Some(why.into());
        }
    }

    /// Writes a check's verdict into the tree's record: the orphan and
    /// suspicion clocks, who holds it, its relay chain, the release, and
    /// its stdio inodes; a tree newly orphaned is queued for
    /// `take_detected`.
    fn record_verdict(
        &mut self,
        root: ProcKey,
        v: Verdict,
        keep_release: bool,
        members: Vec<ProcKey>,
        stdio: &[(u32, StdioLink)],
    ) {
        let Some(rec) = self.trees.get_mut(&root) else {
            return;
        };
        let newly_orphaned = v.state == TreeState::Orphaned
            && (rec.orphan_since.is_none() || rec.reason != v.reason);
        if v.state == TreeState::Orphaned {
            if newly_orphaned {
                rec.orphan_since = Some(Instant::now());
            }
        } else if v.state == TreeState::Suspect {
            // A suspicion's clock starts when it is first raised.
            if rec.state != TreeState::Suspect || rec.reason != v.reason {
                rec.orphan_since = Some(Instant::now());
            }
        } else {
            rec.orphan_since = None;
        }
        if !v.owners.is_empty() {
            for o in &v.owners {
                if !rec.owners_seen.contains(o) {
                    rec.owners_seen.push(*o);
                    // Whoever holds a tree's far end is its host for the
                    // kernel too: its closes are what end the session.
                    self.owner_hosts.push(o.key);
                }
            }
            rec.owner_fds = v
                .owners
                .iter()
                .map(|h| OwnerFd::observe(h, &self.proc_root))
                .collect();
            rec.owner_fds.sort();
            rec.owner_fds.dedup();
        }
        if !v.chain.is_empty() {
            // The session owner is the chain's top, not the nearest hop.
            if v.state == TreeState::Live
                && let Some(top) = v.chain.first()
            {
                rec.host = Some(*top);
            }
            rec.chain = v.chain;
        }
        rec.released_link = v.released_link;
        if !keep_release {
            rec.released_by.clear();
        }
        rec.state = v.state;
        rec.reason = v.reason;
        // Kept once the root is gone: a reap without the kernel's lineage
        // finds escapees by the stdio they inherited from the root.
        if !stdio.is_empty() {
            rec.stdio_inodes = stdio.iter().map(|(_, l)| l.inode()).collect();
            rec.stdio_inodes.dedup();
        }
        if newly_orphaned {
            self.detected.push((rec.clone(), members));
        }
    }
}

/// What a check reads about a tree before weighing its stdio.
struct Gathered {
    member_pids: HashSet<u32>,
    /// The tree's host, the first place its owner is looked for.
    candidates: Vec<u32>,
    /// The host rule's lineage fds.
    lineage: Vec<u32>,
    root_alive: bool,
}
