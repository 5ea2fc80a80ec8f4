//! The memory a tree's members use: RSS and PSS, cached.
//!
//! Owns: reading a process's PSS from smaps_rollup and `MemoryCache`,
//! which reads each process's figures again only once they are stale.
//! Must never: read smaps_rollup for every member on every refresh (it
//! walks every mapping), or report figures for a PID now held by another
//! process.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use crate::{procs::identity::ProcKey, procs::procscan};

/// Proportional set size of a process, from smaps_rollup (needs ptrace
/// access to the process: root, or the same user).
pub fn pss_bytes(proc_root: &Path, pid: u32) -> Option<u64> {
    let text =
        std::fs::read_to_string(proc_root.join(pid.to_string()).join("smaps_rollup")).ok()?;
    parse_pss(&text)
}

/// The `Pss:` figure of a smaps_rollup text, in bytes.
pub fn parse_pss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .and_then(|kib| kib.checked_mul(1024))
}

/// Per-process memory figures (RSS, PSS in bytes), read again only once
/// they are older than `max_age`: smaps_rollup walks every mapping of the
/// process, too costly to read for thousands of members on every metrics
/// refresh. Leak figures a few seconds old serve alerting just as well.
#[derive(Debug)]
pub struct MemoryCache {
    max_age: std::time::Duration,
    entries: HashMap<ProcKey, (std::time::Instant, u64, u64)>,
}

impl MemoryCache {
    pub fn new(max_age: std::time::Duration) -> Self {
        Self {
            max_age,
            entries: HashMap::new(),
        }
    }

    /// RSS and PSS of `key` from /proc, or from the cache while fresh. A
    /// process gone, or a PID now held by another process, reads as none.
    pub fn read(
        &mut self,
        proc_root: &Path,
        key: ProcKey,
        now: std::time::Instant,
    ) -> Option<(u64, u64)> {
        self.get_with(key, now, || {
            let info = procscan::read_process(proc_root, key.tgid).ok()?;
            (info.key == key).then(|| {
                let pss = pss_bytes(proc_root, key.tgid).unwrap_or(0);
                (info.rss_bytes, pss)
            })
        })
    }

    /// RSS and PSS of `key` as last read, however old; never reads /proc
    /// (the daemon's answer to `scan` must not wait for smaps_rollup).
    pub fn cached(&self, key: ProcKey) -> Option<(u64, u64)> {
        self.entries.get(&key).map(|&(_, rss, pss)| (rss, pss))
    }

    /// `read`'s cache logic, with the /proc read passed in.
    fn get_with(
        &mut self,
        key: ProcKey,
        now: std::time::Instant,
        read: impl FnOnce() -> Option<(u64, u64)>,
    ) -> Option<(u64, u64)> {
        if let Some(&(at, rss, pss)) = self.entries.get(&key)
            && now.saturating_duration_since(at) < self.max_age
        {
            return Some((rss, pss));
        }
        match read() {
            Some((rss, pss)) => {
                self.entries.insert(key, (now, rss, pss));
                Some((rss, pss))
            }
            None => {
                self.entries.remove(&key);
                None
            }
        }
    }

    /// Forgets every process not in `keep`.
    pub fn retain(&mut self, keep: &HashSet<ProcKey>) {
        self.entries.retain(|k, _| keep.contains(k));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_are_read_again_only_once_stale_and_forgotten_when_gone() {
        use std::time::{Duration, Instant};
        let mut cache = MemoryCache::new(Duration::from_secs(10));
        let key = ProcKey {
            tgid: 42,
            start_ticks: 7,
        };
        let t0 = Instant::now();
        let mut reads = 0;
        let mut read = |v: Option<(u64, u64)>| {
            reads += 1;
            v
        };
        assert_eq!(
            cache.get_with(key, t0, || read(Some((100, 60)))),
            Some((100, 60))
        );
        // Fresh: no read, the cached figures.
        assert_eq!(
            cache.get_with(key, t0 + Duration::from_secs(9), || read(Some((1, 1)))),
            Some((100, 60))
        );
        // Stale: read again.
        assert_eq!(
            cache.get_with(key, t0 + Duration::from_secs(10), || read(Some((200, 90)))),
            Some((200, 90))
        );
        // Gone (or the PID reused): none, and not cached.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(cache.get_with(key, later, || read(None)), None);
        assert!(cache.is_empty());
        assert_eq!(reads, 3);
        cache.get_with(key, later, || Some((1, 1)));
        cache.retain(&HashSet::new());
        assert_eq!(cache.len(), 0);
    }
}
