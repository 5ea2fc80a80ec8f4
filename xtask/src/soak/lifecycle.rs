//! One session lifecycle, played by a host process (`host.rs`) and judged
//! against the ground truth (`truth.rs`): the trees that must live are
//! checked by pidfd (and by an echo where the host still talks to them),
//! the trees that were let go must be gone within the allowance.
//!
//! Owns: a lifecycle's host process and its outcome. Must never: signal a
//! tree member (the only process it kills is the host of a `host-killed`
//! lifecycle, which is the scenario), or read the daemon's output.
use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};

use super::host::{HOST_COMMAND, SESSION_ENV};
use super::plan::{Kind, Lifecycle};
use super::truth::{Proc, Snapshot, Sweeps, Watched};

/// What every lifecycle shares.
pub struct Shared {
    pub sweeps: Arc<Sweeps>,
    /// The xtask executable (the hosts are `xtask soak-host`).
    pub exe: PathBuf,
    /// Every tag of this run starts with it.
    pub prefix: String,
    /// How long a host waits after its start before starting its trees.
    pub spawn_delay: Duration,
    /// From the end action to the check of what must still live: past
    /// grace + kill_after, so that a wrong release is a death by then.
    pub check_after: Duration,
    /// Grace + kill_after + margin: how long a let-go tree may live.
    pub allowance: Duration,
    /// Sessions a `release` call was sent for, and when (set before the
    /// call, so a death after it is never counted as a false kill).
    pub release_called: Mutex<HashMap<String, Instant>>,
    /// Sessions in play, for the release chaos to choose from.
    pub active: Mutex<HashSet<String>>,
}

impl Shared {
    fn released_since(&self, session: &str) -> Option<Instant> {
        self.release_called.lock().ok()?.get(session).copied()
    }
}

/// A tree as the audit cross-check needs it: its root and when the soak let
/// it go (the end action, or a `release` call).
#[derive(Clone, Debug)]
pub struct Ended {
    pub session: String,
    pub root: (u32, u64),
    pub wall: SystemTime,
}

#[derive(Default, Debug)]
pub struct Outcome {
    pub false_kills: Vec<String>,
    /// Let-go trees alive past their allowance, with when they were let go.
    pub leaks: Vec<(Instant, String)>,
    /// From letting go to the first sweep that found the tree gone.
    pub reap_ms: Vec<u64>,
    pub ended: Vec<Ended>,
    /// Roots whose PIDs the PID-reuse chaos may recycle.
    pub reaped_roots: Vec<u32>,
    pub error: Option<String>,
}

struct Host {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Host {
    fn ask(&mut self, line: &str) -> Result<String> {
        writeln!(self.stdin, "{line}").with_context(|| format!("tell the host {line:?}"))?;
        self.stdin.flush()?;
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            bail!("the host ended instead of answering {line:?}");
        }
        Ok(answer.trim_end().to_owned())
    }
}

/// A tree the lifecycle waits to see gone.
struct Pending {
    tag: String,
    kind: Kind,
    since: Instant,
}

/// Plays one lifecycle; never panics, errors end up in the outcome.
pub fn play(shared: &Shared, lc: &Lifecycle) -> Outcome {
    let session = format!("{}{}", shared.prefix, lc.id);
    if let Ok(mut a) = shared.active.lock() {
        a.insert(session.clone());
    }
    let mut out = Outcome::default();
    if let Err(e) = run(shared, lc, &session, &mut out) {
        out.error = Some(format!("lifecycle {} ({}): {e:#}", lc.id, lc.kind.name()));
    }
    if let Ok(mut a) = shared.active.lock() {
        a.remove(&session);
    }
    out
}

