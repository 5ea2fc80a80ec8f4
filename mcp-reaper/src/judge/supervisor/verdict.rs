//! The verdict on one tree: pure functions from the evidence a check
//! collected to a state and a reason.
//!
//! Owns: how the evidence is weighed, in the order a check applies it:
//! 1. `from_stdio`: the root's stdio (its owner, followed up relay hops),
//!    or, once the root is gone, what each surviving member still holds
//!    (`remnant`);
//! 2. `with_lineage`: lineage fds, which keep a tree their owner still
//!    holds, or make an orphan `unknown` when they cannot be judged;
//! 3. `judge_release`: a host's `release`, which stands only while nobody
//!    but the processes it covers holds the far end;
//! 4. `suspicion`: for a live tree, how long it has been silent (`idle`,
//!    `superseded`);
//!
//! and `still_confirmed`, the last look before a reap.
//!
//! Must never: read /proc, ask the kernel, keep state, or signal anything.
//! Every input is evidence the supervisor gathered (`check`); every
//! function here is tested over tables of cases without root. A case that
//! cannot be told is `unknown`, never `orphaned`.

use std::time::Duration;

use crate::{
    judge::remnant::{self, Hold},
    judge::trees::{self, TreeState},
    ownership::{self, FdHolder, OwnerState, chain::ChainEnd, chain::Link},
    procs::identity::ProcKey,
};

/// How the tree's stdio was found held, by the root or, once it is gone,
/// by its surviving members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdioEvidence {
    /// The kernel still records the root's peer with no shutdown, and the
    /// owner recorded at the last full check still holds that very peer.
    StillHeld,
    /// Someone outside the tree holds the far end of the root's stdin
    /// (`owners`), and following them up relay hops ends at `end`.
    Held {
        owners: Vec<FdHolder>,
        end: ChainEnd,
    },
    /// The root's stdin is not held (`state`: released, host gone or
    /// unknown, refined by the owners seen before); `host_gone`: the
    /// tree's host has exited.
    NotHeld { state: OwnerState, host_gone: bool },
    /// The root is gone. For each surviving member, what its stdin,
    /// stdout and lineage fds hold (`remnant::member_hold`); the owners
    /// and relay chain through which members were found held.
    Remnant {
        holds: Vec<Hold>,
        held: Vec<FdHolder>,
        chain: Vec<ProcKey>,
    },
}

/// The verdict so far, with what it rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub state: TreeState,
    pub reason: Option<String>,
    /// Who holds the tree now (empty unless live, or orphaned behind a
    /// relay whose own upstream was released).
    pub owners: Vec<FdHolder>,
    /// The relay chain found, owner first (empty: none, or a single hop).
    pub chain: Vec<ProcKey>,
    /// The link whose far end was released, while orphaned.
    pub released_link: Option<ProcKey>,
}

impl Verdict {
    fn new(state: TreeState, reason: Option<String>) -> Self {
        Self {
            state,
            reason,
            owners: Vec::new(),
            chain: Vec::new(),
            released_link: None,
        }
    }
}

/// A relay chain is worth recording only when it has more than one hop.
fn chain_if_relayed(chain: Vec<ProcKey>) -> Vec<ProcKey> {
    if chain.len() > 1 { chain } else { Vec::new() }
}

