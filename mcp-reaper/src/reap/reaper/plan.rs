//! What a reap is asked to do, and what it reports.
//!
//! Owns: `ReapPlan` (the tree, its known members, the never list, grace
//! periods, dry run, where identities are checked and stops recorded), the
//! report types (`ReapReport`, `MemberResult`, `Outcome`) and `classify`,
//! the outcome of a reap from its counts.
//! Must never: signal, open or read anything: these are plain data and a
//! pure function; the checks on each key are `guard`'s, the signalling
//! `run`'s.

use std::{path::PathBuf, time::Duration};

use serde::Serialize;

use crate::procs::identity::ProcKey;

/// Default wait for exits after SIGKILL.
pub const DEFAULT_GRACE_KILL: Duration = Duration::from_secs(5);

/// One tree to reap.
#[derive(Clone, Debug)]
pub struct ReapPlan {
    /// The process the host spawned.
    pub root: ProcKey,
    /// Known members (the root is added if missing).
    pub members: Vec<ProcKey>,
    /// Never signalled, whatever the member lists say: the host, relays.
    /// Matched by PID: a member key sharing a PID with a live `never`
    /// process is stale anyway.
    pub never: Vec<ProcKey>,
    /// SIGTERM -> SIGKILL.
    pub grace_term: Duration,
    /// How long to wait for exits after SIGKILL before calling the
    /// survivors unkillable.
    pub grace_kill: Duration,
    /// Open nothing, send nothing: report what would be signalled.
    pub dry_run: bool,
    /// The /proc of the reaper's PID namespace (identity checks).
    pub proc_root: PathBuf,
    /// The state directory where what is stopped is recorded before it is
    /// stopped (`stopped::StopLog`); `None`: not recorded.
    pub stop_log: Option<PathBuf>,
    /// Fault injection (tests, `MCP_REAPER_FAULT_DIE_AFTER_STOP=1`): the
    /// process running the reap dies by SIGKILL right after the first
    /// SIGSTOP, as a daemon killed mid-reap would.
    pub fault_die_after_stop: bool,
}

impl ReapPlan {
    /// A plan with a 5 s SIGTERM grace, `DEFAULT_GRACE_KILL`, no `never`
    /// list, acting for real, checking identities in /proc.
    pub fn new(root: ProcKey, members: Vec<ProcKey>) -> Self {
        Self {
            root,
            members,
            never: Vec::new(),
            grace_term: Duration::from_secs(5),
            grace_kill: DEFAULT_GRACE_KILL,
            dry_run: false,
            proc_root: PathBuf::from("/proc"),
            stop_log: None,
            fault_die_after_stop: false,
        }
    }
}

/// How a reap ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every member exited after SIGTERM.
    Terminated,
    /// Some member needed SIGKILL; all are gone.
    Killed,
    /// Members were left after SIGKILL and its wait (D state, typically).
    Unkillable,
    /// No member was alive to signal.
    Vanished,
    /// Nothing was done (dry run).
    DryRun,
    /// The plan was refused; nothing was signalled.
    Refused(String),
}

/// What happened to one member.
#[derive(Clone, Debug, Serialize)]
pub struct MemberResult {
    pub key: ProcKey,
    /// Signals sent to it, in order ("SIGSTOP", "SIGTERM", ...).
    pub signals: Vec<&'static str>,
    /// Its pidfd reported exit (or it was gone before it could be opened).
    pub exited: bool,
    /// Its command line (printable, `[comm]` for none) as read when its
    /// pidfd was verified: the audit record's proof of what was signalled.
    /// Empty when it was gone before it could be read.
    pub cmdline: String,
    /// /proc state letter at the end, if it still exists with this key.
    pub state_at_end: Option<char>,
}

/// The audit record of one reap.
#[derive(Clone, Debug, Serialize)]
pub struct ReapReport {
    pub outcome: Outcome,
    /// Every member that was (or in a dry run would be) signalled, and
    /// those that were gone before they could be.
    pub members: Vec<MemberResult>,
    pub signals_sent: u32,
    pub duration: Duration,
    /// Keys left alone, and why.
    pub refused: Vec<(ProcKey, &'static str)>,
}

/// The outcome of a reap that ran (not refused as a whole).
/// `opened`: members signalled at all; `policy_refused`: live members left
/// alone by a rule (not by being gone); `killed`: SIGKILL was needed;
/// `survivors`: members alive at the end.
pub fn classify(
    dry_run: bool,
    opened: usize,
    policy_refused: usize,
    killed: bool,
    survivors: usize,
) -> Outcome {
    if dry_run {
        Outcome::DryRun
    } else if opened == 0 && policy_refused > 0 {
        Outcome::Refused(format!("all {policy_refused} live members were refused"))
    } else if opened == 0 {
        Outcome::Vanished
    } else if survivors > 0 {
        Outcome::Unkillable
    } else if killed {
        Outcome::Killed
    } else {
        Outcome::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(classify(true, 0, 0, false, 0), Outcome::DryRun);
        assert_eq!(classify(false, 0, 0, false, 0), Outcome::Vanished);
        assert!(matches!(
            classify(false, 0, 2, false, 0),
            Outcome::Refused(_)
        ));
        assert_eq!(classify(false, 3, 0, false, 0), Outcome::Terminated);
        assert_eq!(classify(false, 3, 1, true, 0), Outcome::Killed);
        assert_eq!(classify(false, 3, 0, true, 1), Outcome::Unkillable);
    }
}
