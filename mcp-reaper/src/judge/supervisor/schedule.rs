//! When trees are checked and what is done about them: the follow-ups
//! after a close, the reconcile's batches, the drain marks a tree with no
//! member waits for, and the supervision tick that asks `policy` for a
//! decision and re-confirms it right before a reap.
//!
//! Owns: the schedule (`recheck`, `followups`, `reconcile_queue`,
//! `empty_since`) and the tick's decisions.
//! Must never: act on a tree without a fresh check right before, decide
//! for a tree that waits for queued records, or forget a tree while the
//! event source may still hold records of its members.

use std::time::{Duration, Instant};

use super::verdict::SESSION_ENDED;

use super::{Action, RECONCILE_BATCH, Supervisor, verdict};
use crate::{
    judge::policy::{self, Decision, Facts},
    judge::trees::TreeState,
    procs::identity::ProcKey,
    procs::tracker::Tracker,
};

impl Supervisor {
    /// When the next follow-up check after a close is due, if any.
    pub fn next_followup(&self) -> Option<Instant> {
        self.followups.iter().map(|&(due, _)| due).min()
    }

    /// Whether an event asked for a check that has not run yet.
    pub fn has_due_checks(&self) -> bool {
        !self.recheck.is_empty()
    }

    /// Marks trees orphaned by the owner's own word (`release`), each with
    /// the processes the release covers. Every later check re-confirms it
    /// (`judge_release`), the one right before a reap included.
    pub fn release(&mut self, released: &[crate::judge::release::Released]) {
        for r in released {
            if let Some(rec) = self.trees.get_mut(&r.root) {
                rec.state = TreeState::Orphaned;
                rec.reason = Some(SESSION_ENDED.into());
                rec.orphan_since = Some(Instant::now());
                rec.released_by.clone_from(&r.by);
                self.detected.push((rec.clone(), Vec::new()));
                self.recheck.insert(r.root);
            }
        }
    }

    /// Queues the next reconcile batch for the coming `tick`. The reconcile
    /// re-checks every tree once per interval, a batch per timer tick, so a
    /// host with hundreds of trees never stalls the loop that handles the
    /// event-driven checks (those ticks do not call this).
    pub fn reconcile_step(&mut self) {
        let now = Instant::now();
        if self.reconcile_queue.is_empty()
            && now.duration_since(self.last_reconcile) >= self.reconcile_interval
        {
            self.last_reconcile = now;
            self.reconcile_queue.extend(self.trees.keys().copied());
        }
        for _ in 0..RECONCILE_BATCH {
            let Some(root) = self.reconcile_queue.pop_front() else {
                break;
            };
            self.recheck.insert(root);
        }
    }

    /// Runs due checks and returns what to do. `degraded`: the tracker has
    /// unreconciled losses (nothing is enforced then).
    pub fn tick(&mut self, tracker: &Tracker, degraded: bool) -> Vec<Action> {
        let now = Instant::now();
        // Follow-ups that are due, for trees not already judged orphaned.
        let trees = &self.trees;
        let recheck = &mut self.recheck;
        self.followups.retain(|&(due, root)| {
            if due > now {
                return true;
            }
            if trees
                .get(&root)
                .is_some_and(|t| t.state != TreeState::Orphaned && !t.reaping)
            {
                recheck.insert(root);
            }
            false
        });
        // Relays that exited (their process info is dropped on exit).
        let infos = &self.infos;
        self.relays.retain(|k, _| infos.contains_key(k));
        let due: Vec<ProcKey> = self.recheck.drain().collect();
        for root in due {
            if self.trees.get(&root).is_some_and(|t| !t.reaping) {
                self.check(root, tracker);
            }
        }
        let roots: Vec<ProcKey> = self.trees.keys().copied().collect();
        roots
            .into_iter()
            .filter_map(|root| self.decide(root, now, tracker, degraded))
            .collect()
    }

