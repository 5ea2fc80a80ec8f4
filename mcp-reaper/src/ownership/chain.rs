//! Relay chains: from the process holding a tree's stdio up to the process
//! that owns the session.
//!
//! Owns: following a far end held by a host's relay or anchor hop (a
//! `relays` matcher of a host rule) through that hop's own stdin (or, when
//! its stdin is no link at all, its control fds) to the next hop, until a
//! process that is no relay holds it (the session's owner) or a hop's
//! upstream end was released (the session is over). Also the lineage-fd
//! links (a host rule's `lineage_fds`) of tree members.
//! Must never: call a chain released on less than the kernel's word for
//! the released hop (the same rules as `stdio_owner`), or signal anything.
//! Relays are host side: callers keep every hop out of reap plans.

use std::{collections::HashSet, path::Path};

use super::{FdHolder, OwnerState, StdioObject, fd_owners, stdio_owner};
use crate::procs::identity::ProcKey;

/// Hops followed at most (OpenClaw has three relays).
pub const MAX_HOPS: usize = 8;

/// Where a chain of far ends ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// A process that is no relay holds the top link: the session owner.
    /// `chain` runs owner -> relays (nearest the tree last); `owners` are
    /// the owner's fds holding the top link.
    Held {
        chain: Vec<ProcKey>,
        owners: Vec<FdHolder>,
    },
    /// The hop `link` still holds the tree's end, but the far end of its
    /// own upstream was released: the session is over. `chain` runs from
    /// `link` down to the hop nearest the tree.
    Released { chain: Vec<ProcKey>, link: ProcKey },
    /// Cannot tell (a hop unreadable, a loop, too many hops).
    Unknown {
        chain: Vec<ProcKey>,
        reason: &'static str,
    },
}

impl ChainEnd {
    pub fn chain(&self) -> &[ProcKey] {
        match self {
            Self::Held { chain, .. }
            | Self::Released { chain, .. }
            | Self::Unknown { chain, .. } => chain,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Held { .. } => 2,
            Self::Unknown { .. } => 1,
            Self::Released { .. } => 0,
        }
    }

    fn below(mut self, hop: ProcKey) -> Self {
        match &mut self {
            Self::Held { chain, .. }
            | Self::Released { chain, .. }
            | Self::Unknown { chain, .. } => {
                chain.push(hop);
            }
        }
        self
    }
}

/// Whether a process is a relay hop, and if so its control fds (checked
/// when its stdin is no link). `None`: not a relay.
pub type RelayOf<'a> = &'a dyn Fn(ProcKey) -> Option<Vec<u32>>;

/// Follows `holders` (the holders of some far end of a tree) through relay
/// hops. `tree_members` are never owners.
pub fn follow(
    holders: &[FdHolder],
    tree_members: &HashSet<u32>,
    relay_of: RelayOf<'_>,
    proc_root: &Path,
) -> ChainEnd {
    let mut seen = tree_members.clone();
    follow_inner(holders, &mut seen, relay_of, proc_root, 0)
}

fn follow_inner(
    holders: &[FdHolder],
    seen: &mut HashSet<u32>,
    relay_of: RelayOf<'_>,
    proc_root: &Path,
    depth: usize,
) -> ChainEnd {
    let mut relays: Vec<(ProcKey, Vec<u32>)> = Vec::new();
    let mut owners: Vec<FdHolder> = Vec::new();
    for h in holders {
        match relay_of(h.key) {
            Some(ctl) => {
                if !relays.iter().any(|(k, _)| *k == h.key) {
                    relays.push((h.key, ctl));
                }
            }
            None => owners.push(*h),
        }
    }
    if let Some(top) = owners.first() {
        return ChainEnd::Held {
            chain: vec![top.key],
            owners,
        };
    }
    if depth >= MAX_HOPS {
        return ChainEnd::Unknown {
            chain: Vec::new(),
            reason: "relay-chain-too-long",
        };
    }
    let mut best: Option<ChainEnd> = None;
    for (hop, ctl) in relays {
        if !seen.insert(hop.tgid) {
            continue; // a loop: this hop is already on the path
        }
        let end = hop_upstream(hop, &ctl, seen, relay_of, proc_root, depth);
        if best.as_ref().is_none_or(|b| end.rank() > b.rank()) {
            best = Some(end);
        }
    }
    best.unwrap_or(ChainEnd::Unknown {
        chain: Vec::new(),
        reason: "relay-loop",
    })
}

