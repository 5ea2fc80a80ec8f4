//! Reaping one MCP tree.
//!
//! Owns: killing the members of one tree, completely: a pidfd for every
//! member, checked against the member's start time after it is opened;
//! SIGSTOP so nothing forks during the kill; members born meanwhile picked
//! up from a `MemberSource`; SIGTERM + SIGCONT, a grace period, SIGKILL for
//! what is left, and waiting for exits on the pidfds. Reports what happened
//! to every member, and why anything was left alone.
//!
//! May kill: only processes named by a key in the plan or returned by the
//! member source, and only through a pidfd whose process was verified to
//! still have that key's start time.
//!
//! Must never: signal a bare PID (no kill(2); every signal goes through a
//! verified pidfd); signal PID 1, the reaper's own process or its ancestors,
//! a process on the plan's `never` list (the host, relays), a process the
//! `protect` callback names, or a process that started before the tree's
//! root (a reused PID cannot be a descendant); retry an unkillable member
//! (D state) without bound; act at all in a dry run.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rustix::{
    event::{PollFd, PollFlags, Timespec},
    fd::OwnedFd,
    io::Errno,
    process::{Pid, PidfdFlags, Signal},
};
use serde::Serialize;

use crate::{identity::ProcKey, procscan};

/// Default wait for exits after SIGKILL.
pub const DEFAULT_GRACE_KILL: Duration = Duration::from_secs(5);

/// Most re-collection rounds while the tree is stopped. Each round only
/// finds processes forked before their parent stopped, so a real tree
/// settles in two or three.
const MAX_ROUNDS: usize = 32;

/// Most time to wait for a SIGSTOP to take effect (a process in D state
/// stops only when it leaves it).
const STOP_SETTLE: Duration = Duration::from_secs(1);

/// How often the grace period looks for members born after SIGCONT.
const GRACE_TICK: Duration = Duration::from_millis(100);

// Why a member was left alone (`ReapReport::refused`).
pub const WHY_PID_ZERO: &str = "PID 0 names no process";
pub const WHY_INIT: &str = "PID 1 is never signalled";
pub const WHY_SELF: &str = "the reaper's own process";
pub const WHY_ANCESTOR: &str = "an ancestor of the reaper";
pub const WHY_NEVER: &str = "on the plan's never list (host or relay)";
pub use crate::protect::{WHY_PROTECTED, WHY_UNREADABLE};
pub const WHY_OLDER_THAN_ROOT: &str = "started before the tree's root: a reused PID, not a member";
pub const WHY_REUSED: &str = "PID reused: start time differs after pidfd_open";
pub const WHY_NOT_PROCESS: &str = "pidfd_open refused: not a process (a thread id?)";
pub const WHY_NO_FDS: &str = "pidfd_open failed: out of file descriptors";
pub const WHY_OPEN_FAILED: &str = "pidfd_open failed";

/// One tree to reap.
#[derive(Clone, Debug)]
pub struct ReapPlan {
    /// The process the host spawned.
    pub root: ProcKey,
    /// Known members (the root is added if missing).
    pub members: Vec<ProcKey>,
    /// Never signalled, whatever the member lists say: the host, relays.
    /// Matched by PID: a member key sharing a PID with a live `never`
    /// process is stale anyway.
    pub never: Vec<ProcKey>,
    /// SIGTERM -> SIGKILL.
    pub grace_term: Duration,
    /// How long to wait for exits after SIGKILL before calling the
    /// survivors unkillable.
    pub grace_kill: Duration,
    /// Open nothing, send nothing: report what would be signalled.
    pub dry_run: bool,
    /// The /proc of the reaper's PID namespace (identity checks).
    pub proc_root: PathBuf,
    /// The state directory where what is stopped is recorded before it is
    /// stopped (`stopped::StopLog`); `None`: not recorded.
    pub stop_log: Option<PathBuf>,
    /// Fault injection (tests, `MCP_REAPER_FAULT_DIE_AFTER_STOP=1`): the
    /// process running the reap dies by SIGKILL right after the first
    /// SIGSTOP, as a daemon killed mid-reap would.
    pub fault_die_after_stop: bool,
}

