//! Property: the policy never kills a tree its owner still holds, never
//! kills on evidence that could not be read, and never kills in observe
//! mode.
//!
//! Why: a reap of a held tree kills a server a host is talking to; the
//! whole verdict chain exists to rule that out, and a kill on a guess (an
//! unreadable process, a namespace it could not see, a lineage fd it
//! could not judge) is the same mistake by another road.
//!
//! `truth` draws what really holds each far end and what could not be
//! read, and derives what the kernel and a walk of /proc report of it.
//! `verdict` below runs that evidence through the same pure steps as
//! `Supervisor::check` and its tick, in the same order: `ownership::judge`
//! and the stdin verdict, `from_stdio` (relay chain, remnant), `with_lineage`,
//! `judge_release`, `suspicion`, and `policy::decide`. The rules, as the
//! design states them (ARCHITECTURE.md's signals table):
//! - (a) While the owner holds the far end of the root's stdin (itself,
//!   unseen, or at the top of a relay hop), or of a gone root's member's
//!   stdin or lineage fd (its stdout too, unless its stdin was released),
//!   or of a live root's member's lineage fd, the tree is not orphaned and
//!   only a suspicion (idle, superseded) the operator chose to enforce is
//!   enforced. A host's `release` that covers the owner itself is that
//!   host's word the session is over: `session-ended`, enforced by design.
//!   Other holders outside the tree do not hold it by design: a relay hop
//!   whose own upstream was released (`peer-released (relay)`), and a
//!   tree member holding the far end is inside (`peer-held-in-tree`).
//! - (b) A root whose stdin could not be resolved, a walk that read not
//!   every process with nobody seen and no word from the kernel, a relay
//!   hop that could not be read, or a gone root's member that could not be
//!   judged while none held it: `unknown`, no decision at all. A lineage
//!   fd that could not be judged while none proves the owner keeps the
//!   tree from being orphaned (unless the owner released it).
//! - (c) With every reason observed, nothing is enforced.
//!
//! Not covered: a far end no walk can see (a thread with its own fd
//! table, SCM_RIGHTS in flight) on a pipe, or on a socket whose peer the
//! walk saw held inside the tree. The design proves both released by a
//! complete walk that sees no holder outside the tree (`ownership`'s
//! rules: `peer-held-in-tree`, `pipe-other-end-closed`), so such a tree is
//! judged orphaned; `truth` draws none.

mod truth;

use proptest::prelude::*;

use self::truth::{Case, LinkTruth, OTHER, OWNER, ROOT, Release, Root, Stdin, Upstream};
use super::verdict::{self, StdioEvidence};
use crate::{
    config::{Action, Reason},
    judge::policy::{self, Decision, Facts},
    judge::remnant,
    judge::trees::TreeState,
    ownership::{self, OwnerState, chain::Link},
    procs::identity::ProcKey,
};

/// The stdio evidence a check gathers (`check::stdio_evidence`).
fn stdio_evidence(case: &Case) -> StdioEvidence {
    match &case.root {
        Root::Gone(members) => {
            let mut holds = Vec::new();
            let mut held = Vec::new();
            for m in members {
                let mut links = [m.stdin, m.stdout, m.lineage].map(LinkTruth::link);
                let [stdin, stdout, lin] = links.each_ref().map(remnant::Hold::from);
                if stdin == remnant::Hold::Released {
                    links[1] = Link::Released;
                }
                let hold = remnant::member_hold(stdin, stdout, lin);
                if hold == remnant::Hold::Held {
                    for link in links {
                        if let Link::Owner(ownership::chain::ChainEnd::Held { owners, .. }) = link {
                            held.extend(owners);
                        }
                    }
                }
                holds.push(hold);
            }
            StdioEvidence::Remnant {
                holds,
                held,
                chain: Vec::new(),
            }
        }
        Root::Alive(a) => {
            let fast_path = a.stdin == Stdin::StreamSocket
                && a.owner_recorded
                && a.far.owner
                && !a.holders_unreadable
                && !a.shutdown_called
                && a.far.relay.is_none()
                && case.release == Release::None;
            if fast_path {
                return StdioEvidence::StillHeld;
            }
            let (mut fd, judged) = a.stdin_fd();
            if judged {
                fd.record(ownership::judge(a.kernel(), a.walk_complete(), a.seen()));
            }
            let state = match ownership::verdict(&[fd]) {
                OwnerState::Released { .. } if a.previous_owners_gone => OwnerState::HostGone,
                s => s,
            };
            match state {
                OwnerState::Held { owners } => {
                    let end = a.chain_end(&owners);
                    StdioEvidence::Held { owners, end }
                }
                state => StdioEvidence::NotHeld {
                    state,
                    host_gone: a.host_gone,
                },
            }
        }
    }
}