fn start_host(shared: &Shared, lc: &Lifecycle, session: &str) -> Result<(Host, Vec<u32>)> {
    let mut child = Command::new(&shared.exe)
        .args([HOST_COMMAND, "--kind", lc.kind.name(), "--tag", session])
        .arg("--helper-ms")
        // The helper holds the end past the check.
        .arg((shared.check_after + lc.keep).as_millis().to_string())
        .arg("--spawn-delay-ms")
        .arg(shared.spawn_delay.as_millis().to_string())
        .env(SESSION_ENV, session)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the host")?;
    super::orphans::own(child.id());
    let stdin = child.stdin.take().ok_or_else(|| anyhow!("no host stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no host stdout"))?;
    let mut host = Host {
        child,
        stdin,
        stdout: BufReader::new(stdout),
    };
    let mut line = String::new();
    host.stdout.read_line(&mut line)?;
    let roots = line
        .trim_end()
        .strip_prefix("ready ")
        .ok_or_else(|| anyhow!("the host said {line:?} instead of ready"))?
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .with_context(|| format!("roots in {line:?}"))?;
    Ok((host, roots))
}

/// One lifecycle's script, in the order it happens: start, hold, end, check
/// what must live, let the rest go, wait for it to be gone. Longer than the
/// rule of thumb on purpose: split, its steps would hand the same host,
/// tags, roots and pending list back and forth.
fn run(shared: &Shared, lc: &Lifecycle, session: &str, out: &mut Outcome) -> Result<()> {
    let (mut host, roots) = start_host(shared, lc, session)?;
    let tags: Vec<String> = (0..lc.kind.trees())
        .map(|i| format!("{session}.{i}"))
        .collect();
    let snap = shared.sweeps.begun_after(Instant::now());
    let mut watched = Vec::new();
    let mut root_keys = Vec::new();
    for (tag, root) in tags.iter().zip(&roots) {
        let members = snap.by_tag.get(tag).cloned().unwrap_or_default();
        let Some(r) = members.iter().find(|p| p.pid == *root) else {
            bail!("tree {tag}'s root {root} was not found alive after ready");
        };
        root_keys.push((r.pid, r.start));
        watched.push(watch_stable(&members));
    }
    std::thread::sleep(lc.hold);
    // Nothing may die before the end action.
    check_alive(shared, lc, session, &watched, &[], out);
    let t_end = Instant::now();
    let w_end = SystemTime::now();
    if lc.kind == Kind::HostKilled {
        host.child.kill().context("SIGKILL the host")?;
    } else {
        let a = host.ask("end")?;
        if a != "ended" {
            bail!("the host answered {a:?} to end");
        }
    }
    let mut pending: Vec<Pending> = Vec::new();
    for &i in lc.kind.released_at_end() {
        if let (Some(tag), Some(root)) = (tags.get(i), root_keys.get(i)) {
            pending.push(Pending {
                tag: tag.clone(),
                kind: lc.kind,
                since: t_end,
            });
            out.ended.push(Ended {
                session: session.to_owned(),
                root: *root,
                wall: w_end,
            });
        }
    }
    if lc.kind.keeps_after_end() {
        // While waiting for the released trees, the kept ones must live.
        let check_at = t_end + shared.check_after + lc.keep / 2;
        await_gone(shared, &mut pending, out, Some(check_at));
        check_kept(shared, lc, session, &mut host, &watched, out)?;
        // Let go: the helper's exit, or the host's finish.
        if lc.kind == Kind::HandedOver {
            let a = host.ask("wait-helper")?;
            if a != "helper-exited" {
                bail!("the host answered {a:?} to wait-helper");
            }
        }
        let t_rel = Instant::now();
        let w_rel = SystemTime::now();
        if lc.kind != Kind::HandedOver {
            let _ = writeln!(host.stdin, "finish");
        }
        for (i, tag) in tags.iter().enumerate() {
            if lc.kind.released_at_end().contains(&i) {
                continue;
            }
            pending.push(Pending {
                tag: tag.clone(),
                kind: lc.kind,
                since: t_rel,
            });
            if let Some(root) = root_keys.get(i) {
                out.ended.push(Ended {
                    session: session.to_owned(),
                    root: *root,
                    wall: w_rel,
                });
            }
        }
    }
    if lc.kind != Kind::HostKilled {
        let _ = writeln!(host.stdin, "finish");
    }
    drop(host.stdin);
    let status = host.child.wait()?;
    super::orphans::disown(host.child.id());
    if lc.kind != Kind::HostKilled && !status.success() {
        out.false_kills
            .push(format!("{session}: the host exited with {status}"));
    }
    // A release call may have let a tree go before the soak did.
    if let Some(t) = shared.released_since(session) {
        for p in &mut pending {
            p.since = p.since.min(t);
        }
    }
    await_gone(shared, &mut pending, out, None);
    out.reaped_roots = root_keys.iter().map(|r| r.0).collect();
    Ok(())
}

