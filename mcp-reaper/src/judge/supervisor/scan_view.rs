//! The daemon's answer to `scan`: every tree it follows, shown as `scan`
//! shows a tree, with what only the daemon knows (`DaemonVerdict`).
//!
//! Owns: turning the tree table, the process table and cached memory
//! figures into `TreeView`s, and the pure `verdict_of` (grace left, clocks).
//! Must never: read /proc or anything else: an answer comes from memory
//! alone, so it costs the same however busy /proc is, and it never changes
//! a record or a clock.

use std::time::{Duration, Instant};

use super::{Supervisor, TreeRecord};
use crate::{
    config::{Action as PolicyAction, PolicyConfig},
    judge::{
        policy::parse_reason,
        trees::{DaemonVerdict, HostView, MemberView, MemoryCache, TreeState, TreeView},
    },
    procs::{identity::ProcKey, procscan::display_args, tracker::Tracker},
};

/// What the policy and the clocks say of tree `rec` now: `orphaned_for`
/// since its reason was confirmed, `idle_for` at its last check.
pub fn verdict_of(
    rec: &TreeRecord,
    policy: &PolicyConfig,
    orphaned_for: Option<Duration>,
    idle_for: Option<Duration>,
) -> DaemonVerdict {
    let reason = rec
        .reason
        .as_deref()
        .and_then(parse_reason)
        .filter(|_| matches!(rec.state, TreeState::Orphaned | TreeState::Suspect));
    let action = reason.map(|r| policy.actions.get(r));
    let grace_left = match (action, orphaned_for) {
        (Some(PolicyAction::Enforce), Some(d)) => Some(policy.grace.saturating_sub(d).as_secs()),
        _ => None,
    };
    DaemonVerdict {
        action: action.map(|a| {
            match a {
                PolicyAction::Enforce => "enforce",
                PolicyAction::Observe => "observe",
            }
            .to_owned()
        }),
        decision: rec
            .last_decision
            .and_then(|d| serde_json::to_value(d).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
        orphaned_for_seconds: orphaned_for
            .filter(|_| reason.is_some())
            .map(|d| d.as_secs()),
        grace_left_seconds: grace_left,
        idle_for_seconds: idle_for
            .filter(|_| rec.state != TreeState::Orphaned)
            .map(|d| d.as_secs()),
        reaping: rec.reaping,
        released_by: rec.released_by.clone(),
    }
}

impl Supervisor {
    /// Every tree as `scan` shows it, from the tables alone: members and
    /// their command lines from `tracker`, memory from `memory` as last
    /// read (none yet: 0), ages against `now_ticks` (clock ticks since
    /// boot).
    pub fn scan_views(
        &self,
        tracker: &Tracker,
        memory: &MemoryCache,
        now_ticks: u64,
        now: Instant,
    ) -> Vec<TreeView> {
        let mut views: Vec<TreeView> = self
            .trees
            .values()
            .map(|rec| self.scan_view(rec, tracker, memory, now_ticks, now))
            .collect();
        views.sort_by_key(|v| v.root);
        views
    }

    fn scan_view(
        &self,
        rec: &TreeRecord,
        tracker: &Tracker,
        memory: &MemoryCache,
        now_ticks: u64,
        now: Instant,
    ) -> TreeView {
        let members = members_in_table(rec.root, tracker);
        let member_views: Vec<MemberView> = members
            .iter()
            .map(|&k| {
                let e = tracker.get(k);
                let (rss, pss) = memory.cached(k).map_or((0, None), |(r, p)| (r, Some(p)));
                MemberView {
                    pid: k.tgid,
                    start_ticks: k.start_ticks,
                    ppid: e.and_then(|e| e.parent).map_or(0, |p| p.tgid),
                    comm: e.map(|e| e.comm.clone()).unwrap_or_default(),
                    ns_pid: None,
                    cmdline: e
                        .map_or_else(String::new, |e| display_args(&e.comm, &e.cmdline, false)),
                    rss_bytes: rss,
                    pss_bytes: pss,
                }
            })
            .collect();
        let orphaned_for = rec.orphan_since.map(|t| now.saturating_duration_since(t));
        let idle_for = self.idle_for.get(&rec.root).copied();
        TreeView {
            root: rec.root,
            server: rec.server.clone(),
            host: rec.host.map(|h| self.host_view(h, &rec.host_rule, tracker)),
            session_id: rec.session_id.clone(),
            owner_fds: rec.owner_fds.clone(),
            chain: rec
                .chain
                .iter()
                .map(|&k| {
                    let rule = self.relays.get(&k).or_else(|| self.hosts.get(&k));
                    self.host_view(k, rule.map_or("unknown", String::as_str), tracker)
                })
                .collect(),
            released_link: rec.released_link,
            state: rec.state,
            judged_by: "daemon",
            reason: rec.reason.clone(),
            age_seconds: now_ticks.saturating_sub(rec.root.start_ticks) / 100,
            rss_bytes: member_views.iter().map(|m| m.rss_bytes).sum(),
            pss_bytes: member_views.iter().filter_map(|m| m.pss_bytes).sum(),
            members: member_views,
            ownership: None,
            daemon: Some(verdict_of(rec, &self.config.policy, orphaned_for, idle_for)),
        }
    }

    fn host_view(&self, key: ProcKey, rule: &str, tracker: &Tracker) -> HostView {
        HostView {
            pid: key.tgid,
            start_ticks: key.start_ticks,
            comm: tracker.get(key).map(|e| e.comm.clone()).unwrap_or_default(),
            rule: rule.to_owned(),
            ns_pid: None,
            net_ns: None,
        }
    }
}

/// The live members of the tree rooted at `root` as the process table
/// knows them (no /proc look, unlike `Supervisor::members`).
fn members_in_table(root: ProcKey, tracker: &Tracker) -> Vec<ProcKey> {
    let mut m: Vec<ProcKey> = tracker.tree_members(root);
    m.extend(tracker.descendants(root));
    m.push(root);
    m.retain(|k| tracker.get(*k).is_some_and(|e| e.is_live()));
    m.sort();
    m.dedup();
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rec(state: TreeState, reason: Option<&str>) -> TreeRecord {
        let mut r = TreeRecord::new(ProcKey::new(10, 1), "s".into(), None, "h".into(), None);
        r.state = state;
        r.reason = reason.map(str::to_owned);
        r
    }

    #[test]
    fn grace_left_counts_down_only_where_the_policy_enforces() {
        let policy = PolicyConfig {
            grace: Duration::from_secs(10),
            ..PolicyConfig::default()
        };
        let s = Duration::from_secs;
        let released = rec(TreeState::Orphaned, Some("peer-released"));
        let idle = rec(TreeState::Suspect, Some("idle"));
        let live = rec(TreeState::Live, None);
        // (record, orphaned for, idle for) -> (action, grace left, orphaned for, idle for)
        let cases = [
            (
                &released,
                Some(s(3)),
                None,
                (Some("enforce"), Some(7), Some(3), None),
            ),
            (
                &released,
                Some(s(30)),
                None,
                (Some("enforce"), Some(0), Some(30), None),
            ),
            (
                &released,
                None,
                Some(s(5)),
                (Some("enforce"), None, None, None),
            ),
            // Heuristics only observe by default: no countdown.
            (
                &idle,
                Some(s(3)),
                Some(s(2000)),
                (Some("observe"), None, Some(3), Some(2000)),
            ),
            (&live, None, Some(s(4)), (None, None, None, Some(4))),
            // A stale clock on a live tree is no orphan time.
            (&live, Some(s(9)), None, (None, None, None, None)),
        ];
        for (r, orphaned, idle_for, want) in cases {
            let v = verdict_of(r, &policy, orphaned, idle_for);
            let got = (
                v.action.as_deref(),
                v.grace_left_seconds,
                v.orphaned_for_seconds,
                v.idle_for_seconds,
            );
            assert_eq!(
                got, want,
                "{:?} {:?} {orphaned:?} {idle_for:?}",
                r.state, r.reason
            );
        }
    }
}
