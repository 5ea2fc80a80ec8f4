//! The verdict on a tree whose root is gone while members live on.
//!
//! Owns: deciding, from what each surviving member's fds link to, whether
//! the tree is still held by a live owner (live), cannot be told
//! (unknown), or is a remnant. A pure function over evidence the
//! supervisor gathers (`ownership::chain::fd_links`).
//! Must never: call a tree a remnant while any member's stdin, or a
//! lineage fd, leads to a live owner, or while any counted link could not
//! be judged; read /proc or signal anything.
//!
//! The rule follows the MCP shutdown: it begins with the host closing the
//! server's stdin. A member whose stdin's far end was released can never
//! hear from its host again, so its stdout or stderr still reaching the
//! host does not hold the tree: that is the TypeScript SDK's `close()`,
//! which ends stdin and kills only the tree's root while it keeps reading
//! the survivors' stdout. A member whose stdin is no link at all (closed,
//! /dev/null) is held by its stdout, as before: a launcher that forked the
//! real server and exited while the server keeps talking to the host is
//! not a remnant.

use crate::{judge::trees::TreeState, ownership::chain::Link};

/// What one class of a member's fds (stdin, stdout, lineage fds) links to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Leads to a live owner.
    Held,
    /// Led to one until its far end was released.
    Released,
    /// No link (closed, a file, a tty, none given).
    NoLink,
    /// Could not be judged.
    Unknown,
}

impl From<&Link> for Hold {
    fn from(l: &Link) -> Self {
        match l {
            Link::Owner(crate::ownership::chain::ChainEnd::Held { .. }) => Hold::Held,
            Link::Owner(_) | Link::Unknown(_) => Hold::Unknown,
            Link::Released => Hold::Released,
            Link::None => Hold::NoLink,
        }
    }
}

/// Whether a surviving member holds the tree, from its stdin, stdout and
/// lineage fds: `Held`, `Unknown`, or neither (`Released` / `NoLink`).
#[must_use]
pub fn member_hold(stdin: Hold, stdout: Hold, lineage: Hold) -> Hold {
    // The host released this member's stdin: its stdout no longer counts.
    let stdout = if stdin == Hold::Released {
        Hold::Released
    } else {
        stdout
    };
    let all = [stdin, stdout, lineage];
    if all.contains(&Hold::Held) {
        Hold::Held
    } else if all.contains(&Hold::Unknown) {
        Hold::Unknown
    } else if all.contains(&Hold::Released) {
        Hold::Released
    } else {
        Hold::NoLink
    }
}

/// The tree's state and reason from its surviving members' holds.
#[must_use]
pub fn verdict(members: &[Hold]) -> (TreeState, Option<String>) {
    if members.contains(&Hold::Held) {
        (TreeState::Live, None)
    } else if members.contains(&Hold::Unknown) {
        (TreeState::Unknown, Some("remnant-unproven".into()))
    } else {
        (TreeState::Orphaned, Some("remnant".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Hold::*;

    #[test]
    fn a_member_holds_the_tree_by_its_stdin_or_lineage_and_by_stdout_only_without_stdin() {
        // (stdin, stdout, lineage) -> hold
        let cases = [
            // The SDK's close(): stdin released, stdout still read by the
            // host. The host can never talk to it again.
            ((Released, Held, NoLink), Released),
            ((Released, Held, Released), Released),
            ((Released, Unknown, NoLink), Released),
            // A double-forked server still serving: stdin held.
            ((Held, Held, NoLink), Held),
            ((Held, Released, NoLink), Held),
            // A lineage socket the owner still holds keeps it (OpenClaw).
            ((Released, Released, Held), Held),
            ((Released, NoLink, Unknown), Unknown),
            // No stdin link at all: stdout decides, as before.
            ((NoLink, Held, NoLink), Held),
            ((NoLink, Unknown, NoLink), Unknown),
            ((NoLink, Released, NoLink), Released),
            ((NoLink, NoLink, NoLink), NoLink),
            // Stdin not judged: never a remnant on a guess.
            ((Unknown, Released, NoLink), Unknown),
            ((Unknown, Held, NoLink), Held),
        ];
        for ((stdin, stdout, lineage), want) in cases {
            assert_eq!(
                member_hold(stdin, stdout, lineage),
                want,
                "{stdin:?} {stdout:?} {lineage:?}"
            );
        }
    }

    #[test]
    fn a_tree_is_a_remnant_only_when_no_member_holds_it_and_all_were_judged() {
        let r = |s: &str| Some(s.to_string());
        let cases = [
            (vec![Released, NoLink], (TreeState::Orphaned, r("remnant"))),
            (vec![], (TreeState::Orphaned, r("remnant"))),
            (vec![Released, Held], (TreeState::Live, None)),
            (vec![Unknown, Held], (TreeState::Live, None)),
            (
                vec![Released, Unknown],
                (TreeState::Unknown, r("remnant-unproven")),
            ),
        ];
        for (members, want) in cases {
            assert_eq!(verdict(&members), want, "{members:?}");
        }
    }
}
