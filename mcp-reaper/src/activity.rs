//! Stdio activity: how long a tree has been silent.
//!
//! Owns: the idle clock of each tree. Activity is measured as the root's
//! I/O character counters (`rchar` + `wchar` in /proc/PID/io: every byte
//! read from or written to its stdio, among others); a tree is idle for the
//! time since those counters last moved. The MCP stdio transport makes
//! every request and response a read and a write by the root or the
//! process that inherited its stdio, so a session in use moves them.
//! Must never: turn idleness into more than a suspicion (`idle`,
//! `superseded`): heuristics only observe unless configured to enforce.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use crate::identity::ProcKey;

/// `rchar + wchar` of a process, from /proc/PID/io (root or same user).
pub fn io_chars(proc_root: &Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("io")).ok()?;
    let mut total = 0u64;
    let mut seen = 0;
    for line in text.lines() {
        if let Some(v) = line
            .strip_prefix("rchar:")
            .or_else(|| line.strip_prefix("wchar:"))
        {
            total = total.saturating_add(v.trim().parse::<u64>().ok()?);
            seen += 1;
        }
    }
    (seen == 2).then_some(total)
}

#[derive(Clone, Copy, Debug)]
struct Clock {
    chars: u64,
    since: Instant,
}

/// Idle clocks per tree.
#[derive(Debug, Default)]
pub struct ActivityBook {
    clocks: HashMap<ProcKey, Clock>,
}

impl ActivityBook {
    /// Records a sample of the tree's activity counter (the sum over the
    /// members that hold its stdio) and returns how long it has not moved.
    pub fn sample(&mut self, root: ProcKey, chars: u64, now: Instant) -> Duration {
        let clock = self
            .clocks
            .entry(root)
            .or_insert(Clock { chars, since: now });
        if chars != clock.chars {
            *clock = Clock { chars, since: now };
        }
        now.saturating_duration_since(clock.since)
    }

    pub fn forget(&mut self, root: ProcKey) {
        self.clocks.remove(&root);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_restarts_whenever_the_counter_moves() {
        let mut book = ActivityBook::default();
        let k = ProcKey::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(book.sample(k, 100, t0), Duration::ZERO);
        assert_eq!(
            book.sample(k, 100, t0 + Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(
            book.sample(k, 150, t0 + Duration::from_secs(6)),
            Duration::ZERO
        );
        assert_eq!(
            book.sample(k, 150, t0 + Duration::from_secs(9)),
            Duration::from_secs(3)
        );
        book.forget(k);
        assert_eq!(
            book.sample(k, 150, t0 + Duration::from_secs(20)),
            Duration::ZERO
        );
    }

    #[test]
    fn io_counters_parse_from_proc_and_fixtures() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("5")).unwrap();
        std::fs::write(
            dir.path().join("5/io"),
            "rchar: 10\nwchar: 32\nsyscr: 1\nsyscw: 1\n",
        )
        .unwrap();
        assert_eq!(io_chars(dir.path(), 5), Some(42));
        std::fs::write(dir.path().join("5/io"), "rchar: x\n").unwrap();
        assert_eq!(io_chars(dir.path(), 5), None);
        assert_eq!(io_chars(dir.path(), 6), None);
        // Our own counters are readable and move when we write.
        let me = std::process::id();
        let before = io_chars(Path::new("/proc"), me).unwrap();
        std::fs::write(dir.path().join("x"), vec![0u8; 4096]).unwrap();
        assert!(io_chars(Path::new("/proc"), me).unwrap() >= before + 4096);
    }
}