impl ReapPlan {
    /// A plan with a 5 s SIGTERM grace, `DEFAULT_GRACE_KILL`, no `never`
    /// list, acting for real, checking identities in /proc.
    pub fn new(root: ProcKey, members: Vec<ProcKey>) -> Self {
        Self {
            root,
            members,
            never: Vec::new(),
            grace_term: Duration::from_secs(5),
            grace_kill: DEFAULT_GRACE_KILL,
            dry_run: false,
            proc_root: PathBuf::from("/proc"),
            stop_log: None,
            fault_die_after_stop: false,
        }
    }
}

/// Re-collects the tree's members (members born since the plan was made).
/// May return keys already known; the reaper dedupes.
pub trait MemberSource {
    fn current_members(&mut self) -> Vec<ProcKey>;
}

/// A member source from /proc alone: every process reachable by parent
/// links from a known member. Weaker than the kernel tracker: a child whose
/// parent exited before a scan was reparented and is invisible here, which
/// is why the reaper stops the tree before it scans.
#[derive(Clone, Debug)]
pub struct ProcDescendants {
    proc_root: PathBuf,
    /// Start time of the tree's root: nothing older is a member.
    root_start: u64,
    known: HashSet<ProcKey>,
}

impl ProcDescendants {
    pub fn new(proc_root: impl Into<PathBuf>, root: ProcKey, members: &[ProcKey]) -> Self {
        let mut known: HashSet<ProcKey> = members.iter().copied().collect();
        known.insert(root);
        Self {
            proc_root: proc_root.into(),
            root_start: root.start_ticks,
            known,
        }
    }
}

impl MemberSource for ProcDescendants {
    fn current_members(&mut self) -> Vec<ProcKey> {
        let snap = procscan::snapshot(&self.proc_root);
        if !snap.is_complete() {
            // A broken listing proves nothing about who exists.
            return self.known.iter().copied().collect();
        }
        let by_pid: HashMap<u32, ProcKey> =
            snap.procs.iter().map(|p| (p.key.tgid, p.key)).collect();
        let mut children: HashMap<u32, Vec<ProcKey>> = HashMap::new();
        for p in &snap.procs {
            children.entry(p.ppid).or_default().push(p.key);
        }
        // Walk only from PIDs that still belong to a known member: the
        // children of a reused PID are someone else's.
        let mut queue: Vec<ProcKey> = self
            .known
            .iter()
            .filter(|k| by_pid.get(&k.tgid) == Some(k))
            .copied()
            .collect();
        while let Some(parent) = queue.pop() {
            for &child in children.get(&parent.tgid).into_iter().flatten() {
                if child.start_ticks >= parent.start_ticks
                    && child.start_ticks >= self.root_start
                    && self.known.insert(child)
                {
                    queue.push(child);
                }
            }
        }
        self.known.iter().copied().collect()
    }
}

impl ProcDescendants {
    /// Adds members found another way (the kernel's lineage): they are
    /// walked for children too. Keys older than the root are ignored.
    pub fn learn(&mut self, keys: impl IntoIterator<Item = ProcKey>) {
        self.known.extend(
            keys.into_iter()
                .filter(|k| k.start_ticks >= self.root_start),
        );
    }
}

/// How a reap ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every member exited after SIGTERM.
    Terminated,
    /// Some member needed SIGKILL; all are gone.
    Killed,
    /// Members were left after SIGKILL and its wait (D state, typically).
    Unkillable,
    /// No member was alive to signal.
    Vanished,
    /// Nothing was done (dry run).
    DryRun,
    /// The plan was refused; nothing was signalled.
    Refused(String),
}