    /// What to do about tree `root` now (`policy::decide`), re-confirmed by
    /// a fresh check before a reap; `None` when there is nothing to do or
    /// to report (a decision other than a reap is reported once per change).
    fn decide(
        &mut self,
        root: ProcKey,
        now: Instant,
        tracker: &Tracker,
        degraded: bool,
    ) -> Option<Action> {
        let rec = self.trees.get(&root)?;
        // A tree with nothing alive waits for the source to catch up
        // (`events_caught_up`): nothing to decide, and nothing to reap.
        if rec.reaping || self.empty_since.contains_key(&root) {
            return None;
        }
        let facts = Facts {
            reason: rec
                .reason
                .as_deref()
                .and_then(policy::parse_reason)
                .filter(|_| matches!(rec.state, TreeState::Orphaned | TreeState::Suspect)),
            orphaned_for: rec
                .orphan_since
                .map_or(Duration::ZERO, |t| now.duration_since(t)),
            degraded,
        };
        let decision = policy::decide(&self.config.policy, facts);
        if decision == Decision::None || decision == Decision::Wait {
            if let Some(rec) = self.trees.get_mut(&root) {
                rec.last_decision = Some(decision);
            }
            return None;
        }
        // Confirm once more, right before acting: a host's `release`
        // too, since the far end may have changed hands since. An
        // orphan must still be orphaned; a suspicion an operator chose
        // to enforce (idle, superseded) must still be that suspicion.
        if decision == Decision::Enforce {
            let (was_state, was_reason) = (rec.state, rec.reason.clone());
            if !self.check(root, tracker)
                || self.empty_since.contains_key(&root)
                || self.trees.get(&root).is_none_or(|t| {
                    !verdict::still_confirmed(
                        was_state,
                        was_reason.as_deref(),
                        t.state,
                        t.reason.as_deref(),
                    )
                })
            {
                return None;
            }
        }
        let members = self.members(root, tracker);
        let rec = self.trees.get_mut(&root)?;
        let changed = rec.last_decision != Some(decision);
        rec.last_decision = Some(decision);
        if decision == Decision::Enforce {
            rec.reaping = true;
        } else if !changed {
            return None; // observe / dry-run / hold: report once per change
        }
        Some(Action {
            root,
            decision,
            record: rec.clone(),
            members,
        })
    }

    /// The reap of `root` finished: forget the tree if it is gone.
    pub fn reaped(&mut self, root: ProcKey, tracker: &Tracker) {
        if let Some(rec) = self.trees.get_mut(&root) {
            rec.reaping = false;
        }
        if self.members(root, tracker).is_empty() && self.events_caught_up(root) {
            self.forget(root);
        } else {
            self.recheck.insert(root);
        }
    }

    /// The event source waits to be caught up before a tree with no member
    /// left is forgotten (the eBPF tier, whose records may be queued).
    pub fn wait_for_drain_marks(&mut self) {
        self.drain_marks = true;
    }

    /// Every kernel record made before `ns` (boot time) has been applied.
    pub fn drained_to(&mut self, ns: u64) {
        self.drained_ns = self.drained_ns.max(ns);
        // Trees waiting for it are checked again.
        let drained = self.drained_ns;
        let ready: Vec<ProcKey> = self
            .empty_since
            .iter()
            .filter(|&(_, &since)| drained >= since)
            .map(|(r, _)| *r)
            .collect();
        self.recheck.extend(ready);
    }

    /// Whether a tree `root` that shows no member may be forgotten: at once
    /// in the tiers without queued records; in the eBPF tier only once a
    /// drain mark newer than the first look that found it empty has been
    /// applied, so that a fork made before that look (a member that double
    /// forked) has been seen.
    pub(super) fn events_caught_up(&mut self, root: ProcKey) -> bool {
        if !self.drain_marks {
            return true;
        }
        let Some(now) = crate::procs::identity::boottime_ns() else {
            return true;
        };
        let since = *self.empty_since.entry(root).or_insert(now);
        self.drained_ns >= since
    }

    /// Drops a tree that has nothing left; the watches written for it are
    /// handed to `take_unwatch`.
    pub(super) fn forget(&mut self, root: ProcKey) {
        self.trees.remove(&root);
        self.empty_since.remove(&root);
        self.idle_for.remove(&root);
        self.activity.forget(root);
        self.unwatch
            .extend(self.watched.remove(&root).unwrap_or_default());
    }
}
