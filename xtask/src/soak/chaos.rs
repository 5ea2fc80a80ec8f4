//! The soak's chaos: what it does to the daemon and the machine while the
//! lifecycles play. Each kind is one flag; `all` turns every one on.
//!
//! Owns: the daemon under test (started, killed with SIGKILL, restarted,
//! starved of CPU through a cgroup), the bursts of unrelated processes, the
//! `release` calls and the PID-reuse bystanders. Must never: signal any
//! process but the daemon and its own burst and bystander children, or
//! decide a verdict (the lifecycles and the audit check do).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use clap::ValueEnum;

use crate::child_daemon::{Daemon, get_metrics};

use super::host::TAG_ENV;
use super::lifecycle::Shared;
use super::truth::{Proc, Watched, live_start};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chaos {
    /// Every chaos below.
    All,
    /// SIGKILL the daemon at random moments and start it again.
    DaemonKill,
    /// `mcp-reaper release` for sessions in play and for ended ones.
    ReleaseCalls,
    /// Bursts of unrelated fork/exec.
    Bursts,
    /// A 4 KiB ring buffer, so that the kernel drops events.
    SmallRing,
    /// A watch map too small for the trees in play (by design a full map
    /// leaves lineage incomplete: the daemon reports itself degraded and
    /// reaps nothing until a resync finds room; see `health.rs`).
    SmallWatch,
    /// Recycled PIDs (through ns_last_pid) on long-lived bystanders.
    PidReuse,
    /// The daemon limited to a quarter of a core (cgroup cpu quota).
    Starve,
    /// The daemon's classification delayed (a fault-injection hook).
    ClassifyDelay,
}

impl Chaos {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// The flags in force: `all` expands to every one.
    pub fn expand(given: &[Self]) -> Vec<Self> {
        let mut v: Vec<Self> = if given.contains(&Self::All) {
            Self::value_variants()
                .iter()
                .copied()
                .filter(|c| *c != Self::All)
                .collect()
        } else {
            given.to_vec()
        };
        v.sort();
        v.dedup();
        v
    }
}

/// How many times a restart tries to start the daemon.
const START_TRIES: usize = 3;

/// The daemon under test, restartable.
pub struct DaemonSlot {
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cgroup: Option<PathBuf>,
    /// Its `/metrics` address, read before each stop or kill.
    pub listen: SocketAddr,
    daemon: Mutex<Option<Daemon>>,
    pub restarts: AtomicU32,
    pub peak_hwm_kib: AtomicU64,
    /// Sums over every daemon run of `mcp_reaper_lost_events_total` and
    /// `mcp_reaper_resyncs_total` (each run starts them at zero).
    pub lost_events: AtomicU64,
    pub resyncs: AtomicU64,
}

impl DaemonSlot {
    pub fn start(
        bin: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cgroup: Option<PathBuf>,
        listen: SocketAddr,
    ) -> Result<Self> {
        let slot = Self {
            bin,
            args,
            env,
            cgroup,
            listen,
            daemon: Mutex::new(None),
            restarts: AtomicU32::new(0),
            peak_hwm_kib: AtomicU64::new(0),
            lost_events: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
        };
        let d = slot.spawn()?;
        if let Ok(mut g) = slot.daemon.lock() {
            *g = Some(d);
        }
        Ok(slot)
    }

