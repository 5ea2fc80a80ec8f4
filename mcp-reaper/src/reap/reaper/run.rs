//! The mechanics of a reap: pidfds, signals, and waiting.
//!
//! Owns: the members being reaped (`Run`): opening a pidfd for each key
//! `guard` lets through and verifying it against the key's start time
//! after it is open; recording what is about to be stopped in the stop
//! log; sending a signal through each verified pidfd; waiting, bounded,
//! for SIGSTOP to take effect and for exits; collecting members born while
//! the tree is stopped; and the report of what happened to each member.
//! Must never: signal a bare PID (no kill(2): every signal goes through a
//! pidfd verified here), open a key `guard::refusal` refuses, send SIGSTOP
//! to what the stop log could not record, or wait or collect without a
//! bound. The order of the steps is `sequence`'s, not this file's.

use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use rustix::{
    event::{PollFd, PollFlags, Timespec},
    fd::OwnedFd,
    io::Errno,
    process::{Pid, PidfdFlags, Signal},
};

use super::{
    guard::{
        Guard, WHY_NO_FDS, WHY_NOT_PROCESS, WHY_OPEN_FAILED, WHY_PID_ZERO, WHY_REUSED, refusal,
    },
    members::MemberSource,
    plan::{MemberResult, Outcome, ReapPlan, ReapReport, classify},
};
use crate::{procs::identity::ProcKey, procs::procscan, reap::stopped::StopLog};

/// Most re-collection rounds while the tree is stopped. Each round only
/// finds processes forked before their parent stopped, so a real tree
/// settles in two or three.
pub(super) const MAX_ROUNDS: usize = 32;

/// Most time to wait for a SIGSTOP to take effect (a process in D state
/// stops only when it leaves it).
const STOP_SETTLE: Duration = Duration::from_secs(1);

/// One member being reaped.
struct Target {
    key: ProcKey,
    fd: OwnedFd,
    cmdline: String,
    signals: Vec<&'static str>,
    exited: bool,
}

/// One reap in progress: what was looked at, opened, signalled, left.
pub(super) struct Run<'a> {
    proc_root: &'a Path,
    guard: Guard<'a>,
    /// Every key looked at (opened, gone or refused): looked at once.
    seen: HashSet<ProcKey>,
    targets: Vec<Target>,
    /// Members gone before they could be opened.
    gone: Vec<ProcKey>,
    refused: Vec<(ProcKey, &'static str)>,
    policy_refused: usize,
    signals_sent: u32,
    raised_nofile: bool,
    stop_log: Option<StopLog>,
}

impl<'a> Run<'a> {
    /// A run of `plan` with nothing opened yet; every key it is given is
    /// checked against `guard` first.
    pub(super) fn new(plan: &'a ReapPlan, guard: Guard<'a>) -> Self {
        Self {
            proc_root: &plan.proc_root,
            guard,
            seen: HashSet::new(),
            targets: Vec::new(),
            gone: Vec::new(),
            refused: Vec::new(),
            policy_refused: 0,
            signals_sent: 0,
            raised_nofile: false,
            stop_log: plan
                .stop_log
                .as_deref()
                .map(|dir| StopLog::for_reap(dir, plan.root)),
        }
    }

    /// Indices of every target opened so far.
    pub(super) fn all(&self) -> Vec<usize> {
        (0..self.targets.len()).collect()
    }

    /// The reap is over: its record of what is stopped is removed.
    pub(super) fn close_stop_log(&self) {
        if let Some(log) = &self.stop_log {
            log.finish();
        }
    }

    /// Opens and verifies every new key; returns the indices of the new
    /// targets.
    pub(super) fn admit(&mut self, keys: Vec<ProcKey>) -> Vec<usize> {
        let mut new = Vec::new();
        for key in keys {
            if !self.seen.insert(key) {
                continue;
            }
            if let Some(why) = refusal(key, &self.guard) {
                if procscan::is_alive(self.proc_root, key) {
                    self.policy_refused += 1;
                }
                self.refused.push((key, why));
                continue;
            }
            match self.open_verified(key) {
                Ok(Some((fd, cmdline))) => {
                    new.push(self.targets.len());
                    self.targets.push(Target {
                        key,
                        fd,
                        cmdline,
                        signals: Vec::new(),
                        exited: false,
                    });
                }
                Ok(None) => self.gone.push(key),
                Err(why) => self.refused.push((key, why)),
            }
        }
        new
    }

