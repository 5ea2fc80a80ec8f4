//! The truth about one tree's stdio for the policy property: who really
//! holds each far end (the owner, a relay hop and what its upstream does,
//! a tree member, a holder no walk can see), what could not be read, a
//! host's `release`, the tree's silence and the policy in force; and what
//! the kernel and a walk of /proc would report of it, which is all a check
//! gets to see (`ownership`'s rules: sock_diag keeps the peer while any
//! file holds it, a pipe's other end polls POLLHUP once no file holds it,
//! an unreadable process hides what it holds).

use std::time::Duration;

use proptest::prelude::*;

use crate::{
    config::{Action, Actions, PolicyConfig},
    ownership::{
        FdHolder, FdMode, FdOwnership, Kernel, Seen, StdioObject,
        chain::{ChainEnd, Link},
    },
    procs::identity::ProcKey,
};

/// The tree's owner: the host, outside the tree, no relay.
pub(super) const OWNER: ProcKey = ProcKey::new(100, 50);
/// A relay hop of the host rule, outside the tree.
pub(super) const RELAY: ProcKey = ProcKey::new(101, 51);
/// A process that is neither (a release's wrong target).
pub(super) const OTHER: ProcKey = ProcKey::new(102, 52);
pub(super) const ROOT: ProcKey = ProcKey::new(200, 60);

pub(super) fn holder(key: ProcKey) -> FdHolder {
    FdHolder {
        key,
        fd: 7,
        mode: FdMode::ReadWrite,
    }
}

/// What the root's stdin is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stdin {
    StreamSocket,
    /// A stream socket that was never connected.
    Unconnected,
    Dgram,
    Pipe,
    Tty,
    File,
    Closed,
    /// Its fd link could not be read.
    FdUnreadable,
    /// sock_diag in its namespace could not be asked (namespace not
    /// visible, query failed).
    NamespaceHidden,
}

/// Where a relay hop's own upstream leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upstream {
    Owner,
    Released,
    Unreadable,
}

/// Who holds the far end of the root's stdin, in truth.
#[derive(Clone, Copy, Debug)]
pub(super) struct Far {
    pub(super) owner: bool,
    pub(super) relay: Option<Upstream>,
    pub(super) member: bool,
    /// A holder no walk sees: a thread with its own fd table, a far end in
    /// flight in an SCM_RIGHTS message (sockets only: see `case`).
    pub(super) hidden: bool,
}

/// What one class of a member's fds really links to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkTruth {
    None,
    Released,
    /// The owner holds its far end.
    Owner,
    /// A relay holds it, whose upstream was released.
    RelayReleased,
    /// A relay holds it, whose upstream could not be read.
    RelayUnreadable,
    Unreadable,
}

#[derive(Clone, Debug)]
pub(super) struct Alive {
    pub(super) stdin: Stdin,
    pub(super) far: Far,
    /// Someone called shutdown() on the far end without closing it.
    pub(super) shutdown_called: bool,
    /// The fd tables of the outside holders could not be read.
    pub(super) holders_unreadable: bool,
    /// Some other live process could not be read.
    pub(super) other_unreadable: bool,
    /// The kernel could be asked whether the pipe's other end is open.
    pub(super) pipe_pollable: bool,
    /// The last full check recorded the owner (the fast path may apply).
    pub(super) owner_recorded: bool,
    /// Every owner seen before has exited.
    pub(super) previous_owners_gone: bool,
    pub(super) host_gone: bool,
    /// Each member's lineage fds (empty: the host rule names none).
    pub(super) lineage: Vec<LinkTruth>,
}

/// A surviving member of a tree whose root is gone.
#[derive(Clone, Copy, Debug)]
pub(super) struct Member {
    pub(super) stdin: LinkTruth,
    pub(super) stdout: LinkTruth,
    pub(super) lineage: LinkTruth,
}

#[derive(Clone, Debug)]
pub(super) enum Root {
    Alive(Alive),
    Gone(Vec<Member>),
}

/// A host's `release`, and whom it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Release {
    None,
    Owner,
    Other,
}

#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) root: Root,
    pub(super) release: Release,
    /// Silent for longer than `idle_after`.
    pub(super) idle: bool,
    pub(super) newer_in_use: bool,
    pub(super) policy: PolicyConfig,
    pub(super) orphaned_for: Duration,
    pub(super) degraded: bool,
}

fn link_truth() -> impl Strategy<Value = LinkTruth> {
    prop_oneof![
        Just(LinkTruth::None),
        Just(LinkTruth::Released),
        Just(LinkTruth::Owner),
        Just(LinkTruth::RelayReleased),
        Just(LinkTruth::RelayUnreadable),
        Just(LinkTruth::Unreadable),
    ]
}