    fn spawn(&self) -> Result<Daemon> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let d = Daemon::start_with_env(&self.bin, &args, &env)?;
        if let Some(pid) = d.pid() {
            super::orphans::own(pid);
        }
        if let (Some(cg), Some(pid)) = (&self.cgroup, d.pid()) {
            std::fs::write(cg.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("move the daemon into {}", cg.display()))?;
        }
        Ok(d)
    }

    /// Its peak memory and its loss and resync counters, before it ends.
    fn note_memory(&self, d: &mut Daemon) {
        if let Ok(m) = d.memory() {
            self.peak_hwm_kib.fetch_max(m.hwm_kib, Ordering::Relaxed);
        }
        if let Ok(body) = get_metrics(self.listen) {
            let text = String::from_utf8_lossy(&body);
            let sum = |name| counter_sum(&text, name);
            self.lost_events
                .fetch_add(sum("mcp_reaper_lost_events_total"), Ordering::Relaxed);
            self.resyncs
                .fetch_add(sum("mcp_reaper_resyncs_total"), Ordering::Relaxed);
        }
    }

    /// SIGKILL, a pause, a new daemon. A start that fails (on a loaded
    /// machine, a starved daemon may miss the ready timeout) is tried again,
    /// up to [`START_TRIES`] times; the failures are returned, to be
    /// reported, and only the last one is an error.
    pub fn crash_and_restart(&self, pause: Duration) -> Result<Vec<String>> {
        let Ok(mut g) = self.daemon.lock() else {
            anyhow::bail!("daemon slot poisoned");
        };
        if let Some(mut d) = g.take() {
            self.note_memory(&mut d);
            d.kill9();
        }
        std::thread::sleep(pause);
        let mut failed = Vec::new();
        for _ in 0..START_TRIES {
            match self.spawn() {
                Ok(d) => {
                    *g = Some(d);
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    return Ok(failed);
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    failed.push(e.lines().next().unwrap_or_default().to_owned());
                }
            }
        }
        anyhow::bail!("the daemon did not start again: {}", failed.join("; "))
    }

    /// Peak memory of the running daemon, then SIGTERM.
    pub fn stop(&self) -> Result<()> {
        let Ok(mut g) = self.daemon.lock() else {
            anyhow::bail!("daemon slot poisoned");
        };
        match g.take() {
            Some(mut d) => {
                self.note_memory(&mut d);
                // Its shutdown is not under test: out of the starving cgroup.
                if let (Some(cg), Some(pid)) = (&self.cgroup, d.pid())
                    && let Some(parent) = cg.parent()
                {
                    let _ = std::fs::write(parent.join("cgroup.procs"), pid.to_string());
                }
                d.stop()
            }
            None => Ok(()),
        }
    }
}

/// The sum of every series of a counter in a text exposition.
fn counter_sum(text: &str, name: &str) -> u64 {
    counter_sum_with(text, name, "")
}

/// The sum of the series of a counter whose labels contain `label`.
fn counter_sum_with(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) || !rest.contains(label) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum::<f64>() as u64
}

/// A cgroup (v1 `cpu` or v2) limiting its members to a quarter of a core;
/// removed by [`remove_cgroup`].
pub fn starve_cgroup(name: &str) -> Result<PathBuf> {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        let dir = v1.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), "25000")?;
        return Ok(dir);
    }
    let dir = Path::new("/sys/fs/cgroup").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("cpu.max"), "25000 100000")
        .with_context(|| format!("write {}/cpu.max", dir.display()))?;
    Ok(dir)
}

