//! Ground truth, from the kernel and never from the daemon: which processes
//! carry a soak tag in their environment (a sweep of /proc), and whether a
//! process known by (pid, start time) is still alive (its pidfd).
//!
//! Owns: the sweeper thread and its latest snapshot, and the pidfds of the
//! processes the soak watches. Must never: signal a process that does not
//! carry this run's tag (only `kill_tagged`, at the end, signals at all), or
//! take a PID alone for a process (a pidfd is opened, then its start time
//! checked).
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use super::host::TAG_ENV;

/// How often the sweeper reads /proc.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// A live (not zombie) process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
    /// Its command line, NULs as spaces.
    pub cmdline: String,
}

/// One sweep: the tagged processes by tag, and when the sweep began (so a
/// process absent from it was gone by then... or started after).
#[derive(Clone, Default)]
pub struct Snapshot {
    pub began: Option<Instant>,
    pub by_tag: HashMap<String, Vec<Proc>>,
}

/// The sweeper's output, shared with every lifecycle.
#[derive(Default)]
pub struct Sweeps {
    latest: Mutex<Arc<Snapshot>>,
    fresh: Condvar,
}

impl Sweeps {
    /// The first snapshot whose sweep began at or after `after`.
    pub fn begun_after(&self, after: Instant) -> Arc<Snapshot> {
        let Ok(mut guard) = self.latest.lock() else {
            return Arc::default();
        };
        loop {
            if guard.began.is_some_and(|b| b >= after) {
                return Arc::clone(&guard);
            }
            match self.fresh.wait_timeout(guard, Duration::from_secs(5)) {
                Ok((g, _)) => guard = g,
                Err(_) => return Arc::default(),
            }
        }
    }

    fn publish(&self, snap: Snapshot) {
        if let Ok(mut guard) = self.latest.lock() {
            *guard = Arc::new(snap);
        }
        self.fresh.notify_all();
    }
}

/// Sweeps /proc for processes whose tag starts with `prefix`, every
/// [`SWEEP_EVERY`], until `stop`.
pub fn sweeper(prefix: String, sweeps: Arc<Sweeps>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        sweeps.publish(Snapshot {
            began: Some(began),
            by_tag: sweep(&prefix),
        });
        std::thread::sleep(SWEEP_EVERY.saturating_sub(began.elapsed()));
    }
}

/// Every live process whose [`TAG_ENV`] starts with `prefix`, by tag.
pub fn sweep(prefix: &str) -> HashMap<String, Vec<Proc>> {
    let mut by_tag: HashMap<String, Vec<Proc>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return by_tag;
    };
    let needle = format!("{TAG_ENV}={prefix}");
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(tag) = tag_of(&environ, &needle) else {
            continue;
        };
        let Some(start) = live_start(pid) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            })
            .unwrap_or_default();
        by_tag.entry(tag).or_default().push(Proc {
            pid,
            start,
            cmdline,
        });
    }
    by_tag
}

/// The tag (after `TAG_ENV=`) of an environment block whose tag entry
/// starts with `needle`.
fn tag_of(environ: &[u8], needle: &str) -> Option<String> {
    let eq = TAG_ENV.len() + 1;
    environ
        .split(|&b| b == 0)
        .find(|e| e.starts_with(needle.as_bytes()))
        .and_then(|e| std::str::from_utf8(e.get(eq..)?).ok())
        .map(str::to_owned)
}

/// The start time of a process that is alive and not a zombie.
pub fn live_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// (state != Z) start time, field 22 of /proc/PID/stat.
fn parse_stat(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    // After the state (field 3), start time is field 22: 18 further on.
    fields.nth(18)?.parse().ok()
}

/// A process held by its pidfd, so that its death is seen even if its PID
/// is reused.
pub struct Watched {
    pub proc: Proc,
    fd: OwnedFd,
}

impl Watched {
    /// Opens a pidfd and checks it names this (pid, start time); `None` if
    /// the process is already gone.
    pub fn open(proc: &Proc) -> Option<Self> {
        let fd = pidfd_open(
            Pid::from_raw(i32::try_from(proc.pid).ok()?)?,
            PidfdFlags::empty(),
        )
        .ok()?;
        let w = Self {
            proc: proc.clone(),
            fd,
        };
        (live_start(proc.pid) == Some(proc.start) && w.alive()).then_some(w)
    }

    /// False once the process has exited (a zombie counts as exited).
    pub fn alive(&self) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&rustix::time::Timespec::default())) {
            Ok(0) => live_start(self.proc.pid) == Some(self.proc.start),
            _ => false,
        }
    }
}

/// SIGKILLs every live process tagged with `prefix` (each through its
/// pidfd, checked by start time): what the soak leaves when it stops early
/// or fails. Returns how many it killed.
pub fn kill_tagged(prefix: &str) -> usize {
    let mut killed = 0;
    // Again while a sweep finds any: a member may fork between two passes.
    for _ in 0..5 {
        let found: Vec<Proc> = sweep(prefix).into_values().flatten().collect();
        if found.is_empty() {
            break;
        }
        for p in found {
            if let Some(w) = Watched::open(&p)
                && rustix::process::pidfd_send_signal(&w.fd, rustix::process::Signal::KILL).is_ok()
            {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tag_entry_by_prefix() {
        let env = b"A=1\0MCP_SOAK_TAG=soak-9-3.1\0B=2\0";
        assert_eq!(
            tag_of(env, "MCP_SOAK_TAG=soak-9-"),
            Some("soak-9-3.1".to_owned())
        );
        assert_eq!(tag_of(env, "MCP_SOAK_TAG=soak-8-"), None);
        assert_eq!(
            tag_of(b"XMCP_SOAK_TAG=soak-9-1\0", "MCP_SOAK_TAG=soak-9-"),
            None
        );
    }

    #[test]
    fn zombies_have_no_start_time() {
        let live = "42 (a b) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        assert_eq!(parse_stat(live), Some(777));
        let zombie = "42 (a) Z 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        assert_eq!(parse_stat(zombie), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_sweep_finds_a_tagged_child_and_its_pidfd_sees_it_die() -> anyhow::Result<()> {
        let tag = format!("soak-test{}-x.0", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(TAG_ENV, &tag)
            .spawn()?;
        // A sweep may run before the child's exec shows its environment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut found = sweep(&format!("soak-test{}-", std::process::id()));
        while !found.contains_key(&tag) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            found = sweep(&format!("soak-test{}-", std::process::id()));
        }
        let procs = found.get(&tag).cloned().unwrap_or_default();
        assert_eq!(
            procs.len(),
            1,
            "the tagged child in 5 s of sweeps: {found:?}"
        );
        let w = procs
            .first()
            .and_then(Watched::open)
            .ok_or_else(|| anyhow::anyhow!("no pidfd for {procs:?}"))?;
        assert!(w.alive());
        child.kill()?;
        child.wait()?;
        assert!(!w.alive());
        Ok(())
    }
}
