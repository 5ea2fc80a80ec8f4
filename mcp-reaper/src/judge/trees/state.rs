//! A tree's state, and the state an ownership verdict gives it.
//!
//! Owns: `TreeState` and `classify`, the pure mapping from the stdio
//! owner's state (and whether the root was reparented) to a tree state
//! and its reason.
//! Must never: read anything or signal anything, or call a tree orphaned
//! on less than the kernel's word: an `Unknown` ownership stays `unknown`.

use serde::{Deserialize, Serialize};

use crate::ownership::{self, OwnerState};

/// A tree's state, as `scan` and the metrics report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeState {
    /// Its owner holds the far end of its stdio.
    Live,
    /// Its owner let go (reason says how); a candidate for reaping.
    Orphaned,
    /// A heuristic says it may be abandoned; never reaped by default.
    Suspect,
    /// Ownership could not be established; never acted on.
    Unknown,
}

impl TreeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Orphaned => "orphaned",
            Self::Suspect => "suspect",
            Self::Unknown => "unknown",
        }
    }
}

/// Turns an ownership verdict into a state and reason. `reparented`: the
/// root's parent is no longer a host (PID 1 or a subreaper adopted it),
/// which with a released far end means the host itself went away.
pub fn classify(state: &OwnerState, reparented: bool) -> (TreeState, Option<String>) {
    match state {
        OwnerState::Held { .. } => (TreeState::Live, None),
        OwnerState::HostGone => (TreeState::Orphaned, Some("host-exited".into())),
        OwnerState::Released { .. } if reparented => {
            (TreeState::Orphaned, Some("host-exited".into()))
        }
        OwnerState::Released { reason } => (
            TreeState::Orphaned,
            Some(if *reason == ownership::PEER_RELEASED {
                "peer-released".to_string()
            } else {
                // peer-held-in-tree / peer-unheld: the host let go all the same.
                format!("peer-released ({reason})")
            }),
        ),
        OwnerState::Unknown { reason } => (TreeState::Unknown, Some((*reason).to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ownership_is_never_orphaned() {
        let (state, _) = classify(&OwnerState::Unknown { reason: "x" }, true);
        assert_eq!(state, TreeState::Unknown);
        let (state, reason) = classify(&OwnerState::Held { owners: vec![] }, true);
        assert_eq!((state, reason), (TreeState::Live, None));
    }

    #[test]
    fn released_with_the_host_gone_is_host_exited() {
        let released = OwnerState::Released {
            reason: ownership::PEER_RELEASED,
        };
        assert_eq!(
            classify(&released, false),
            (TreeState::Orphaned, Some("peer-released".into()))
        );
        assert_eq!(
            classify(&released, true),
            (TreeState::Orphaned, Some("host-exited".into()))
        );
        assert_eq!(
            classify(&OwnerState::HostGone, false).1.as_deref(),
            Some("host-exited")
        );
    }
}
