//! Stdio activity: how long a tree has been silent.
//!
//! Owns: the idle clock of each tree. Activity is measured as the members'
//! read counters (`rchar` in /proc/PID/io: every byte read, stdio
//! included); a tree is idle for the time since their sum last moved. In
//! the MCP stdio transport every request from the host is a read by the
//! server, so a session in use moves it, while a server's own output
//! (log notifications on a timer) does not count as use.
//! Must never: turn idleness into more than a suspicion (`idle`,
//! `superseded`): heuristics only observe unless configured to enforce.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use crate::procs::identity::ProcKey;

/// `rchar` of a process, from /proc/PID/io (root or same user).
pub fn io_chars(proc_root: &Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("io")).ok()?;
    parse_rchar(&text)
}

/// `rchar` of a /proc/PID/io text.
pub fn parse_rchar(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
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

    /// Keeps the clocks of the trees `keep` says are still known.
    pub fn retain(&mut self, keep: impl Fn(&ProcKey) -> bool) {
        self.clocks.retain(|k, _| keep(k));
        crate::procs::tracker::shrink(&mut self.clocks);
    }

    /// Trees with a clock.
    pub fn len(&self) -> usize {
        self.clocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clocks.is_empty()
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
        book.retain(|_| true);
        assert_eq!(book.len(), 1);
        book.forget(k);
        assert!(book.is_empty());
        book.sample(ProcKey::new(2, 1), 1, t0);
        book.sample(ProcKey::new(3, 1), 1, t0);
        book.retain(|r| r.tgid == 3);
        assert_eq!(book.len(), 1);
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
        assert_eq!(io_chars(dir.path(), 5), Some(10));
        std::fs::write(dir.path().join("5/io"), "rchar: x\n").unwrap();
        assert_eq!(io_chars(dir.path(), 5), None);
        assert_eq!(io_chars(dir.path(), 6), None);
        // Our own counter is readable and moves when we read.
        let me = std::process::id();
        std::fs::write(dir.path().join("x"), vec![0u8; 4096]).unwrap();
        let before = io_chars(Path::new("/proc"), me).unwrap();
        let _ = std::fs::read(dir.path().join("x")).unwrap();
        assert!(io_chars(Path::new("/proc"), me).unwrap() >= before + 4096);
    }
}
