//! The never-touch checks: what a reap must leave alone, whatever its
//! member lists say.
//!
//! Owns: the reasons a key is refused (`WHY_*`), the `Guard` every key is
//! checked against before anything is opened, `refusal` (PID 0 and 1, the
//! reaper itself and its ancestors, the root's ancestors, the plan's never
//! list, a start time before the root's, the `protect` callback), and
//! reading the ancestors of the reaper and of the root from /proc.
//! Must never: signal or open anything, or allow a key that any one of
//! these checks refuses; a reap checks every key here first, the root
//! before all others (a refused root refuses the whole plan).

use std::path::Path;

use crate::{procs::identity::ProcKey, procs::procscan};

// Why a member was left alone (`ReapReport::refused`).
pub const WHY_PID_ZERO: &str = "PID 0 names no process";
pub const WHY_INIT: &str = "PID 1 is never signalled";
pub const WHY_SELF: &str = "the reaper's own process";
pub const WHY_ANCESTOR: &str = "an ancestor of the reaper";
pub const WHY_ROOT_ANCESTOR: &str = "an ancestor of the tree's root";
pub const WHY_NEVER: &str = "on the plan's never list (host or relay)";
pub use crate::reap::protect::{WHY_PROTECTED, WHY_UNREADABLE};
pub const WHY_OLDER_THAN_ROOT: &str = "started before the tree's root: a reused PID, not a member";
pub const WHY_REUSED: &str = "PID reused: start time differs after pidfd_open";
pub const WHY_NOT_PROCESS: &str = "pidfd_open refused: not a process (a thread id?)";
pub const WHY_NO_FDS: &str = "pidfd_open failed: out of file descriptors";
pub const WHY_OPEN_FAILED: &str = "pidfd_open failed";

/// What a key is checked against before anything is opened.
pub struct Guard<'a> {
    pub root: ProcKey,
    pub self_pid: u32,
    /// PIDs of the reaper's parent, its parent, ... up to PID 1.
    pub self_ancestors: &'a [u32],
    /// PIDs of the root's parent, its parent, ... up to PID 1, as the reap
    /// found them when it started (empty once the root is gone). Refused
    /// by PID: a start time no later than the root's is no proof of
    /// membership (a parent may fork the root within its own clock tick).
    pub root_ancestors: &'a [u32],
    pub never: &'a [ProcKey],
    /// Why a key must not be signalled by policy (`protect::check`), if so.
    pub protect: &'a dyn Fn(ProcKey) -> Option<&'static str>,
}

/// Why `key` must not be opened or signalled, if it must not.
pub fn refusal(key: ProcKey, guard: &Guard<'_>) -> Option<&'static str> {
    if key.tgid == 0 {
        Some(WHY_PID_ZERO)
    } else if key.tgid == 1 {
        Some(WHY_INIT)
    } else if key.tgid == guard.self_pid {
        Some(WHY_SELF)
    } else if guard.self_ancestors.contains(&key.tgid) {
        Some(WHY_ANCESTOR)
    } else if guard.root_ancestors.contains(&key.tgid) {
        Some(WHY_ROOT_ANCESTOR)
    } else if guard.never.iter().any(|n| n.tgid == key.tgid) {
        Some(WHY_NEVER)
    } else if key.start_ticks < guard.root.start_ticks {
        Some(WHY_OLDER_THAN_ROOT)
    } else {
        (guard.protect)(key)
    }
}

/// The PIDs above `pid` up to (not including) PID 1; bounded, and stops at
/// the first unreadable step.
pub(super) fn ancestors_of(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    for _ in 0..256 {
        match procscan::read_process(proc_root, cur) {
            Ok(p) if p.ppid > 1 && !out.contains(&p.ppid) => {
                out.push(p.ppid);
                cur = p.ppid;
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: ProcKey = ProcKey::new(500, 1000);

    fn check(
        key: ProcKey,
        never: &[ProcKey],
        protect: &dyn Fn(ProcKey) -> Option<&'static str>,
    ) -> Option<&'static str> {
        let guard = Guard {
            root: ROOT,
            self_pid: 42,
            self_ancestors: &[41, 40],
            root_ancestors: &[499, 498],
            never,
            protect,
        };
        refusal(key, &guard)
    }

    #[test]
    fn a_member_of_the_tree_is_allowed() {
        assert_eq!(check(ROOT, &[], &|_| None), None);
        assert_eq!(check(ProcKey::new(600, 1000), &[], &|_| None), None);
        assert_eq!(check(ProcKey::new(3, 5000), &[], &|_| None), None);
    }

    #[test]
    fn pid_one_zero_self_and_ancestors_are_refused() {
        assert_eq!(check(ProcKey::new(1, 2000), &[], &|_| None), Some(WHY_INIT));
        assert_eq!(
            check(ProcKey::new(0, 2000), &[], &|_| None),
            Some(WHY_PID_ZERO)
        );
        assert_eq!(
            check(ProcKey::new(42, 2000), &[], &|_| None),
            Some(WHY_SELF)
        );
        assert_eq!(
            check(ProcKey::new(40, 2000), &[], &|_| None),
            Some(WHY_ANCESTOR)
        );
    }

    #[test]
    fn the_roots_ancestors_are_refused_even_from_the_roots_own_tick() {
        assert_eq!(
            check(ProcKey::new(499, ROOT.start_ticks), &[], &|_| None),
            Some(WHY_ROOT_ANCESTOR)
        );
        assert_eq!(
            check(ProcKey::new(498, 5000), &[], &|_| None),
            Some(WHY_ROOT_ANCESTOR)
        );
    }

    #[test]
    fn never_list_matches_by_pid() {
        let host = ProcKey::new(700, 900);
        assert_eq!(
            check(ProcKey::new(700, 1500), &[host], &|_| None),
            Some(WHY_NEVER)
        );
        assert_eq!(check(ProcKey::new(701, 1500), &[host], &|_| None), None);
    }

    #[test]
    fn protect_callback_is_honoured() {
        let k = ProcKey::new(800, 1200);
        let protect = |x: ProcKey| (x == k).then_some(WHY_PROTECTED);
        assert_eq!(check(k, &[], &protect), Some(WHY_PROTECTED));
        assert_eq!(check(ProcKey::new(801, 1200), &[], &protect), None);
        let unreadable = |_| Some(WHY_UNREADABLE);
        assert_eq!(check(k, &[], &unreadable), Some(WHY_UNREADABLE));
    }

    #[test]
    fn older_than_root_is_a_reused_pid() {
        assert_eq!(
            check(ProcKey::new(900, 999), &[], &|_| None),
            Some(WHY_OLDER_THAN_ROOT)
        );
        assert_eq!(check(ProcKey::new(900, 1000), &[], &|_| None), None);
    }
}
