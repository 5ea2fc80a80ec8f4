//! Applying what the event sources send: fork, exec and exit events, and
//! their reports of lost events and lineage gaps.
//!
//! Owns: the handler for each event kind, parking an exit whose process is
//! not in the table yet, and degrading the table on a loss or a gap.
//! Must never: fail on an event that is late, duplicated or out of order
//! (every handler is idempotent), take an event's current parent for a
//! tree membership (the kernel's watch and lineage decide, in `admit`), or
//! clear `degraded` (only a resync from /proc does).

use super::{
    entry::{EXIT_CODE_UNKNOWN, Origin, ProcEntry},
    table::Tracker,
};
use crate::{
    procs::identity::ProcKey,
    source::event::{ProcessEvent, SourceMsg, Watch},
};

impl Tracker {
    /// Applies one event. Unknown, duplicate and out-of-order events are
    /// all fine (see the module header).
    pub fn apply(&mut self, ev: &ProcessEvent) {
        if ev.key().tgid == 0 {
            return; // the idle task is not a process
        }
        match ev {
            ProcessEvent::Exec {
                key,
                parent,
                comm,
                watch,
                ..
            } => self.on_exec(*key, *parent, comm, *watch),
            ProcessEvent::Fork {
                child,
                parent,
                comm,
                watch,
                ..
            } => self.on_fork(*child, *parent, comm, *watch),
            ProcessEvent::Exit { key, exit_code, .. } => self.on_exit(*key, *exit_code),
            // Not a process-table change (the supervisor acts on it).
            ProcessEvent::Close { .. } => {}
        }
    }

    /// Applies what a source sent: an event, or a loss.
    pub fn apply_msg(&mut self, msg: &SourceMsg) {
        match msg {
            SourceMsg::Event(ev) => self.apply(ev),
            SourceMsg::Lost(n) => self.mark_lost(*n),
            SourceMsg::Gap(_, n) => self.mark_gap(*n),
            SourceMsg::Drained(_) => {}
        }
    }

    /// `n` gaps in lineage (a watch that could not be written, a kernel
    /// event skipped): as after a loss, nothing may act on the table until
    /// the next `resync`.
    pub fn mark_gap(&mut self, n: u64) {
        self.lineage_gaps = self.lineage_gaps.saturating_add(n);
        self.degraded = true;
    }

    /// A source dropped `n` events: nothing may act on the table until the
    /// next `resync`.
    pub fn mark_lost(&mut self, n: u64) {
        self.lost = self.lost.saturating_add(n);
        self.degraded = true;
    }

    fn on_exec(&mut self, key: ProcKey, parent: ProcKey, comm: &str, watch: Watch) {
        let parent = self.resolve_parent(parent, key);
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.comm != comm {
                // A new image: the old command line no longer describes it.
                comm.clone_into(&mut entry.comm);
                entry.cmdline.clear();
            }
            self.fill_parent(key, parent);
            self.apply_watch(key, watch);
            return;
        }
        // Its fork was not reported (an unwatched parent) or is late. Exec's
        // parent is the current one, so tree membership is not inferred from
        // it: the kernel's watch says whether the process is in a tree, and
        // lineage must show it.
        self.insert_from_event(key, parent, comm, watch);
    }

    fn on_fork(&mut self, child: ProcKey, parent: ProcKey, comm: &str, watch: Watch) {
        let parent = self.resolve_parent(parent, child);
        if self.entries.contains_key(&child) {
            self.fill_parent(child, parent);
            self.apply_watch(child, watch);
        } else if !self.insert_from_event(child, parent, comm, watch) {
            return;
        }
        self.inherit_tree(child, parent);
    }

    fn on_exit(&mut self, key: ProcKey, code: u32) {
        if self.mark_exited(key, code) {
            return;
        }
        // A live entry on the same PID that started earlier is dead: its PID
        // has been reused by the process whose exit this is.
        if let Some(&old) = self.by_tgid.get(&key.tgid)
            && old.start_ticks < key.start_ticks
        {
            self.mark_exited(old, EXIT_CODE_UNKNOWN);
        }
        self.park(key, code);
    }

    /// Adds a process first seen in a fork or exec event (so `parent` is
    /// already resolved), then takes the kernel's word on its tree as far
    /// as lineage shows it. `false` when the table is full.
    fn insert_from_event(
        &mut self,
        key: ProcKey,
        parent: Option<ProcKey>,
        comm: &str,
        watch: Watch,
    ) -> bool {
        let inserted = self.insert(ProcEntry {
            key,
            parent,
            comm: comm.to_owned(),
            cmdline: Vec::new(),
            origin: Origin::Event,
            exited: None,
            tree_root: None,
            host: watch.host,
            exit_reported: self.exit_reported_for(watch),
            unproven_root: None,
        });
        if inserted && let Some(root) = watch.root {
            self.claim(key, root);
        }
        inserted
    }

    /// Parks the exit of a process not in the table yet. An exit pushed out
    /// to make room may belong to a process still to appear, which would
    /// then look alive forever: the table degrades.
    fn park(&mut self, key: ProcKey, code: u32) {
        let evicted = self.parked.park(key, code, self.gc_round, self.max_entries);
        if evicted > 0 {
            self.parked_evicted += evicted;
            self.degraded = true;
        }
    }
}
