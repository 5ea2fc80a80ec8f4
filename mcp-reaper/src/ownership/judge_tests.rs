//! The release rules over their whole table of cases, and their agreement
//! with the stdio verdict.

use super::judge::*;
use crate::ownership::{FdOwnership, OwnerState, StdioObject, verdict};
use Judgement::{Held, Released, Unknown};
use Seen::{InsideOnly, Nowhere, Outside};

const PRESENT: Kernel = Kernel::PeerPresent { shutdown: 0 };
const SHUT: Kernel = Kernel::PeerPresent { shutdown: 3 };
const GONE: Kernel = Kernel::PeerGone;
const UNCONN: Kernel = Kernel::Unconnected;
const PIPE: Kernel = Kernel::Pipe;
const PIPE_CLOSED: Kernel = Kernel::PipeClosed;

/// Every (kernel, walk complete, seen) and what it must give.
const TABLE: &[(Kernel, bool, Seen, Judgement)] = &[
    // The kernel's record of a release: nothing else matters.
    (GONE, true, Outside, Released(PEER_RELEASED)),
    (GONE, true, InsideOnly, Released(PEER_RELEASED)),
    (GONE, true, Nowhere, Released(PEER_RELEASED)),
    (GONE, false, Outside, Released(PEER_RELEASED)),
    (GONE, false, InsideOnly, Released(PEER_RELEASED)),
    (GONE, false, Nowhere, Released(PEER_RELEASED)),
    // Peer present: held, held in the tree (complete walk only), or
    // held by someone the walk cannot see.
    (PRESENT, true, Outside, Held),
    (PRESENT, true, InsideOnly, Released(PEER_HELD_IN_TREE)),
    (PRESENT, true, Nowhere, Unknown(PEER_UNSEEN)),
    (PRESENT, false, Outside, Held),
    (PRESENT, false, InsideOnly, Unknown(SCAN_INCOMPLETE)),
    (PRESENT, false, Nowhere, Unknown(SCAN_INCOMPLETE)),
    // shutdown() without close keeps the peer: the same as present.
    (SHUT, true, Outside, Held),
    (SHUT, true, InsideOnly, Released(PEER_HELD_IN_TREE)),
    (SHUT, true, Nowhere, Unknown(PEER_UNSEEN)),
    (SHUT, false, Outside, Held),
    (SHUT, false, InsideOnly, Unknown(SCAN_INCOMPLETE)),
    (SHUT, false, Nowhere, Unknown(SCAN_INCOMPLETE)),
    // No peer and no full shutdown: nothing to follow, nothing proved.
    (UNCONN, true, Outside, Unknown(SOCKET_UNCONNECTED)),
    (UNCONN, true, InsideOnly, Unknown(SOCKET_UNCONNECTED)),
    (UNCONN, true, Nowhere, Unknown(SOCKET_UNCONNECTED)),
    (UNCONN, false, Outside, Unknown(SOCKET_UNCONNECTED)),
    (UNCONN, false, InsideOnly, Unknown(SOCKET_UNCONNECTED)),
    (UNCONN, false, Nowhere, Unknown(SOCKET_UNCONNECTED)),
    // Pipes the kernel says nobody holds the other end of.
    (PIPE_CLOSED, true, Outside, Released(PIPE_OTHER_END_CLOSED)),
    (
        PIPE_CLOSED,
        true,
        InsideOnly,
        Released(PIPE_OTHER_END_CLOSED),
    ),
    (PIPE_CLOSED, true, Nowhere, Released(PIPE_OTHER_END_CLOSED)),
    (PIPE_CLOSED, false, Outside, Released(PIPE_OTHER_END_CLOSED)),
    (
        PIPE_CLOSED,
        false,
        InsideOnly,
        Released(PIPE_OTHER_END_CLOSED),
    ),
    (PIPE_CLOSED, false, Nowhere, Released(PIPE_OTHER_END_CLOSED)),
    // Pipes still open somewhere: only a complete walk proves that no
    // one outside the tree holds the other end.
    (PIPE, true, Outside, Held),
    (PIPE, true, InsideOnly, Released(PIPE_OTHER_END_CLOSED)),
    (PIPE, true, Nowhere, Released(PIPE_OTHER_END_CLOSED)),
    (PIPE, false, Outside, Held),
    (PIPE, false, InsideOnly, Unknown(SCAN_INCOMPLETE)),
    (PIPE, false, Nowhere, Unknown(SCAN_INCOMPLETE)),
];

#[test]
fn verdict_table_covers_every_combination() {
    let kernels = [PRESENT, SHUT, GONE, UNCONN, PIPE, PIPE_CLOSED];
    assert_eq!(TABLE.len(), kernels.len() * 2 * 3);
    for k in kernels {
        for complete in [true, false] {
            for seen in [Outside, InsideOnly, Nowhere] {
                let rows = TABLE
                    .iter()
                    .filter(|r| (r.0, r.1, r.2) == (k, complete, seen))
                    .count();
                assert_eq!(rows, 1, "{k:?} complete={complete} {seen:?}");
            }
        }
    }
}

#[test]
fn verdict_table() {
    for &(kernel, complete, seen, want) in TABLE {
        assert_eq!(
            judge(kernel, complete, seen),
            want,
            "{kernel:?} complete={complete} {seen:?}"
        );
    }
}

/// The same table, carried through to the tree's state when the fd is
/// the root's stdin.
#[test]
fn verdict_table_as_tree_state() {
    for &(kernel, complete, seen, want) in TABLE {
        let h = crate::ownership::FdHolder {
            key: crate::procs::identity::ProcKey::new(9, 9),
            fd: 4,
            mode: crate::ownership::FdMode::ReadWrite,
        };
        let (released, reason) = match want {
            Held => (false, None),
            Released(r) => (true, Some(r)),
            Unknown(r) => (false, Some(r)),
        };
        let stdin = FdOwnership {
            fd: 0,
            object: StdioObject::Other,
            owners: if want == Held { vec![h] } else { vec![] },
            released,
            reason,
        };
        let state = verdict(&[stdin]);
        let ok = match (want, &state) {
            (Held, OwnerState::Held { owners }) => owners == &[h],
            (Released(_), OwnerState::Released { .. }) => true,
            (Unknown(r), OwnerState::Unknown { reason }) => *reason == r,
            _ => false,
        };
        assert!(ok, "{kernel:?} complete={complete} {seen:?}: {state:?}");
    }
}

#[test]
fn kernel_state_from_sock_diag() {
    assert_eq!(Kernel::socket(None, 3), GONE);
    assert_eq!(Kernel::socket(None, 0), UNCONN);
    assert_eq!(Kernel::socket(None, 1), UNCONN);
    assert_eq!(Kernel::socket(Some(7), 0), PRESENT);
    assert_eq!(Kernel::socket(Some(7), 3), SHUT);
}
