//! The verdict over tables of evidence: every reason a tree can be
//! orphaned for, every cause of `unknown`, and what keeps a tree live.

use std::time::Duration;

use super::verdict::{
    StdioEvidence, Verdict, from_stdio, lineage_matters, suspicion, with_lineage,
};
use crate::{
    judge::remnant::Hold,
    judge::trees::TreeState,
    ownership::{
        FdHolder, FdMode, OwnerState, PEER_RELEASED,
        chain::{ChainEnd, Link},
        judge::{
            PEER_HELD_IN_TREE, PEER_UNSEEN, PIPE_OTHER_END_CLOSED, SCAN_INCOMPLETE,
            SOCKET_UNCONNECTED,
        },
    },
    procs::identity::ProcKey,
};

const ROOT: ProcKey = ProcKey::new(100, 10);
const HOST: ProcKey = ProcKey::new(50, 5);
const RELAY: ProcKey = ProcKey::new(60, 6);
const TOP: ProcKey = ProcKey::new(40, 4);

fn holder(key: ProcKey, fd: u32) -> FdHolder {
    FdHolder {
        key,
        fd,
        mode: FdMode::ReadWrite,
    }
}

fn state_reason(v: &Verdict) -> (TreeState, Option<&str>) {
    (v.state, v.reason.as_deref())
}

// A table of cases, one per reason: long by nature.
#[test]
fn the_roots_stdio_decides_with_every_reason_and_every_unknown_cause() {
    use TreeState::{Live, Orphaned, Unknown};
    let released = |reason| StdioEvidence::NotHeld {
        state: OwnerState::Released { reason },
        host_gone: false,
    };
    let unknown = |reason| StdioEvidence::NotHeld {
        state: OwnerState::Unknown { reason },
        host_gone: false,
    };
    // (evidence, state, reason, released link)
    let cases: Vec<(StdioEvidence, TreeState, Option<&str>, Option<ProcKey>)> = vec![
        (StdioEvidence::StillHeld, Live, None, None),
        (
            StdioEvidence::Held {
                owners: vec![holder(HOST, 7)],
                end: ChainEnd::Held {
                    chain: vec![HOST],
                    owners: vec![holder(HOST, 7)],
                },
            },
            Live,
            None,
            None,
        ),
        (
            released(PEER_RELEASED),
            Orphaned,
            Some("peer-released"),
            Some(ROOT),
        ),
        (
            released(PEER_HELD_IN_TREE),
            Orphaned,
            Some("peer-released (peer-held-in-tree)"),
            Some(ROOT),
        ),
        (
            released(PIPE_OTHER_END_CLOSED),
            Orphaned,
            Some("peer-released (pipe-other-end-closed)"),
            Some(ROOT),
        ),
        // Released while the host has exited (reparented): host-exited.
        (
            StdioEvidence::NotHeld {
                state: OwnerState::Released {
                    reason: PEER_RELEASED,
                },
                host_gone: true,
            },
            Orphaned,
            Some("host-exited"),
            Some(ROOT),
        ),
        (
            StdioEvidence::NotHeld {
                state: OwnerState::HostGone,
                host_gone: false,
            },
            Orphaned,
            Some("host-exited"),
            Some(ROOT),
        ),
        // Every cause of unknown: never orphaned, whatever else is known.
        (unknown(PEER_UNSEEN), Unknown, Some(PEER_UNSEEN), None),
        (
            unknown(SCAN_INCOMPLETE),
            Unknown,
            Some(SCAN_INCOMPLETE),
            None,
        ),
        (
            unknown(SOCKET_UNCONNECTED),
            Unknown,
            Some(SOCKET_UNCONNECTED),
            None,
        ),
        (unknown("no-stdin"), Unknown, Some("no-stdin"), None),
        (unknown("stdin-closed"), Unknown, Some("stdin-closed"), None),
        (unknown("root-gone"), Unknown, Some("root-gone"), None),
        (
            StdioEvidence::NotHeld {
                state: OwnerState::Unknown {
                    reason: SCAN_INCOMPLETE,
                },
                host_gone: true,
            },
            Unknown,
            Some(SCAN_INCOMPLETE),
            None,
        ),
    ];
    for (evidence, state, reason, link) in cases {
        let what = format!("{evidence:?}");
        let v = from_stdio(ROOT, evidence);
        assert_eq!(state_reason(&v), (state, reason), "{what}");
        assert_eq!(v.released_link, link, "{what}");
        if state != Live {
            assert!(v.owners.is_empty(), "{what}: {v:?}");
        }
    }
}