/// Pidfds of a tree's long-lived members (not the fork loop's short-lived
/// children).
fn watch_stable(members: &[Proc]) -> Vec<Watched> {
    members
        .iter()
        .filter(|p| p.cmdline != "sleep 0.05")
        .filter_map(Watched::open)
        .collect()
}

/// The trees that must still be alive are, unless a release call let them
/// go; then the host's echo.
fn check_kept(
    shared: &Shared,
    lc: &Lifecycle,
    session: &str,
    host: &mut Host,
    watched: &[Vec<Watched>],
    out: &mut Outcome,
) -> Result<()> {
    if shared.released_since(session).is_some() {
        return Ok(());
    }
    check_alive(shared, lc, session, watched, lc.kind.released_at_end(), out);
    let echo = host.ask("check")?;
    if echo != "ok" && shared.released_since(session).is_none() {
        out.false_kills
            .push(format!("{session} ({}): echo {echo}", lc.kind.name()));
    }
    Ok(())
}

/// Every watched member of every tree but `skip` must be alive, unless a
/// release call let the session go.
fn check_alive(
    shared: &Shared,
    lc: &Lifecycle,
    session: &str,
    watched: &[Vec<Watched>],
    skip: &[usize],
    out: &mut Outcome,
) {
    for (i, tree) in watched.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        for w in tree.iter().filter(|w| !w.alive()) {
            if shared.released_since(session).is_some() {
                return;
            }
            out.false_kills.push(format!(
                "{session}.{i} ({}): {} {:?} died while its session held it",
                lc.kind.name(),
                w.proc.pid,
                w.proc.cmdline
            ));
        }
    }
}

/// Waits on the sweeps until every pending tree is gone (its reap time is
/// recorded) or past its allowance (a leak), or until `until`.
fn await_gone(
    shared: &Shared,
    pending: &mut Vec<Pending>,
    out: &mut Outcome,
    until: Option<Instant>,
) {
    let mut last = Instant::now();
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            return;
        }
        if pending.is_empty() {
            if let Some(u) = until {
                std::thread::sleep(u.saturating_duration_since(Instant::now()));
            }
            return;
        }
        let snap = shared.sweeps.begun_after(last);
        let Some(began) = snap.began else { return };
        last = began + Duration::from_millis(1);
        pending.retain(|p| !settle(shared, p, &snap, began, out));
    }
}

/// Whether a pending tree is settled by this snapshot: gone, or leaked.
fn settle(
    shared: &Shared,
    p: &Pending,
    snap: &Snapshot,
    began: Instant,
    out: &mut Outcome,
) -> bool {
    if began < p.since {
        return false;
    }
    match snap.by_tag.get(&p.tag) {
        None => {
            let ms = began.saturating_duration_since(p.since).as_millis();
            out.reap_ms.push(u64::try_from(ms).unwrap_or(u64::MAX));
            true
        }
        Some(alive) if began.saturating_duration_since(p.since) > shared.allowance => {
            let who: Vec<String> = alive
                .iter()
                .map(|a| format!("{} {:?}", a.pid, a.cmdline))
                .collect();
            out.leaks.push((
                p.since,
                format!(
                    "{} ({}): alive {} ms after it was let go: {}",
                    p.tag,
                    p.kind.name(),
                    began.saturating_duration_since(p.since).as_millis(),
                    who.join(", ")
                ),
            ));
            true
        }
        Some(_) => false,
    }
}
