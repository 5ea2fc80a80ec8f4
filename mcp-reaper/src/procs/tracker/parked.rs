//! Exits that arrived before their process: parked until it appears.
//!
//! Owns: the parked exits (code, the `gc` round they were parked in, their
//! arrival order), their bound, evicting the oldest when full, and expiring
//! those whose process never showed up.
//! Must never: touch the process table (the tracker applies a parked exit
//! when it inserts the process, and degrades itself on an eviction), or
//! grow past its bound.

use std::collections::HashMap;

use super::bounds::shrink;
use crate::procs::identity::ProcKey;

/// Most exits parked at once (fewer for a smaller table).
const MAX_PARKED: usize = 4096;

/// A parked exit is dropped after this many `gc` rounds without its process
/// appearing: by then it belongs to a process this table never sees (one
/// that lived and died between a /proc scan and the first events).
const PARKED_GC_ROUNDS: u64 = 2;

#[derive(Clone, Copy, Debug)]
struct Parked {
    code: u32,
    /// `gc` round it was parked in.
    round: u64,
    /// Arrival order, for evicting the oldest.
    seq: u64,
}

/// The parked exits, keyed by the process they belong to.
#[derive(Debug, Default)]
pub(super) struct ParkedExits {
    map: HashMap<ProcKey, Parked>,
    seq: u64,
}

impl ParkedExits {
    /// Parks the exit of `key` in `gc` round `round`; a second exit for a
    /// parked key only replaces its code. When full (at most `max_entries`,
    /// at most `MAX_PARKED`), the oldest are evicted first. Returns how many
    /// were evicted: each may belong to a process still to appear, which
    /// would then look alive forever.
    pub(super) fn park(&mut self, key: ProcKey, code: u32, round: u64, max_entries: usize) -> u64 {
        if let Some(parked) = self.map.get_mut(&key) {
            parked.code = code;
            return 0;
        }
        let mut evicted = 0;
        let cap = max_entries.clamp(1, MAX_PARKED);
        while self.map.len() >= cap {
            let Some(oldest) = self.map.iter().min_by_key(|(_, p)| p.seq).map(|(k, _)| *k) else {
                break;
            };
            self.map.remove(&oldest);
            evicted += 1;
        }
        self.seq += 1;
        self.map.insert(
            key,
            Parked {
                code,
                round,
                seq: self.seq,
            },
        );
        evicted
    }

    /// The exit code parked for `key`, which is no longer parked.
    pub(super) fn take(&mut self, key: ProcKey) -> Option<u32> {
        self.map.remove(&key).map(|p| p.code)
    }

    /// Drops the exits parked `PARKED_GC_ROUNDS` or more rounds before
    /// `round`.
    pub(super) fn expire(&mut self, round: u64) {
        self.map.retain(|_, p| p.round + PARKED_GC_ROUNDS > round);
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Gives back the room a burst of parked exits left behind.
    pub(super) fn shrink(&mut self) {
        shrink(&mut self.map);
    }
}