/// Step 1: the verdict from the stdio evidence of tree `root`.
#[must_use]
pub fn from_stdio(root: ProcKey, evidence: StdioEvidence) -> Verdict {
    match evidence {
        StdioEvidence::StillHeld => Verdict::new(TreeState::Live, None),
        StdioEvidence::Held { owners, end } => match end {
            // The tree's state is the top owner's; behind relays the top
            // owner's holders count as owners too.
            ChainEnd::Held { chain, owners: top } => {
                let chain = chain_if_relayed(chain);
                let mut all = owners;
                if !chain.is_empty() {
                    all.extend(top);
                }
                Verdict {
                    owners: all,
                    chain,
                    ..Verdict::new(TreeState::Live, None)
                }
            }
            ChainEnd::Released { chain, link } => Verdict {
                owners,
                chain,
                released_link: Some(link),
                ..Verdict::new(
                    TreeState::Orphaned,
                    Some(format!("{} (relay)", ownership::PEER_RELEASED)),
                )
            },
            ChainEnd::Unknown { chain, reason } => Verdict {
                owners,
                chain,
                ..Verdict::new(TreeState::Unknown, Some(reason.to_string()))
            },
        },
        StdioEvidence::NotHeld { state, host_gone } => {
            let (state, reason) = trees::classify(&state, host_gone);
            Verdict {
                released_link: (state == TreeState::Orphaned).then_some(root),
                ..Verdict::new(state, reason)
            }
        }
        StdioEvidence::Remnant { holds, held, chain } => {
            let (state, reason) = remnant::verdict(&holds);
            Verdict {
                owners: if state == TreeState::Live {
                    held
                } else {
                    Vec::new()
                },
                chain: chain_if_relayed(chain),
                ..Verdict::new(state, reason)
            }
        }
    }
}

/// Whether lineage fds can change this verdict (`with_lineage`): only an
/// orphan whose root is alive, under a host rule that names lineage fds.
#[must_use]
pub fn lineage_matters(v: &Verdict, root_alive: bool, lineage_fds: &[u32]) -> bool {
    root_alive && v.state == TreeState::Orphaned && !lineage_fds.is_empty()
}

/// Step 2: an orphan's members' lineage fds, in member order (`links`
/// may be lazy: it is read only until a live owner is found). A link that
/// leads to a live owner keeps the tree live; one that cannot be judged
/// makes it `unknown` (`lineage-unproven`) unless a later member's link
/// proves an owner.
#[must_use]
pub fn with_lineage(mut v: Verdict, links: impl IntoIterator<Item = Link>) -> Verdict {
    for link in links {
        match link {
            Link::Owner(ChainEnd::Held { chain, owners }) => {
                let chain = chain_if_relayed(chain);
                if !chain.is_empty() {
                    v.chain = chain;
                }
                v.state = TreeState::Live;
                v.reason = None;
                v.released_link = None;
                v.owners = owners;
                break;
            }
            Link::Owner(_) | Link::Unknown(_) => {
                v.state = TreeState::Unknown;
                v.reason = Some("lineage-unproven".into());
                v.released_link = None;
            }
            Link::None | Link::Released => {}
        }
    }
    v
}

/// Step 4: the suspicion a live tree raises after `idle_for` of silence
/// (`idle_after`: the policy's threshold): `superseded` when a newer tree
/// of the same server under the same host is in use, else `idle`.
#[must_use]
pub fn suspicion(
    idle_for: Duration,
    idle_after: Duration,
    newer_in_use: bool,
) -> Option<&'static str> {
    (idle_for >= idle_after).then_some(if newer_in_use { "superseded" } else { "idle" })
}

/// Whether a fresh check (`now_state`, `now_reason`) still confirms the
/// verdict a decision to enforce was made on (`state`, `reason`): an
/// orphan is still orphaned (for any ground-truth reason); a suspicion is
/// still the same suspicion.
#[must_use]
pub fn still_confirmed(
    state: TreeState,
    reason: Option<&str>,
    now_state: TreeState,
    now_reason: Option<&str>,
) -> bool {
    match state {
        TreeState::Orphaned => now_state == TreeState::Orphaned,
        TreeState::Suspect => now_state == TreeState::Suspect && now_reason == reason,
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

/// Step 3: weighs a host's `release` (`released_by`: the processes it
/// covers) against a fresh check (`state`, `reason`) and the processes
/// outside the tree and its relay chain that hold the far end now
/// (`holders`).
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
#[must_use]
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