/// The tree's state and reason after one check (`Supervisor::check`).
fn check(case: &Case) -> (TreeState, Option<String>) {
    let mut v = verdict::from_stdio(ROOT, stdio_evidence(case));
    if let Root::Alive(a) = &case.root {
        let lineage_fds: Vec<u32> = if a.lineage.is_empty() {
            vec![]
        } else {
            vec![3]
        };
        if verdict::lineage_matters(&v, true, &lineage_fds) {
            v = verdict::with_lineage(v, a.lineage.iter().map(|l| l.link()));
        }
    }
    let holders: Vec<ProcKey> = v
        .owners
        .iter()
        .map(|o| o.key)
        .filter(|k| !v.chain.contains(k))
        .collect();
    let released_by = match case.release {
        Release::None => vec![],
        Release::Owner => vec![OWNER],
        Release::Other => vec![OTHER],
    };
    let judged = verdict::judge_release(&released_by, v.state, v.reason.take(), &holders);
    let (mut state, mut reason) = (judged.state, judged.reason);
    if state == TreeState::Live {
        let idle_after = case.policy.idle_after;
        let idle_for = if case.idle {
            idle_after
        } else {
            idle_after / 2
        };
        if let Some(why) = verdict::suspicion(idle_for, idle_after, case.newer_in_use) {
            state = TreeState::Suspect;
            reason = Some(why.into());
        }
    }
    (state, reason)
}

/// What the tick decides on that verdict (`Supervisor::decide`).
fn decide(case: &Case, state: TreeState, reason: Option<&str>) -> Decision {
    let facts = Facts {
        reason: reason
            .and_then(policy::parse_reason)
            .filter(|_| matches!(state, TreeState::Orphaned | TreeState::Suspect)),
        orphaned_for: case.orphaned_for,
        degraded: case.degraded,
    };
    policy::decide(&case.policy, facts)
}

/// The owner holds the tree, in truth (rule (a)).
fn owner_holds(case: &Case) -> bool {
    match &case.root {
        Root::Alive(a) => a.owner_holds_stdin() || a.lineage.contains(&LinkTruth::Owner),
        Root::Gone(members) => members.iter().any(|m| m.owner_holds()),
    }
}

/// Evidence that could not be read and that nothing else outweighs
/// (rule (b)): the verdict must be `unknown`.
fn unreadable(case: &Case) -> Option<&'static str> {
    match &case.root {
        Root::Alive(a) => {
            let connected = matches!(a.stdin, Stdin::StreamSocket | Stdin::Pipe);
            if matches!(a.stdin, Stdin::FdUnreadable | Stdin::NamespaceHidden) {
                Some("stdin unresolved")
            } else if connected
                && !a.walk_complete()
                && !a.kernel_says_released()
                && a.seen_outside().is_empty()
            {
                Some("walk incomplete, nobody seen")
            } else if connected
                && !a.holders_unreadable
                && !a.far.owner
                && a.far.relay == Some(Upstream::Unreadable)
            {
                Some("relay hop unreadable")
            } else {
                None
            }
        }
        Root::Gone(members) => (!members.iter().any(|m| m.owner_holds())
            && members.iter().any(|m| m.has_gap()))
        .then_some("remnant member unjudged"),
    }
}

/// A lineage fd that could not be judged while none proves the owner.
fn lineage_gap(case: &Case) -> bool {
    match &case.root {
        Root::Alive(a) => {
            a.lineage
                .iter()
                .any(|l| matches!(l, LinkTruth::Unreadable | LinkTruth::RelayUnreadable))
                && !a.lineage.contains(&LinkTruth::Owner)
        }
        Root::Gone(_) => false,
    }
}

fn is_suspicion(reason: Option<&str>) -> bool {
    matches!(
        reason.and_then(policy::parse_reason),
        Some(Reason::Idle | Reason::Superseded)
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_policy_never_kills_a_held_tree_or_on_a_guess(case in truth::case()) {
        let (state, reason) = check(&case);
        let decision = decide(&case, state, reason.as_deref());
        let seen = format!("{state:?} {reason:?} -> {decision:?}");
        // (a) Held by its owner: never orphaned, except by the owner's own
        // release; enforced only as a suspicion.
        if owner_holds(&case) && case.release != Release::Owner {
            prop_assert!(state != TreeState::Orphaned, "held, yet {}", seen);
        }
        if owner_holds(&case) && decision == Decision::Enforce {
            prop_assert!(
                is_suspicion(reason.as_deref()) || case.release == Release::Owner,
                "held, yet {}", seen
            );
        }
        // (b) Unreadable evidence: unknown, nothing decided.
        if let Some(gap) = unreadable(&case) {
            prop_assert_eq!(state, TreeState::Unknown, "{}: {}", gap, seen);
            prop_assert_eq!(decision, Decision::None, "{}: {}", gap, seen);
        }
        if lineage_gap(&case) && case.release != Release::Owner {
            prop_assert!(state != TreeState::Orphaned, "lineage unjudged, yet {}", seen);
        }
        // (c) Observe mode: nothing enforced.
        let observe = Reason::ALL
            .iter()
            .all(|r| case.policy.actions.get(*r) == Action::Observe);
        if observe {
            prop_assert!(decision != Decision::Enforce, "observe mode, yet {}", seen);
        }
    }
}