    /// A pidfd for `key`, opened first and checked after: a pidfd pins one
    /// process, and if /proc shows the key's start time once the pidfd is
    /// open, the pidfd is that process. With it, the process's command line
    /// as read in that check. `Ok(None)`: the member is gone.
    fn open_verified(&mut self, key: ProcKey) -> Result<Option<(OwnedFd, String)>, &'static str> {
        let pid = i32::try_from(key.tgid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(WHY_PID_ZERO)?;
        let fd = loop {
            match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                Ok(fd) => break fd,
                Err(Errno::SRCH) => return Ok(None),
                Err(Errno::INVAL) => return Err(WHY_NOT_PROCESS),
                Err(Errno::MFILE) if !self.raised_nofile => {
                    self.raised_nofile = true;
                    raise_nofile_limit();
                }
                Err(Errno::MFILE | Errno::NFILE) => return Err(WHY_NO_FDS),
                Err(err) => {
                    tracing::warn!(%key, error = %err, "pidfd_open failed");
                    return Err(WHY_OPEN_FAILED);
                }
            }
        };
        match procscan::read_process(self.proc_root, key.tgid) {
            Ok(now) if now.key == key => Ok(Some((fd, procscan::display_cmdline(&now)))),
            // Taken by another process: the pidfd (dropped here) names it.
            Ok(_) => Err(WHY_REUSED),
            // The PID is free again: the member is gone.
            Err(e) if e.is_vanished() => Ok(None),
            // Only the cmdline or status could not be read: the stat decides.
            Err(_) => match procscan::read_key(self.proc_root, key.tgid) {
                Some(now) if now == key => Ok(Some((fd, String::new()))),
                None => Ok(None),
                Some(_) => Err(WHY_REUSED),
            },
        }
    }

    pub(super) fn signal(&mut self, idx: &[usize], sig: Signal, name: &'static str) {
        // What is stopped is recorded first, so that a death before SIGCONT
        // is undone by the next start. Unrecorded, nothing is stopped.
        if sig == Signal::STOP
            && let Some(log) = &self.stop_log
        {
            let keys: Vec<ProcKey> = idx
                .iter()
                .filter_map(|&i| self.targets.get(i))
                .filter(|t| !t.exited)
                .map(|t| t.key)
                .collect();
            if let Err(e) = log.record(&keys) {
                tracing::warn!(error = %e, "cannot record what is stopped; not stopping");
                return;
            }
        }
        for &i in idx {
            let Some(t) = self.targets.get_mut(i) else {
                continue;
            };
            if t.exited {
                continue;
            }
            match rustix::process::pidfd_send_signal(&t.fd, sig) {
                Ok(()) => {
                    t.signals.push(name);
                    self.signals_sent += 1;
                }
                Err(Errno::SRCH) => t.exited = true,
                Err(err) => {
                    tracing::warn!(key = %t.key, error = %err, signal = name, "pidfd_send_signal failed")
                }
            }
        }
    }

    /// Indices of targets not known to have exited.
    pub(super) fn pending(&self) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&i| self.targets.get(i).is_some_and(|t| !t.exited))
            .collect()
    }

    /// Waits (bounded) until every target in `idx` is stopped or dead, so a
    /// scan after it sees every child they will ever fork before SIGCONT.
    pub(super) fn settle_stopped(&mut self, idx: &[usize]) {
        let deadline = Instant::now() + STOP_SETTLE;
        let mut left: Vec<usize> = idx.to_vec();
        loop {
            left.retain(|&i| {
                self.targets.get(i).is_some_and(|t| {
                    !t.exited
                        && procscan::read_process(self.proc_root, t.key.tgid).is_ok_and(|p| {
                            p.key == t.key && !matches!(p.state, 'T' | 't' | 'Z' | 'X' | 'x')
                        })
                })
            });
            if left.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// With the known tree stopped: admits and stops new members until a
    /// round finds none (bounded).
    pub(super) fn collect_stopped(&mut self, source: &mut dyn MemberSource) {
        for _ in 0..MAX_ROUNDS {
            let born = self.admit(source.current_members());
            if born.is_empty() {
                return;
            }
            self.signal(&born, Signal::STOP, "SIGSTOP");
            self.settle_stopped(&born);
        }
        tracing::warn!(rounds = MAX_ROUNDS, "tree still growing while stopped");
    }

    /// Polls the pidfds of pending targets until all exited or `deadline`.
    /// True when none is pending.
    pub(super) fn wait_exits(&mut self, deadline: Instant) -> bool {
        loop {
            let pending = self.pending();
            if pending.is_empty() {
                return true;
            }
            let now = Instant::now();
            let left = deadline.saturating_duration_since(now);
            let timeout = Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let ready: Vec<usize> = {
                let mut fds: Vec<PollFd<'_>> = pending
                    .iter()
                    .filter_map(|&i| self.targets.get(i))
                    .map(|t| PollFd::new(&t.fd, PollFlags::IN))
                    .collect();
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "poll on pidfds failed");
                        std::thread::sleep(left.min(Duration::from_millis(10)));
                    }
                }
                fds.iter()
                    .zip(&pending)
                    .filter(|(fd, _)| !fd.revents().is_empty())
                    .map(|(_, &i)| i)
                    .collect()
            };
            for i in ready {
                if let Some(t) = self.targets.get_mut(i) {
                    t.exited = true;
                }
            }
            if Instant::now() >= deadline {
                return self.pending().is_empty();
            }
        }
    }

    pub(super) fn dry_run(mut self, keys: Vec<ProcKey>, started: Instant) -> ReapReport {
        let mut members = Vec::new();
        for key in keys {
            if !self.seen.insert(key) {
                continue;
            }
            if let Some(why) = refusal(key, &self.guard) {
                self.refused.push((key, why));
                continue;
            }
            let info = procscan::read_process(self.proc_root, key.tgid)
                .ok()
                .filter(|p| p.key == key);
            let state = info.as_ref().map(|p| p.state);
            members.push(MemberResult {
                key,
                signals: Vec::new(),
                exited: state.is_none_or(|s| matches!(s, 'Z' | 'X' | 'x')),
                cmdline: info
                    .as_ref()
                    .map(procscan::display_cmdline)
                    .unwrap_or_default(),
                state_at_end: state,
            });
        }
        ReapReport {
            outcome: Outcome::DryRun,
            members,
            signals_sent: 0,
            duration: started.elapsed(),
            refused: self.refused,
        }
    }

    pub(super) fn finish(self, killed: bool, started: Instant) -> ReapReport {
        let mut survivors = 0;
        let mut members: Vec<MemberResult> = Vec::with_capacity(self.targets.len());
        for t in self.targets {
            let state = procscan::read_process(self.proc_root, t.key.tgid)
                .ok()
                .filter(|p| p.key == t.key)
                .map(|p| p.state);
            if !t.exited {
                survivors += 1;
                tracing::warn!(key = %t.key, state = ?state, "member survived SIGKILL");
            }
            members.push(MemberResult {
                key: t.key,
                signals: t.signals,
                exited: t.exited,
                cmdline: t.cmdline,
                state_at_end: state,
            });
        }
        let opened = members.len();
        members.extend(self.gone.into_iter().map(|key| MemberResult {
            key,
            signals: Vec::new(),
            exited: true,
            cmdline: String::new(),
            state_at_end: None,
        }));
        ReapReport {
            outcome: classify(false, opened, self.policy_refused, killed, survivors),
            members,
            signals_sent: self.signals_sent,
            duration: started.elapsed(),
            refused: self.refused,
        }
    }
}

/// Raises the soft open-file limit to the hard one (a large tree needs a
/// pidfd per member).
fn raise_nofile_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %err, "could not raise the open-file limit");
        }
    }
}