/// What happened to one member.
#[derive(Clone, Debug, Serialize)]
pub struct MemberResult {
    pub key: ProcKey,
    /// Signals sent to it, in order ("SIGSTOP", "SIGTERM", ...).
    pub signals: Vec<&'static str>,
    /// Its pidfd reported exit (or it was gone before it could be opened).
    pub exited: bool,
    /// Its command line (printable, `[comm]` for none) as read when its
    /// pidfd was verified: the audit record's proof of what was signalled.
    /// Empty when it was gone before it could be read.
    pub cmdline: String,
    /// /proc state letter at the end, if it still exists with this key.
    pub state_at_end: Option<char>,
}

/// The audit record of one reap.
#[derive(Clone, Debug, Serialize)]
pub struct ReapReport {
    pub outcome: Outcome,
    /// Every member that was (or in a dry run would be) signalled, and
    /// those that were gone before they could be.
    pub members: Vec<MemberResult>,
    pub signals_sent: u32,
    pub duration: Duration,
    /// Keys left alone, and why.
    pub refused: Vec<(ProcKey, &'static str)>,
}

/// What a key is checked against before anything is opened.
pub struct Guard<'a> {
    pub root: ProcKey,
    pub self_pid: u32,
    /// PIDs of the reaper's parent, its parent, ... up to PID 1.
    pub self_ancestors: &'a [u32],
    pub never: &'a [ProcKey],
    /// Why a key must not be signalled by policy (`protect::check`), if so.
    pub protect: &'a dyn Fn(ProcKey) -> Option<&'static str>,
}