fn stdin() -> impl Strategy<Value = Stdin> {
    prop_oneof![
        4 => Just(Stdin::StreamSocket),
        3 => Just(Stdin::Pipe),
        3 => prop_oneof![
            Just(Stdin::Unconnected),
            Just(Stdin::Dgram),
            Just(Stdin::Tty),
            Just(Stdin::File),
            Just(Stdin::Closed),
            Just(Stdin::FdUnreadable),
            Just(Stdin::NamespaceHidden),
        ],
    ]
}

fn alive() -> impl Strategy<Value = Alive> {
    let upstream = prop_oneof![
        Just(Upstream::Owner),
        Just(Upstream::Released),
        Just(Upstream::Unreadable)
    ];
    (
        stdin(),
        (
            any::<bool>(),
            prop::option::weighted(0.3, upstream),
            any::<bool>(),
            prop::bool::weighted(0.2),
        ),
        prop::array::uniform6(prop::bool::weighted(0.3)),
        prop::collection::vec(link_truth(), 0..3),
    )
        .prop_map(|(stdin, (owner, relay, member, hidden), flags, lineage)| {
            // The design's blind spot: a complete walk that sees no holder
            // outside the tree proves a pipe released, and a socket whose
            // peer it saw held inside the tree; a holder no walk can see
            // is no case the design answers for there.
            let hidden = hidden && stdin != Stdin::Pipe && !member;
            let [
                shutdown_called,
                holders_unreadable,
                other_unreadable,
                not_pollable,
                gone,
                reparented,
            ] = flags;
            Alive {
                stdin,
                far: Far {
                    owner,
                    relay,
                    member,
                    hidden,
                },
                shutdown_called,
                holders_unreadable,
                other_unreadable,
                pipe_pollable: !not_pollable,
                owner_recorded: owner && !reparented,
                previous_owners_gone: gone,
                host_gone: reparented,
                lineage,
            }
        })
}

fn policy() -> impl Strategy<Value = PolicyConfig> {
    let action = || prop_oneof![Just(Action::Observe), Just(Action::Enforce)];
    (
        prop::array::uniform6(action()),
        // Observe mode: every reason only observed.
        prop::bool::weighted(0.2),
        0..3u64,
        any::<bool>(),
    )
        .prop_map(|(a, observe_mode, grace, dry_run)| {
            let a = if observe_mode {
                [Action::Observe; 6]
            } else {
                a
            };
            PolicyConfig {
                grace: Duration::from_secs(grace),
                dry_run,
                actions: Actions {
                    peer_released: a[0],
                    host_exited: a[1],
                    session_ended: a[2],
                    remnant: a[3],
                    idle: a[4],
                    superseded: a[5],
                },
                ..PolicyConfig::default()
            }
        })
}

pub(super) fn case() -> impl Strategy<Value = Case> {
    let member =
        (link_truth(), link_truth(), link_truth()).prop_map(|(stdin, stdout, lineage)| Member {
            stdin,
            stdout,
            lineage,
        });
    let root = prop_oneof![
        3 => alive().prop_map(Root::Alive),
        1 => prop::collection::vec(member, 0..4).prop_map(Root::Gone),
    ];
    let release = prop_oneof![
        2 => Just(Release::None),
        1 => Just(Release::Owner),
        1 => Just(Release::Other)
    ];
    (
        root,
        release,
        any::<bool>(),
        any::<bool>(),
        policy(),
        0..5u64,
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(root, release, idle, newer_in_use, policy, secs, degraded)| Case {
                root,
                release,
                idle,
                newer_in_use,
                policy,
                orphaned_for: Duration::from_secs(secs),
                degraded,
            },
        )
}

impl Alive {
    fn connected(&self) -> bool {
        matches!(self.stdin, Stdin::StreamSocket | Stdin::Pipe)
    }

    fn anyone_holds(&self) -> bool {
        let f = self.far;
        f.owner || f.relay.is_some() || f.member || f.hidden
    }

    /// The owner holds the far end of the root's stdin: itself (seen or
    /// not), or at the top of a relay hop that holds it.
    pub(super) fn owner_holds_stdin(&self) -> bool {
        self.connected()
            && (self.far.owner || self.far.hidden || self.far.relay == Some(Upstream::Owner))
    }

    /// The outside holders the walk sees.
    pub(super) fn seen_outside(&self) -> Vec<FdHolder> {
        if !self.connected() || self.holders_unreadable {
            return Vec::new();
        }
        let mut v = Vec::new();
        if self.far.owner {
            v.push(holder(OWNER));
        }
        if self.far.relay.is_some() {
            v.push(holder(RELAY));
        }
        v
    }

    /// Every live process was read.
    pub(super) fn walk_complete(&self) -> bool {
        let outside = self.far.owner || self.far.relay.is_some();
        let holder_unread = self.holders_unreadable && outside;
        !(self.other_unreadable || holder_unread)
    }

