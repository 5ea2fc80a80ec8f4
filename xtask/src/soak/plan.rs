//! The soak's plan: which scenario each lifecycle plays and how long it
//! holds, drawn from one seed so that a run can be repeated exactly.
//!
//! Owns: the scenario kinds, what each one expects of the daemon, and the
//! seeded draw. Must never: start a process or read the clock (the plan is
//! pure, so its unit tests need neither root nor time).
use std::time::Duration;

/// One kind of session lifecycle. The host side of each is in `host.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The host keeps its end; the server must answer an echo at the check
    /// with the same (pid, start time), then the host ends the session.
    Kept,
    /// The host closes its end: the tree must be reaped.
    Closed,
    /// shutdown(SHUT_WR) without close: the host still holds the end, so
    /// the tree must live until the host ends the session.
    ShutdownOnly,
    /// The host hands its end to a forked helper and closes its own; the
    /// tree must live while the helper runs and be reaped after it exits.
    HandedOver,
    /// The host passes its end to a keeper process over SCM_RIGHTS and
    /// closes its own; the tree must live while the keeper holds it.
    Passed,
    /// The host is killed with SIGKILL while it owns several trees: every
    /// tree must be reaped.
    HostKilled,
    /// The server starts a setsid child that keeps the server's stdio.
    SetsidKeep,
    /// The server double-forks a setsid child that closes its stdio.
    SetsidClose,
    /// The server forks short-lived children in a loop.
    ForkLoop,
    /// Two trees with identical command lines: one released, one kept.
    Twins,
    /// Pipes instead of a socketpair, as Python hosts use them.
    PipeStdio,
}

impl Kind {
    pub const ALL: [Self; 11] = [
        Self::Kept,
        Self::Closed,
        Self::ShutdownOnly,
        Self::HandedOver,
        Self::Passed,
        Self::HostKilled,
        Self::SetsidKeep,
        Self::SetsidClose,
        Self::ForkLoop,
        Self::Twins,
        Self::PipeStdio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Closed => "closed",
            Self::ShutdownOnly => "shutdown-only",
            Self::HandedOver => "handed-over",
            Self::Passed => "passed",
            Self::HostKilled => "host-killed",
            Self::SetsidKeep => "setsid-keep",
            Self::SetsidClose => "setsid-close",
            Self::ForkLoop => "fork-loop",
            Self::Twins => "twins",
            Self::PipeStdio => "pipe-stdio",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How many server trees the host starts.
    pub fn trees(self) -> usize {
        match self {
            Self::HostKilled => 3,
            Self::Twins => 2,
            _ => 1,
        }
    }

    /// The fake server's mode (its script's first argument).
    pub fn server_mode(self) -> &'static str {
        match self {
            Self::SetsidKeep => "setsid-keep",
            Self::SetsidClose => "setsid-close",
            Self::ForkLoop => "fork-loop",
            _ => "plain",
        }
    }

    /// Whether, after the host's end action, some tree must still be alive
    /// until the check (its owner, or a process it gave the end to, holds
    /// the far end).
    pub fn keeps_after_end(self) -> bool {
        matches!(
            self,
            Self::Kept | Self::ShutdownOnly | Self::HandedOver | Self::Passed | Self::Twins
        )
    }

    /// Trees (by index) that the end action releases at once.
    pub fn released_at_end(self) -> &'static [usize] {
        match self {
            Self::Closed
            | Self::SetsidKeep
            | Self::SetsidClose
            | Self::ForkLoop
            | Self::PipeStdio => &[0],
            Self::HostKilled => &[0, 1, 2],
            Self::Twins => &[0],
            Self::Kept | Self::ShutdownOnly | Self::HandedOver | Self::Passed => &[],
        }
    }

    /// Whether the check asks the server for an echo (the host still talks
    /// to it).
    pub fn echo_at_check(self) -> bool {
        matches!(self, Self::Kept | Self::Twins)
    }
}

/// One lifecycle of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub id: u32,
    pub kind: Kind,
    /// From ready to the end action (0 included: a session may end at once).
    pub hold: Duration,
    /// From the end action to the check, for kinds that keep a tree; for
    /// `HandedOver`, also the helper's life.
    pub keep: Duration,
}

/// The seeded draw: `count` lifecycles, every kind in turn first (so that
/// even a short run has them all), then at random.
pub fn draw(seed: u64, count: u32, kinds: &[Kind]) -> Vec<Lifecycle> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|id| {
            let i = id as usize;
            let kind = match kinds.get(i) {
                Some(k) => *k,
                None => kinds
                    .get(rng.usize(..kinds.len().max(1)))
                    .copied()
                    .unwrap_or(Kind::Closed),
            };
            Lifecycle {
                id,
                kind,
                hold: Duration::from_millis(match rng.u8(..10) {
                    0 => 0,
                    _ => rng.u64(10..600),
                }),
                keep: Duration::from_millis(rng.u64(300..1500)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_plan_and_another_seed_does_not() {
        let a = draw(7, 200, &Kind::ALL);
        assert_eq!(a, draw(7, 200, &Kind::ALL));
        assert_ne!(a, draw(8, 200, &Kind::ALL));
    }

    #[test]
    fn every_kind_comes_first_then_only_the_kinds_asked_for() {
        let plan = draw(1, 50, &Kind::ALL);
        let first: Vec<Kind> = plan.iter().take(Kind::ALL.len()).map(|l| l.kind).collect();
        assert_eq!(first, Kind::ALL);
        let only = draw(1, 50, &[Kind::Kept, Kind::Passed]);
        assert!(
            only.iter()
                .all(|l| matches!(l.kind, Kind::Kept | Kind::Passed))
        );
        assert!(only.iter().any(|l| l.kind == Kind::Passed));
    }

    #[test]
    fn names_round_trip_and_expectations_are_consistent() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert!(k.released_at_end().iter().all(|&t| t < k.trees()), "{k:?}");
            // A kind either keeps a tree past its end action or releases all.
            assert_eq!(
                k.keeps_after_end(),
                k.released_at_end().len() < k.trees(),
                "{k:?}"
            );
        }
        assert_eq!(Kind::from_name("nope"), None);
    }
}