/// Why `key` must not be opened or signalled, if it must not.
pub fn refusal(key: ProcKey, guard: &Guard<'_>) -> Option<&'static str> {
    if key.tgid == 0 {
        Some(WHY_PID_ZERO)
    } else if key.tgid == 1 {
        Some(WHY_INIT)
    } else if key.tgid == guard.self_pid {
        Some(WHY_SELF)
    } else if guard.self_ancestors.contains(&key.tgid) {
        Some(WHY_ANCESTOR)
    } else if guard.never.iter().any(|n| n.tgid == key.tgid) {
        Some(WHY_NEVER)
    } else if key.start_ticks < guard.root.start_ticks {
        Some(WHY_OLDER_THAN_ROOT)
    } else {
        (guard.protect)(key)
    }
}

/// The outcome of a reap that ran (not refused as a whole).
/// `opened`: members signalled at all; `policy_refused`: live members left
/// alone by a rule (not by being gone); `killed`: SIGKILL was needed;
/// `survivors`: members alive at the end.
pub fn classify(
    dry_run: bool,
    opened: usize,
    policy_refused: usize,
    killed: bool,
    survivors: usize,
) -> Outcome {
    if dry_run {
        Outcome::DryRun
    } else if opened == 0 && policy_refused > 0 {
        Outcome::Refused(format!("all {policy_refused} live members were refused"))
    } else if opened == 0 {
        Outcome::Vanished
    } else if survivors > 0 {
        Outcome::Unkillable
    } else if killed {
        Outcome::Killed
    } else {
        Outcome::Terminated
    }
}

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
    let guard = Guard {
        root: plan.root,
        self_pid,
        self_ancestors: &ancestors,
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

    let mut run = Run {
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
            .map(|dir| crate::stopped::StopLog::for_reap(dir, plan.root)),
    };
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
    let all: Vec<usize> = (0..run.targets.len()).collect();
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
    if let Some(log) = &run.stop_log {
        log.finish();
    }
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

/// One member being reaped.
struct Target {
    key: ProcKey,
    fd: OwnedFd,
    cmdline: String,
    signals: Vec<&'static str>,
    exited: bool,
}

struct Run<'a> {
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
    stop_log: Option<crate::stopped::StopLog>,
}

impl Run<'_> {
    /// Opens and verifies every new key; returns the indices of the new
    /// targets.
    fn admit(&mut self, keys: Vec<ProcKey>) -> Vec<usize> {
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

    fn signal(&mut self, idx: &[usize], sig: Signal, name: &'static str) {
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
    fn pending(&self) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&i| self.targets.get(i).is_some_and(|t| !t.exited))
            .collect()
    }

    /// Waits (bounded) until every target in `idx` is stopped or dead, so a
    /// scan after it sees every child they will ever fork before SIGCONT.
    fn settle_stopped(&mut self, idx: &[usize]) {
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
    fn collect_stopped(&mut self, source: &mut dyn MemberSource) {
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
    fn wait_exits(&mut self, deadline: Instant) -> bool {
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

    fn dry_run(mut self, keys: Vec<ProcKey>, started: Instant) -> ReapReport {
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

    fn finish(self, killed: bool, started: Instant) -> ReapReport {
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

/// The PIDs above `pid` up to (not including) PID 1; bounded, and stops at
/// the first unreadable step.
fn ancestors_of(proc_root: &Path, pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur = pid;
    for _ in 0..256 {
        match procscan::read_process(proc_root, cur) {
            Ok(p) if p.ppid > 1 && !out.contains(&p.ppid) => {
                out.push(p.ppid);
                cur = p.ppid;
            }
            _ => break,
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: ProcKey = ProcKey::new(500, 1000);

    fn check(
        key: ProcKey,
        never: &[ProcKey],
        protect: &dyn Fn(ProcKey) -> Option<&'static str>,
    ) -> Option<&'static str> {
        let guard = Guard {
            root: ROOT,
            self_pid: 42,
            self_ancestors: &[41, 40],
            never,
            protect,
        };
        refusal(key, &guard)
    }

    #[test]
    fn a_member_of_the_tree_is_allowed() {
        assert_eq!(check(ROOT, &[], &|_| None), None);
        assert_eq!(check(ProcKey::new(600, 1000), &[], &|_| None), None);
        assert_eq!(check(ProcKey::new(3, 5000), &[], &|_| None), None);
    }

    #[test]
    fn pid_one_zero_self_and_ancestors_are_refused() {
        assert_eq!(check(ProcKey::new(1, 2000), &[], &|_| None), Some(WHY_INIT));
        assert_eq!(
            check(ProcKey::new(0, 2000), &[], &|_| None),
            Some(WHY_PID_ZERO)
        );
        assert_eq!(
            check(ProcKey::new(42, 2000), &[], &|_| None),
            Some(WHY_SELF)
        );
        assert_eq!(
            check(ProcKey::new(40, 2000), &[], &|_| None),
            Some(WHY_ANCESTOR)
        );
    }

    #[test]
    fn never_list_matches_by_pid() {
        let host = ProcKey::new(700, 900);
        assert_eq!(
            check(ProcKey::new(700, 1500), &[host], &|_| None),
            Some(WHY_NEVER)
        );
        assert_eq!(check(ProcKey::new(701, 1500), &[host], &|_| None), None);
    }

    #[test]
    fn protect_callback_is_honoured() {
        let k = ProcKey::new(800, 1200);
        let protect = |x: ProcKey| (x == k).then_some(WHY_PROTECTED);
        assert_eq!(check(k, &[], &protect), Some(WHY_PROTECTED));
        assert_eq!(check(ProcKey::new(801, 1200), &[], &protect), None);
        let unreadable = |_| Some(WHY_UNREADABLE);
        assert_eq!(check(k, &[], &unreadable), Some(WHY_UNREADABLE));
    }

    #[test]
    fn older_than_root_is_a_reused_pid() {
        assert_eq!(
            check(ProcKey::new(900, 999), &[], &|_| None),
            Some(WHY_OLDER_THAN_ROOT)
        );
        assert_eq!(check(ProcKey::new(900, 1000), &[], &|_| None), None);
    }

    #[test]
    fn outcomes() {
        assert_eq!(classify(true, 0, 0, false, 0), Outcome::DryRun);
        assert_eq!(classify(false, 0, 0, false, 0), Outcome::Vanished);
        assert!(matches!(
            classify(false, 0, 2, false, 0),
            Outcome::Refused(_)
        ));
        assert_eq!(classify(false, 3, 0, false, 0), Outcome::Terminated);
        assert_eq!(classify(false, 3, 1, true, 0), Outcome::Killed);
        assert_eq!(classify(false, 3, 0, true, 1), Outcome::Unkillable);
    }

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