    /// What sock_diag (or a pipe poll) says of the far end.
    pub(super) fn kernel(&self) -> Kernel {
        match self.stdin {
            Stdin::Unconnected => Kernel::Unconnected,
            Stdin::StreamSocket if self.anyone_holds() => Kernel::PeerPresent {
                shutdown: if self.shutdown_called { 3 } else { 0 },
            },
            Stdin::StreamSocket => Kernel::PeerGone,
            Stdin::Pipe if !self.anyone_holds() && self.pipe_pollable => Kernel::PipeClosed,
            _ => Kernel::Pipe,
        }
    }

    /// The kernel's own word that no file holds the far end any more.
    pub(super) fn kernel_says_released(&self) -> bool {
        matches!(self.kernel(), Kernel::PeerGone | Kernel::PipeClosed)
    }

    /// Where the walk saw the far end held.
    pub(super) fn seen(&self) -> Seen {
        if !self.seen_outside().is_empty() {
            Seen::Outside
        } else if self.stdin == Stdin::StreamSocket && self.far.member {
            Seen::InsideOnly
        } else {
            Seen::Nowhere
        }
    }

    /// The root's stdin as `ownership::fd_owners` leaves it before its
    /// far end's verdict is recorded, and whether it has a far end to judge.
    pub(super) fn stdin_fd(&self) -> (FdOwnership, bool) {
        let mut own = FdOwnership {
            fd: 0,
            object: StdioObject::Other,
            owners: Vec::new(),
            released: false,
            reason: None,
        };
        let mut judged = false;
        match self.stdin {
            Stdin::StreamSocket | Stdin::Unconnected | Stdin::Dgram => {
                own.object = StdioObject::UnixSocket {
                    inode: 9,
                    peer: None,
                    shutdown: 0,
                };
                if self.stdin == Stdin::Dgram {
                    own.reason = Some("dgram-socket");
                } else {
                    judged = true;
                }
            }
            Stdin::Pipe => {
                own.object = StdioObject::Pipe { inode: 9 };
                judged = true;
            }
            Stdin::Tty => own.object = StdioObject::Tty,
            Stdin::File => own.object = StdioObject::File,
            Stdin::Closed => own.object = StdioObject::Closed,
            Stdin::FdUnreadable => own.reason = Some("fd-unreadable"),
            Stdin::NamespaceHidden => own.reason = Some("netns-unreadable"),
        }
        if judged {
            own.owners = self.seen_outside();
        }
        (own, judged)
    }

    /// Where `chain::follow` ends for the holders the walk saw.
    pub(super) fn chain_end(&self, owners: &[FdHolder]) -> ChainEnd {
        let direct: Vec<FdHolder> = owners.iter().filter(|h| h.key != RELAY).copied().collect();
        if let Some(top) = direct.first() {
            return ChainEnd::Held {
                chain: vec![top.key],
                owners: direct,
            };
        }
        match self.far.relay {
            Some(Upstream::Owner) => ChainEnd::Held {
                chain: vec![OWNER, RELAY],
                owners: vec![holder(OWNER)],
            },
            Some(Upstream::Released) => ChainEnd::Released {
                chain: vec![RELAY],
                link: RELAY,
            },
            _ => ChainEnd::Unknown {
                chain: vec![RELAY],
                reason: "fd-unreadable",
            },
        }
    }
}

impl LinkTruth {
    /// What `chain::fd_links` reports of it.
    pub(super) fn link(self) -> Link {
        match self {
            Self::None => Link::None,
            Self::Released | Self::RelayReleased => Link::Released,
            Self::Owner => Link::Owner(ChainEnd::Held {
                chain: vec![OWNER],
                owners: vec![holder(OWNER)],
            }),
            Self::RelayUnreadable => Link::Unknown("fd-unreadable"),
            Self::Unreadable => Link::Unknown("scan-incomplete"),
        }
    }
}

impl Member {
    /// The owner holds this member: by its stdin or a lineage fd, or by
    /// its stdout while its stdin was not released (`remnant`'s rule).
    pub(super) fn owner_holds(&self) -> bool {
        self.stdin == LinkTruth::Owner
            || self.lineage == LinkTruth::Owner
            || (self.stdout == LinkTruth::Owner
                && !matches!(self.stdin, LinkTruth::Released | LinkTruth::RelayReleased))
    }

    /// Some link could not be judged.
    pub(super) fn has_gap(&self) -> bool {
        let gap = |l: LinkTruth| matches!(l, LinkTruth::Unreadable | LinkTruth::RelayUnreadable);
        let stdin_released = matches!(self.stdin, LinkTruth::Released | LinkTruth::RelayReleased);
        gap(self.stdin) || gap(self.lineage) || (gap(self.stdout) && !stdin_released)
    }
}
