//! The order of a reap: what is stopped, collected, asked to end and
//! killed, and when.
//!
//! Owns: `reap`, the whole sequence for one tree (the ancestors of the
//! reaper and of the root read once, the root checked first,
//! a refused root refusing the whole plan; SIGSTOP on what is known, then
//! on what the stopped tree forked; SIGTERM + SIGCONT and the grace
//! period; freeze, collect and SIGKILL rounds for what is left), and the
//! dry run, which reports what would be signalled.
//! Must never: signal anything itself (every signal goes through `run`,
//! and every key through `guard` first), act at all in a dry run, or loop
//! without a bound (`MAX_ROUNDS`, the grace periods).

use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::{
    guard::{Guard, ancestors_of, refusal},
    members::MemberSource,
    plan::{Outcome, ReapPlan, ReapReport},
    run::{MAX_ROUNDS, Run},
};
use crate::{procs::identity::ProcKey, procs::procscan};

/// How often the grace period looks for members born after SIGCONT.
const GRACE_TICK: Duration = Duration::from_millis(100);

/// Reaps `plan`'s tree. Blocking: run it on a blocking thread. Takes at
/// most about `grace_term + grace_kill + 2 * STOP_SETTLE` plus /proc scans.
pub fn reap(
    plan: &ReapPlan,
    source: &mut dyn MemberSource,
    protect: &dyn Fn(ProcKey) -> Option<&'static str>,
) -> ReapReport {
    let started = Instant::now();
    let self_pid = std::process::id();
    let ancestors = ancestors_of(&plan.proc_root, self_pid);
    // Read while the root is still the root: a reused PID's ancestors
    // are someone else's (refusing them too would do no harm).
    let root_ancestors = if procscan::read_key(&plan.proc_root, plan.root.tgid) == Some(plan.root) {
        ancestors_of(&plan.proc_root, plan.root.tgid)
    } else {
        Vec::new()
    };
    let guard = Guard {
        root: plan.root,
        self_pid,
        self_ancestors: &ancestors,
        root_ancestors: &root_ancestors,
        never: &plan.never,
        protect,
    };
    if let Some(why) = refusal(plan.root, &guard) {
        return ReapReport {
            outcome: Outcome::Refused(format!("root {}: {why}", plan.root)),
            members: Vec::new(),
            signals_sent: 0,
            duration: started.elapsed(),
            refused: vec![(plan.root, why)],
        };
    }
    let mut initial = vec![plan.root];
    initial.extend(plan.members.iter().copied());

    let mut run = Run::new(plan, guard);
    if plan.dry_run {
        initial.extend(source.current_members());
        return run.dry_run(initial, started);
    }

    // Open and stop what is known, then whatever the stopped tree forked.
    let first = run.admit(initial);
    run.signal(&first, Signal::STOP, "SIGSTOP");
    run.settle_stopped(&first);
    if plan.fault_die_after_stop {
        tracing::warn!("fault injection: dying mid-reap, the tree stopped");
        let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::KILL);
    }
    run.collect_stopped(source);

    // Polite request: TERM while stopped, then CONT, so every member sees
    // its TERM at once.
    let all = run.all();
    run.signal(&all, Signal::TERM, "SIGTERM");
    run.signal(&all, Signal::CONT, "SIGCONT");
    let deadline = Instant::now() + plan.grace_term;
    loop {
        if run.wait_exits(deadline.min(Instant::now() + GRACE_TICK)) || Instant::now() >= deadline {
            break;
        }
        // Children born after SIGCONT, found while their parents live.
        let born = run.admit(source.current_members());
        run.signal(&born, Signal::TERM, "SIGTERM");
        run.signal(&born, Signal::CONT, "SIGCONT");
    }

    let killed = kill_rounds(&mut run, source, plan.grace_kill);
    run.close_stop_log();
    run.finish(killed, started)
}

/// The end of a reap: survivors of the grace period, and members the
/// source still finds (born while the tree ran, such as double-forked
/// escapees the kernel's lineage names), are frozen, their children picked
/// up, and everything killed; then the source is asked again, until a round
/// finds nobody new (bounded). A tree whose known members all exited is not
/// "terminated" while the source still names a live member. Returns whether
/// SIGKILL was needed.
fn kill_rounds(run: &mut Run<'_>, source: &mut dyn MemberSource, grace_kill: Duration) -> bool {
    let mut killed = false;
    for round in 0..MAX_ROUNDS {
        let born = run.admit(source.current_members());
        let pending = run.pending();
        // Done when nothing is left, or when a later round found nobody
        // new (what is left survived SIGKILL: unkillable, reported).
        if pending.is_empty() || (round > 0 && born.is_empty()) {
            return killed;
        }
        run.signal(&pending, Signal::STOP, "SIGSTOP");
        run.settle_stopped(&pending);
        run.collect_stopped(source);
        let pending = run.pending();
        run.signal(&pending, Signal::KILL, "SIGKILL");
        killed = true;
        run.wait_exits(Instant::now() + grace_kill);
    }
    tracing::warn!(rounds = MAX_ROUNDS, "tree still growing while killed");
    killed
}

#[cfg(test)]
mod tests {
    use super::super::guard::WHY_INIT;
    use super::*;

    #[test]
    fn root_refusal_refuses_the_whole_plan() {
        let plan = ReapPlan::new(ProcKey::new(1, 0), vec![]);
        struct Nothing;
        impl MemberSource for Nothing {
            fn current_members(&mut self) -> Vec<ProcKey> {
                Vec::new()
            }
        }
        let report = reap(&plan, &mut Nothing, &|_| None);
        assert!(matches!(report.outcome, Outcome::Refused(_)));
        assert_eq!(report.signals_sent, 0);
        assert_eq!(report.refused, vec![(ProcKey::new(1, 0), WHY_INIT)]);
    }
}
