//! The supervisor's bookkeeping bounds: which processes' details it keeps,
//! and the pass that drops what no longer names a live, tracked process.
//!
//! Owns: the rule that process details (`infos`) are kept only for hosts,
//! relays and tree roots (everything else is dropped right after it is
//! classified), the `gc` pass over the supervisor's own tables, the
//! outboxes' `take_*` drains, and the `table_sizes` view tests and
//! benchmarks read them through.
//! Must never: forget a tree (trees go only through `Supervisor::check`
//! finding nothing of them left, or a finished reap), drop a host or relay
//! that is alive, or do work that grows with the processes the machine has
//! run rather than with what is alive and tracked.

use std::time::Instant;

use crate::{
    procs::identity::ProcKey, procs::procscan, procs::tracker::shrink, source::event::GapCause,
};

use super::{RESPAWN_WINDOW, Supervisor, TableSizes, TreeRecord};

impl Supervisor {
    /// Sizes of every table, for tests and diagnostics.
    pub fn table_sizes(&self) -> TableSizes {
        TableSizes {
            infos: self.infos.len(),
            hosts: self.hosts.len(),
            relays: self.relays.len(),
            trees: self.trees.len(),
            pending: self.pending.len(),
            images: self.images.len(),
            recheck: self.recheck.len(),
            idle_for: self.idle_for.len(),
            activity: self.activity.len(),
            starts: self.starts.len(),
            watched: self.watched.len(),
            reconcile_queue: self.reconcile_queue.len(),
            followups: self.followups.len(),
            outboxes: self.owner_hosts.len()
                + self.detected.len()
                + self.respawns.len()
                + self.unwatch.len()
                + self.gaps.len(),
        }
    }

    /// Owners seen since the last call (processes holding a tree's far end).
    pub fn take_owner_hosts(&mut self) -> Vec<ProcKey> {
        std::mem::take(&mut self.owner_hosts)
    }

    /// (host rule, server) of respawns since the last call.
    pub fn take_respawns(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.respawns)
    }

    /// Trees that became orphaned since the last call, with their members.
    pub fn take_detected(&mut self) -> Vec<(TreeRecord, Vec<ProcKey>)> {
        std::mem::take(&mut self.detected)
    }

    /// Gaps in lineage since the last call: watches that could not be
    /// written. Each must degrade the tracker until a resync.
    pub fn take_gaps(&mut self) -> Vec<GapCause> {
        std::mem::take(&mut self.gaps)
    }

    /// Processes whose watches were written for trees since forgotten (all
    /// of them gone): their entries may go, where they still name them.
    pub fn take_unwatch(&mut self) -> Vec<ProcKey> {
        std::mem::take(&mut self.unwatch)
    }

    /// Whether `key`'s details are worth keeping: it is a host, a relay or
    /// a tree's root (members come from the tracker). Everything else is looked at
    /// once, when it execs, and forgotten.
    pub(super) fn keeps_info(&self, key: ProcKey) -> bool {
        self.hosts.contains_key(&key)
            || self.relays.contains_key(&key)
            || self.trees.contains_key(&key)
    }

    /// Drops the details of `key` unless it matters (`keeps_info`).
    pub(super) fn drop_info_unless_kept(&mut self, key: ProcKey) {
        if !self.keeps_info(key) {
            self.infos.remove(&key);
        }
    }

    /// Details of `key`: kept ones, else read from /proc now (`None` when
    /// it is gone or its PID now names another process).
    pub(super) fn info_or_read(&self, key: ProcKey) -> Option<procscan::ProcInfo> {
        match self.infos.get(&key) {
            Some(info) => Some(info.clone()),
            None => procscan::read_process(&self.proc_root, key.tgid)
                .ok()
                .filter(|i| i.key == key),
        }
    }

    /// Periodic clean-up of what exit events do not cover (the kernel
    /// reports exits of watched processes only): hosts, relays and servers
    /// that are no longer alive go, with their details; per-tree tables
    /// keep only trees still known; respawn history keeps only its window.
    /// Costs one liveness check per host, relay and server.
    pub fn gc(&mut self, is_alive: impl Fn(ProcKey) -> bool) {
        self.hosts.retain(|k, _| is_alive(*k));
        self.relays.retain(|k, _| is_alive(*k));
        let (hosts, relays, trees) = (&self.hosts, &self.relays, &self.trees);
        self.infos.retain(|k, _| {
            hosts.contains_key(k) || relays.contains_key(k) || trees.contains_key(k)
        });
        let exited = &self.images_exited;
        self.images
            .retain(|k, _| is_alive(*k) || exited.contains(k));
        let trees = &self.trees;
        self.idle_for.retain(|k, _| trees.contains_key(k));
        self.activity.retain(|k| trees.contains_key(k));
        self.watched.retain(|k, _| trees.contains_key(k));
        self.empty_since.retain(|k, _| trees.contains_key(k));
        let now = Instant::now();
        self.starts
            .retain(|(_, _, t)| now.duration_since(*t) < RESPAWN_WINDOW);
        shrink(&mut self.infos);
        shrink(&mut self.hosts);
        shrink(&mut self.relays);
        shrink(&mut self.trees);
        shrink(&mut self.idle_for);
        shrink(&mut self.watched);
    }
}