pub fn remove_cgroup(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// What the chaos threads counted.
#[derive(Default)]
pub struct Counts {
    pub release_calls: AtomicU32,
    /// Daemon starts that failed and were tried again.
    pub start_retries: AtomicU32,
    pub burst_spawns: AtomicU64,
    pub pid_reuse_tries: AtomicU32,
    pub pid_reuse_landed: AtomicU32,
}

/// Sleeps up to `d`, returning early (false) once `stop` is set.
fn nap(stop: &AtomicBool, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

/// Kills and restarts the daemon at a random moment of every 10-30 s: each
/// run lives long enough to start (slowly, when starved) and to judge what
/// happened while it was down.
/// Failed starts are returned, to be reported as problems.
pub fn daemon_killer(slot: &DaemonSlot, seed: u64, stop: &AtomicBool) -> Result<Vec<String>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut failed = Vec::new();
    while nap(stop, Duration::from_millis(rng.u64(10_000..30_000))) {
        failed.extend(slot.crash_and_restart(Duration::from_millis(rng.u64(0..500)))?);
    }
    Ok(failed)
}

/// Sends `release` for a random session, in play or ended, every 0.3-1.5 s.
pub fn releaser(
    shared: &Shared,
    bin: &Path,
    socket: &Path,
    ended: &Mutex<Vec<String>>,
    counts: &Counts,
    seed: u64,
    stop: &AtomicBool,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while nap(stop, Duration::from_millis(rng.u64(300..1500))) {
        let live: Vec<String> = shared
            .active
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        let done: Vec<String> = ended.lock().map(|e| e.clone()).unwrap_or_default();
        let pick = if rng.bool() { &live } else { &done };
        let Some(session) = pick.get(rng.usize(..pick.len().max(1))).cloned() else {
            continue;
        };
        // Marked before the call, so that no death after it is a false
        // kill; unmarked again if the call never reached a daemon.
        let marked = shared.release_called.lock().is_ok_and(|mut r| {
            let fresh = !r.contains_key(&session);
            r.entry(session.clone()).or_insert_with(Instant::now);
            fresh
        });
        let status = Command::new(bin)
            .args(["release", "--session", &session, "--socket"])
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Exit 0: trees released; 1: none matched; anything else (the
        // daemon unreachable while it restarts) released nothing.
        let reached = status
            .as_ref()
            .is_ok_and(|s| matches!(s.code(), Some(0 | 1)));
        if !reached
            && marked
            && let Ok(mut r) = shared.release_called.lock()
        {
            r.remove(&session);
        }
        if reached && let Ok(mut e) = ended.lock() {
            e.push(session.clone());
        }
        counts.release_calls.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every 1-3 s, 100 unrelated fork/exec/exit in a row.
pub fn bursts(counts: &Counts, seed: u64, stop: &AtomicBool) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while nap(stop, Duration::from_millis(rng.u64(1000..3000))) {
        for _ in 0..100 {
            if Command::new("/bin/true").status().is_ok() {
                counts.burst_spawns.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Long-lived processes the daemon must never touch: plain ones started at
/// the beginning, and ones placed on recycled PIDs.
pub struct Bystanders {
    prefix: String,
    children: Mutex<Vec<(Child, Option<Watched>)>>,
    /// Serialises writes to ns_last_pid with the spawn that follows.
    ns_last_pid: Mutex<()>,
    next: AtomicU32,
}

/// At most this many PID-reuse bystanders live at once.
const MAX_BYSTANDERS: usize = 400;

impl Bystanders {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            children: Mutex::new(Vec::new()),
            ns_last_pid: Mutex::new(()),
            next: AtomicU32::new(0),
        }
    }

    /// Starts one `sleep` bystander; its PID.
    pub fn spawn(&self) -> Result<u32> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let child = Command::new("sleep")
            .arg("86400")
            .env(TAG_ENV, format!("{}by-{n}", self.prefix))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start a bystander")?;
        let pid = child.id();
        super::orphans::own(pid);
        let w = live_start(pid).and_then(|start| {
            Watched::open(&Proc {
                pid,
                start,
                cmdline: "sleep 86400".to_owned(),
            })
        });
        if let Ok(mut c) = self.children.lock() {
            c.push((child, w));
        }
        Ok(pid)
    }

    /// Tries to start a bystander on `pid`, just freed by a reaped tree.
    pub fn on_recycled(&self, pid: u32, counts: &Counts) {
        if self.children.lock().map(|c| c.len()).unwrap_or(usize::MAX) >= MAX_BYSTANDERS {
            return;
        }
        let Ok(_guard) = self.ns_last_pid.lock() else {
            return;
        };
        counts.pid_reuse_tries.fetch_add(1, Ordering::Relaxed);
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_err() {
            return;
        }
        if self.spawn().is_ok_and(|got| got == pid) {
            counts.pid_reuse_landed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The bystanders that died (false kills), then every one is stopped.
    pub fn finish(&self) -> Vec<String> {
        let mut dead = Vec::new();
        let Ok(mut children) = self.children.lock() else {
            return vec!["bystander list poisoned".to_owned()];
        };
        for (child, w) in children.iter_mut() {
            match w {
                Some(w) if !w.alive() => {
                    dead.push(format!("bystander {} (sleep 86400) died", w.proc.pid));
                }
                None => dead.push(format!("bystander {} had no pidfd", child.id())),
                Some(_) => {}
            }
            let _ = child.kill();
            let _ = child.wait();
            super::orphans::disown(child.id());
        }
        dead
    }
}

/// The sessions a `release` was called for, with when, for the audit check.
pub fn release_walls(
    called: &HashMap<String, Instant>,
    now: Instant,
) -> HashMap<String, SystemTime> {
    let wall_now = SystemTime::now();
    called
        .iter()
        .map(|(s, t)| (s.clone(), wall_now - now.saturating_duration_since(*t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_counter_over_its_series_only() {
        let text = "# TYPE mcp_reaper_resyncs_total counter\nmcp_reaper_resyncs_total 3\n\
                    mcp_reaper_resyncs_total_x 100\n\
                    mcp_reaper_lost_events_total{cpu=\"0\"} 2\nmcp_reaper_lost_events_total{cpu=\"1\"} 5\n";
        assert_eq!(counter_sum(text, "mcp_reaper_resyncs_total"), 3);
        assert_eq!(counter_sum(text, "mcp_reaper_lost_events_total"), 7);
        assert_eq!(counter_sum(text, "mcp_reaper_nothing"), 0);
        assert_eq!(
            counter_sum_with(text, "mcp_reaper_lost_events_total", "cpu=\"1\""),
            5
        );
    }

    #[test]
    fn all_expands_to_every_flag() {
        let all = Chaos::expand(&[Chaos::All]);
        assert_eq!(all.len(), Chaos::value_variants().len() - 1);
        assert!(!all.contains(&Chaos::All));
        assert_eq!(
            Chaos::expand(&[Chaos::Starve, Chaos::Bursts, Chaos::Starve]),
            vec![Chaos::Bursts, Chaos::Starve]
        );
    }
}
