//! Policy: what to do about a tree, given its state, its reason and time.
//!
//! Owns: the decision table. An orphan verdict waits out the grace period
//! (the server may exit by itself on EOF, as the MCP spec asks), then the
//! configured action for its reason applies: `enforce` reaps, `observe`
//! only reports; `--dry-run` turns every enforce into a report.
//! Must never: enforce while tracking is degraded or the configuration
//! failed to load, enforce a heuristic reason unless configured to, or
//! act on a tree whose ownership is unknown. Pure: no I/O, unit-tested.

use std::time::Duration;

use serde::Serialize;

use crate::config::{Action, PolicyConfig, Reason};

/// Maps a tree's reason text to the configured reason. Extra detail in
/// parentheses (`peer-released (peer-unheld)`) is ignored.
pub fn parse_reason(text: &str) -> Option<Reason> {
    let head = text.split(' ').next().unwrap_or(text);
    Reason::ALL.into_iter().find(|r| r.as_str() == head)
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Nothing to decide: the tree is live (or its state is unknown).
    None,
    /// Orphaned, but the grace period has not passed.
    Wait,
    /// Reap it (after one more confirmation by the caller).
    Enforce,
    /// Configured to observe: report only.
    Observe,
    /// Would enforce, but `--dry-run` is on: report what would happen.
    DryRun,
    /// Would enforce, but tracking is degraded or the config failed: hold.
    Hold,
}

/// The facts the decision rests on.
#[derive(Clone, Copy, Debug)]
pub struct Facts {
    /// The tree's orphan or suspect reason, if it has one.
    pub reason: Option<Reason>,
    /// How long ago the reason was first confirmed.
    pub orphaned_for: Duration,
    /// Lost events not yet reconciled, or the configuration is not loaded.
    pub degraded: bool,
}

pub fn decide(policy: &PolicyConfig, facts: Facts) -> Decision {
    let Some(reason) = facts.reason else {
        return Decision::None;
    };
    match policy.actions.get(reason) {
        Action::Observe => Decision::Observe,
        Action::Enforce if facts.orphaned_for < policy.grace => Decision::Wait,
        Action::Enforce if facts.degraded => Decision::Hold,
        Action::Enforce if policy.dry_run => Decision::DryRun,
        Action::Enforce => Decision::Enforce,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn facts(reason: Option<Reason>, secs: u64, degraded: bool) -> Facts {
        Facts {
            reason,
            orphaned_for: Duration::from_secs(secs),
            degraded,
        }
    }

    #[test]
    fn ground_truth_reasons_enforce_after_grace_only() {
        let p = PolicyConfig::default();
        for r in [
            Reason::PeerReleased,
            Reason::HostExited,
            Reason::SessionEnded,
            Reason::Remnant,
        ] {
            assert_eq!(
                decide(&p, facts(Some(r), 0, false)),
                Decision::Wait,
                "{r:?}"
            );
            assert_eq!(
                decide(&p, facts(Some(r), 3, false)),
                Decision::Enforce,
                "{r:?}"
            );
        }
    }

    #[test]
    fn heuristics_only_observe_by_default_however_long() {
        let p = PolicyConfig::default();
        for r in [Reason::Idle, Reason::Superseded] {
            assert_eq!(
                decide(&p, facts(Some(r), 1_000_000, false)),
                Decision::Observe
            );
        }
    }

    #[test]
    fn degraded_tracking_holds_and_dry_run_reports() {
        let mut p = PolicyConfig::default();
        assert_eq!(
            decide(&p, facts(Some(Reason::PeerReleased), 10, true)),
            Decision::Hold
        );
        p.dry_run = true;
        assert_eq!(
            decide(&p, facts(Some(Reason::PeerReleased), 10, false)),
            Decision::DryRun
        );
    }

    #[test]
    fn live_trees_need_no_decision() {
        assert_eq!(
            decide(&PolicyConfig::default(), facts(None, 1_000, false)),
            Decision::None
        );
    }

    #[test]
    fn reasons_parse_with_or_without_detail() {
        assert_eq!(parse_reason("peer-released"), Some(Reason::PeerReleased));
        assert_eq!(
            parse_reason("peer-released (peer-unheld)"),
            Some(Reason::PeerReleased)
        );
        assert_eq!(parse_reason("host-exited"), Some(Reason::HostExited));
        assert_eq!(parse_reason("root-gone"), None);
    }
}
