//! The soak as the subreaper of everything it starts: reaped tree members
//! and escapees are reparented to it instead of to init, and their zombies
//! are collected here. Without it, on a machine whose init does not reap
//! (some container runtimes), every killed member stays a zombie holding
//! its PID: a long soak would run out of PIDs, and no PID is ever free for
//! the PID-reuse chaos.
//!
//! Owns: the subreaper flag and the registry of the soak's own children
//! (hosts, bystanders, the daemon), whose exit status belongs to whoever
//! started them. Must never: reap a registered child, or signal anything.
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use rustix::process::{Pid, WaitOptions, getpid, set_child_subreaper, waitpid};

static OWN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// A child whose status its starter waits for: never reaped here.
pub fn own(pid: u32) {
    if let Ok(mut o) = OWN.lock() {
        o.get_or_insert_with(HashSet::new).insert(pid);
    }
}

/// Its starter has waited for it.
pub fn disown(pid: u32) {
    if let Ok(mut o) = OWN.lock()
        && let Some(set) = o.as_mut()
    {
        set.remove(&pid);
    }
}

fn is_own(pid: u32) -> bool {
    OWN.lock()
        .map(|o| o.as_ref().is_some_and(|s| s.contains(&pid)))
        .unwrap_or(true)
}

/// Makes this process the subreaper of its descendants.
pub fn become_subreaper() -> Result<()> {
    set_child_subreaper(Some(getpid())).context("PR_SET_CHILD_SUBREAPER")
}

/// Every 200 ms, reaps the zombie children that are not registered, until
/// `stop`; the number reaped.
pub fn reaper(stop: &AtomicBool) -> u64 {
    let mut reaped = 0;
    while !stop.load(Ordering::Relaxed) {
        reaped += reap_once();
        std::thread::sleep(Duration::from_millis(200));
    }
    reaped
}

/// Reaps the zombie children that are not registered, once.
pub fn reap_once() -> u64 {
    let me = getpid().as_raw_nonzero().get().unsigned_abs();
    let mut reaped = 0;
    for pid in zombie_children(me) {
        if is_own(pid) {
            continue;
        }
        let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            continue;
        };
        if let Ok(Some(_)) = waitpid(Some(p), WaitOptions::NOHANG) {
            reaped += 1;
        }
    }
    reaped
}

/// Zombies whose parent is `parent`.
fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| zombie_parent(&s))
                == Some(parent)
        })
        .collect()
}

/// The parent of a zombie, from its /proc/PID/stat; `None` if not a zombie.
fn zombie_parent(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split(' ');
    (f.next()? == "Z").then_some(())?;
    f.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_zombies_have_a_zombie_parent() {
        assert_eq!(zombie_parent("7 (sleep) Z 42 7 7 0"), Some(42));
        assert_eq!(zombie_parent("7 (a) b) S 42 7 7 0"), None);
        assert_eq!(zombie_parent("nonsense"), None);
    }
}