/// Where the upstream of one relay hop leads.
fn hop_upstream(
    hop: ProcKey,
    ctl: &[u32],
    seen: &mut HashSet<u32>,
    relay_of: RelayOf<'_>,
    proc_root: &Path,
    depth: usize,
) -> ChainEnd {
    let exclude = seen.clone();
    let own = stdio_owner(hop, &exclude, &[], proc_root);
    match own.state {
        OwnerState::Held { owners } => {
            follow_inner(&owners, seen, relay_of, proc_root, depth + 1).below(hop)
        }
        OwnerState::Released { .. } | OwnerState::HostGone => ChainEnd::Released {
            chain: vec![hop],
            link: hop,
        },
        OwnerState::Unknown { reason } => {
            // A hop whose stdin is no link at all (closed, /dev/null) may
            // talk to its upstream over a control socket instead.
            let no_link = own.fds.iter().find(|f| f.fd == 0).is_some_and(|f| {
                matches!(
                    f.object,
                    StdioObject::Closed | StdioObject::File | StdioObject::Tty
                )
            });
            if !no_link || ctl.is_empty() {
                return ChainEnd::Unknown {
                    chain: vec![hop],
                    reason,
                };
            }
            let (fds, _, _) = fd_owners(hop, ctl, &exclude, &[], proc_root);
            let holders: Vec<FdHolder> = fds.iter().flat_map(|f| f.owners.clone()).collect();
            if !holders.is_empty() {
                follow_inner(&holders, seen, relay_of, proc_root, depth + 1).below(hop)
            } else if !fds.is_empty() && fds.iter().all(|f| f.released) {
                ChainEnd::Released {
                    chain: vec![hop],
                    link: hop,
                }
            } else {
                ChainEnd::Unknown {
                    chain: vec![hop],
                    reason,
                }
            }
        }
    }
}

/// What a member's fds (stdio of a remnant, lineage fds) link to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// No fd of these leads to anyone outside the tree (closed, not a
    /// socket or pipe), and none was released.
    None,
    /// No fd of these leads to anyone outside the tree, and at least one
    /// did until its far end was released (directly, or upstream of a
    /// relay hop).
    Released,
    /// Some fd leads (through relays) to a live owner.
    Owner(ChainEnd),
    /// Some fd could not be judged.
    Unknown(&'static str),
}

/// The links of `member`'s `fds` (stdio of a remnant, lineage fds): any fd
/// whose far end leads through relays to a live owner makes it `Owner`.
pub fn fd_links(
    member: ProcKey,
    fds: &[u32],
    tree_members: &HashSet<u32>,
    candidates: &[u32],
    relay_of: RelayOf<'_>,
    proc_root: &Path,
) -> Link {
    if fds.is_empty() {
        return Link::None;
    }
    if super::fdtable::proc_key(proc_root, member.tgid) != Some(member) {
        return Link::None; // gone: it holds nothing
    }
    let (owns, _, _) = fd_owners(member, fds, tree_members, candidates, proc_root);
    let holders: Vec<FdHolder> = owns.iter().flat_map(|f| f.owners.clone()).collect();
    let mut unknown = None;
    let mut released = owns.iter().any(|f| f.released);
    if !holders.is_empty() {
        match follow(&holders, tree_members, relay_of, proc_root) {
            end @ ChainEnd::Held { .. } => return Link::Owner(end),
            ChainEnd::Unknown { reason, .. } => unknown = Some(reason),
            ChainEnd::Released { .. } => released = true,
        }
    }
    for f in &owns {
        if !f.owners.is_empty() || f.released {
            continue;
        }
        // Not a socket or pipe, or closed: no link. Anything else that
        // could not be resolved (unreadable, scan incomplete) is unknown.
        let no_link = matches!(
            f.object,
            StdioObject::Closed | StdioObject::File | StdioObject::Tty | StdioObject::Other
        ) && f.reason.is_none();
        let unlinked = matches!(f.reason, Some("dgram-socket" | "socket-unconnected"));
        if !no_link && !unlinked {
            unknown = unknown.or(f.reason).or(Some("fd-unresolved"));
        }
    }
    match unknown {
        Some(reason) => Link::Unknown(reason),
        None if released => Link::Released,
        None => Link::None,
    }
}
