//! The poll event source: /proc scans at an interval.
//!
//! Owns: turning successive /proc snapshots into process events, for hosts
//! where eBPF cannot load (old kernels, containers without CAP_BPF). It sees
//! only what is alive at each scan: a process that lives and dies between
//! two scans is never seen, and lineage is the parent at first sight.
//! Must never: claim more precision than that (`doctor` and the log say
//! which source runs).

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};

use super::SourceCounters;
use crate::{
    procs::identity::ProcKey,
    procs::procscan::{self, ProcInfo},
    source::event::{ProcessEvent, SourceMsg, Watch},
};

/// Tunables for the poll source.
#[derive(Clone, Debug)]
pub struct PollOptions {
    pub interval: Duration,
    pub proc_root: PathBuf,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What a scan remembers of a process: its identity and its comm, whose
/// change under the same identity is how an exec shows between scans.
pub type Seen = HashMap<u32, (ProcKey, String)>;

/// The difference between two scans, as events: appearances and execs
/// first (in start-time order, so parents come before children), then
/// exits.
pub fn diff(before: &Seen, now: &[ProcInfo]) -> (Vec<ProcessEvent>, Seen) {
    let mut after: Seen = HashMap::with_capacity(now.len());
    for p in now {
        after.insert(p.key.tgid, (p.key, p.comm.clone()));
    }
    let mut appeared: Vec<&ProcInfo> = now
        .iter()
        .filter(|p| {
            before
                .get(&p.key.tgid)
                .is_none_or(|(k, comm)| *k != p.key || *comm != p.comm)
        })
        .collect();
    appeared.sort_by_key(|p| (p.key.start_ticks, p.key.tgid));
    let mut events: Vec<ProcessEvent> = appeared
        .into_iter()
        .map(|p| ProcessEvent::Exec {
            key: p.key,
            parent: after
                .get(&p.ppid)
                .map_or(ProcKey::new(p.ppid, 0), |(k, _)| *k),
            comm: p.comm.clone(),
            watch: Watch::default(),
            ktime_ns: 0,
            image: None,
        })
        .collect();
    for (key, _) in before.values() {
        if after.get(&key.tgid).map(|(k, _)| k) != Some(key) {
            events.push(ProcessEvent::Exit {
                key: *key,
                exit_code: 0,
                watch: Watch::default(),
                ktime_ns: 0,
            });
        }
    }
    (events, after)
}

/// Starts scanning. `initial` is the snapshot the tracker was seeded with,
/// so the first scan reports only what changed since.
pub fn spawn(
    opts: PollOptions,
    initial: &[ProcInfo],
    tx: mpsc::Sender<SourceMsg>,
    counters: Arc<SourceCounters>,
) -> JoinHandle<()> {
    let mut known: Seen = initial
        .iter()
        .map(|p| (p.key.tgid, (p.key, p.comm.clone())))
        .collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let root = opts.proc_root.clone();
            let Ok(snap) = tokio::task::spawn_blocking(move || procscan::snapshot(&root)).await
            else {
                return;
            };
            if !snap.is_complete() {
                // An unreadable /proc would look like every process exiting.
                tracing::warn!("poll: /proc scan incomplete; skipping this round");
                continue;
            }
            let (events, after) = diff(&known, &snap.procs);
            known = after;
            for ev in events {
                counters.count_event(&ev);
                if tx.send(SourceMsg::Event(ev)).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn info(pid: u32, start: u64, ppid: u32) -> ProcInfo {
        ProcInfo {
            key: ProcKey::new(pid, start),
            ppid,
            pgid: 0,
            sid: 0,
            uid: 0,
            state: 'S',
            comm: format!("p{pid}"),
            cmdline: vec![],
            cmdline_truncated: false,
            exe: None,
            rss_bytes: 0,
            ns_pid: None,
        }
    }

    #[test]
    fn appearances_come_parent_first_then_exits() {
        let before: Seen = [
            (1, (ProcKey::new(1, 1), "p1".to_string())),
            (5, (ProcKey::new(5, 50), "p5".to_string())),
        ]
        .into_iter()
        .collect();
        // 5 exited; 7 (child of 6) and 6 appeared; listed child first.
        let now = vec![info(1, 1, 0), info(7, 71, 6), info(6, 60, 1)];
        let (events, after) = diff(&before, &now);
        let keys: Vec<(bool, u32)> = events
            .iter()
            .map(|e| (matches!(e, ProcessEvent::Exit { .. }), e.key().tgid))
            .collect();
        assert_eq!(keys, vec![(false, 6), (false, 7), (true, 5)]);
        match &events[1] {
            ProcessEvent::Exec { parent, .. } => assert_eq!(*parent, ProcKey::new(6, 60)),
            other => panic!("expected exec, got {other:?}"),
        }
        assert_eq!(after.len(), 3);
    }

    #[test]
    fn a_reused_pid_is_an_exit_and_an_appearance() {
        let before: Seen = [(9, (ProcKey::new(9, 90), "p9".to_string()))]
            .into_iter()
            .collect();
        let (events, _) = diff(&before, &[info(9, 95, 1)]);
        assert_eq!(events.len(), 2);
        assert!(matches!(events[0], ProcessEvent::Exec { key, .. } if key == ProcKey::new(9, 95)));
        assert!(matches!(events[1], ProcessEvent::Exit { key, .. } if key == ProcKey::new(9, 90)));
    }

    #[test]
    fn no_change_no_events() {
        let before: Seen = [(3, (ProcKey::new(3, 30), "p3".to_string()))]
            .into_iter()
            .collect();
        let (events, _) = diff(&before, &[info(3, 30, 1)]);
        assert!(events.is_empty());
    }

    #[test]
    fn an_exec_between_scans_shows_as_a_comm_change() {
        let before: Seen = [(3, (ProcKey::new(3, 30), "python3".to_string()))]
            .into_iter()
            .collect();
        let (events, _) = diff(&before, &[info(3, 30, 1)]);
        assert_eq!(events.len(), 1);
        assert!(matches!(events[0], ProcessEvent::Exec { key, .. } if key == ProcKey::new(3, 30)));
    }
}