#[test]
fn behind_relays_the_top_owner_decides() {
    let near = vec![holder(RELAY, 3)];
    // Held at the top: live, the chain recorded, the top's fds owners too.
    let v = from_stdio(
        ROOT,
        StdioEvidence::Held {
            owners: near.clone(),
            end: ChainEnd::Held {
                chain: vec![TOP, RELAY],
                owners: vec![holder(TOP, 9)],
            },
        },
    );
    assert_eq!(state_reason(&v), (TreeState::Live, None));
    assert_eq!(v.chain, vec![TOP, RELAY]);
    assert_eq!(v.owners, vec![holder(RELAY, 3), holder(TOP, 9)]);
    // A single hop is no chain: only the near owners count.
    let v = from_stdio(
        ROOT,
        StdioEvidence::Held {
            owners: near.clone(),
            end: ChainEnd::Held {
                chain: vec![RELAY],
                owners: vec![holder(RELAY, 3)],
            },
        },
    );
    assert!(v.chain.is_empty());
    assert_eq!(v.owners, near);
    // The relay's own upstream released: orphaned at that link.
    let v = from_stdio(
        ROOT,
        StdioEvidence::Held {
            owners: near.clone(),
            end: ChainEnd::Released {
                chain: vec![RELAY],
                link: RELAY,
            },
        },
    );
    assert_eq!(
        state_reason(&v),
        (TreeState::Orphaned, Some("peer-released (relay)"))
    );
    assert_eq!(v.released_link, Some(RELAY));
    // A hop that cannot be judged: unknown, with the chain's reason.
    for reason in ["relay-loop", "relay-chain-too-long", SCAN_INCOMPLETE] {
        let v = from_stdio(
            ROOT,
            StdioEvidence::Held {
                owners: near.clone(),
                end: ChainEnd::Unknown {
                    chain: vec![RELAY],
                    reason,
                },
            },
        );
        assert_eq!(state_reason(&v), (TreeState::Unknown, Some(reason)));
        assert_eq!(v.released_link, None);
    }
}

#[test]
fn a_gone_roots_members_decide_and_only_held_ones_name_owners() {
    use Hold::{Held, NoLink, Released, Unknown};
    let remnant = |holds: Vec<Hold>| StdioEvidence::Remnant {
        holds,
        held: vec![holder(HOST, 1)],
        chain: vec![TOP, RELAY],
    };
    let cases = [
        (vec![Released, NoLink], TreeState::Orphaned, Some("remnant")),
        (vec![Released, Held], TreeState::Live, None),
        (
            vec![Released, Unknown],
            TreeState::Unknown,
            Some("remnant-unproven"),
        ),
        (vec![Unknown, Held], TreeState::Live, None),
    ];
    for (holds, state, reason) in cases {
        let what = format!("{holds:?}");
        let v = from_stdio(ROOT, remnant(holds));
        assert_eq!(state_reason(&v), (state, reason), "{what}");
        assert_eq!(v.owners.is_empty(), state != TreeState::Live, "{what}");
        assert_eq!(v.released_link, None, "{what}");
    }
}

#[test]
fn lineage_fds_keep_an_orphan_live_or_make_it_unknown() {
    let orphan = || {
        from_stdio(
            ROOT,
            StdioEvidence::NotHeld {
                state: OwnerState::Released {
                    reason: PEER_RELEASED,
                },
                host_gone: false,
            },
        )
    };
    let owner = |chain: Vec<ProcKey>| {
        Link::Owner(ChainEnd::Held {
            chain,
            owners: vec![holder(TOP, 4)],
        })
    };
    assert!(lineage_matters(&orphan(), true, &[3]));
    assert!(
        !lineage_matters(&orphan(), false, &[3]),
        "root gone: remnant"
    );
    assert!(!lineage_matters(&orphan(), true, &[]), "no lineage fds");
    let live = from_stdio(ROOT, StdioEvidence::StillHeld);
    assert!(!lineage_matters(&live, true, &[3]));

    // (links in member order, state, reason)
    let cases = vec![
        (vec![], TreeState::Orphaned, Some("peer-released")),
        (
            vec![Link::None, Link::Released],
            TreeState::Orphaned,
            Some("peer-released"),
        ),
        (vec![Link::None, owner(vec![TOP])], TreeState::Live, None),
        (
            vec![Link::Unknown(SCAN_INCOMPLETE)],
            TreeState::Unknown,
            Some("lineage-unproven"),
        ),
        (
            vec![Link::Owner(ChainEnd::Released {
                chain: vec![RELAY],
                link: RELAY,
            })],
            TreeState::Unknown,
            Some("lineage-unproven"),
        ),
        // A later member's proven owner wins over an earlier doubt.
        (
            vec![Link::Unknown(SCAN_INCOMPLETE), owner(vec![TOP])],
            TreeState::Live,
            None,
        ),
        // An owner found first stops the look: later doubts are not read.
        (
            vec![owner(vec![TOP]), Link::Unknown(SCAN_INCOMPLETE)],
            TreeState::Live,
            None,
        ),
    ];
    for (links, state, reason) in cases {
        let what = format!("{links:?}");
        let v = with_lineage(orphan(), links);
        assert_eq!(state_reason(&v), (state, reason), "{what}");
        if state != TreeState::Orphaned {
            assert_eq!(v.released_link, None, "{what}");
        }
        if state == TreeState::Live {
            assert_eq!(v.owners, vec![holder(TOP, 4)], "{what}");
        }
    }
    // A relayed owner's chain is recorded.
    let v = with_lineage(orphan(), [owner(vec![TOP, RELAY])]);
    assert_eq!(v.chain, vec![TOP, RELAY]);
}

#[test]
fn silence_raises_idle_or_superseded_only_past_the_threshold() {
    let after = Duration::from_secs(600);
    let cases = [
        (Duration::ZERO, false, None),
        (Duration::from_secs(599), true, None),
        (after, false, Some("idle")),
        (after, true, Some("superseded")),
        (Duration::from_secs(3600), false, Some("idle")),
    ];
    for (idle_for, newer, want) in cases {
        assert_eq!(
            suspicion(idle_for, after, newer),
            want,
            "{idle_for:?} {newer}"
        );
    }
}
