//! What more than one benchmark uses, so that no benchmark imports another:
//! the scratch directory and the config the daemon runs with, the fake MCP
//! servers that config matches, process counts, spawn storms, and
//! percentiles and medians.
//!
//! Owns: the fake servers' lives (dropping a [`Fleet`] kills every server's
//! process group and waits for it). Must never: import a benchmark module,
//! start the daemon (that is `daemon.rs`), or write a report.
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use rustix::process::{Pid, Signal, kill_process_group};

pub use crate::stats::percentile;

/// A fake server's script: bash stays the tree's root (it runs `sleep` as a
/// child and then `exit`), so its command line keeps matching the rule for
/// the tree's whole life.
pub const SERVER_SCRIPT: &str = "# mcp-fake-server\nsleep 600; exit 0";
/// The daemon's config: one `[[server]]` rule matching the fake servers, no
/// grace period.
pub const CONFIG: &str = r#"[[server]]
name = "fake"
cmdline = 'bash -c # mcp-fake-server(?s:.*)'

[policy]
grace = "0s"
kill_after = "1s"
"#;
/// Fake servers are started in batches of this many, with a pause between.
pub const BATCH: u32 = 20;
pub const BATCH_PAUSE: Duration = Duration::from_millis(100);
/// What a spawn storm runs.
pub const STORM_PROGRAM: &str = "/bin/true";

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(bench: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("mcp-reaper-bench-{bench}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// A scratch directory holding [`CONFIG`] as `config.toml`.
    pub fn with_config(bench: &str) -> Result<Self> {
        let scratch = Self::new(bench)?;
        let config = scratch.0.join("config.toml");
        std::fs::write(&config, CONFIG).with_context(|| format!("write {}", config.display()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct FakeServer {
    child: Child,
    /// This process's end of the server's stdio; `None` once released.
    end: Option<UnixStream>,
}

/// Fake servers; dropping it kills every one's process group and waits.
#[derive(Default)]
pub struct Fleet {
    servers: Vec<FakeServer>,
}

impl Fleet {
    pub fn start(count: u32) -> Result<Self> {
        let mut fleet = Self::default();
        for i in 0..count {
            let (ours, theirs) = UnixStream::pair().context("socketpair")?;
            let theirs_out = theirs.try_clone().context("dup socket")?;
            let child = Command::new("bash")
                .args(["-c", SERVER_SCRIPT])
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .with_context(|| format!("start fake server {} of {count}", i + 1))?;
            fleet.servers.push(FakeServer {
                child,
                end: Some(ours),
            });
            if (i + 1).is_multiple_of(BATCH) {
                std::thread::sleep(BATCH_PAUSE);
            }
        }
        Ok(fleet)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.child.id()).collect()
    }

    /// Closes this process's end of every server's stdio, in order, `gap`
    /// apart; the [`now_us`] of each close.
    pub fn release_each(&mut self, gap: Duration) -> Vec<i64> {
        let mut closed_us = Vec::with_capacity(self.servers.len());
        for s in &mut self.servers {
            let end = s.end.take();
            let t = now_us();
            drop(end);
            closed_us.push(t);
            std::thread::sleep(gap);
        }
        closed_us
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.end = None;
            if let Some(pid) = Pid::from_raw(i32::try_from(s.child.id()).unwrap_or(0)) {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
        for s in &mut self.servers {
            let _ = s.child.wait();
        }
    }
}

/// Wall-clock (CLOCK_REALTIME) microseconds since the epoch: the clock of
/// the audit log's timestamps.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Processes (thread-group leaders) on the machine: numeric entries of /proc.
pub fn count_processes() -> Result<usize> {
    Ok(std::fs::read_dir("/proc")
        .context("read /proc")?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count())
}

/// `spawns` sequential fork+exec+wait of [`STORM_PROGRAM`]; the wall time.
pub fn storm(spawns: u32) -> Result<Duration> {
    storm_of(STORM_PROGRAM, &[], spawns)
}

/// `spawns` sequential fork+exec+wait of `program` with `args`, stopping
/// at the first that fails; the wall time.
fn storm_of(program: &str, args: &[&str], spawns: u32) -> Result<Duration> {
    let start = Instant::now();
    for i in 0..spawns {
        let status = Command::new(program)
            .args(args)
            .status()
            .with_context(|| format!("spawn {program}"))?;
        if !status.success() {
            bail!(
                "{program} (spawn {} of {spawns}) exited with {status}",
                i + 1
            );
        }
    }
    Ok(start.elapsed())
}

/// The median; of an even count, the mean of the middle two.
pub fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => values.get(n / 2).copied(),
        _ => Some((*values.get(n / 2 - 1)? + *values.get(n / 2)?) / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_runs_every_spawn_and_stops_at_the_first_failure() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let tally = dir.path().join("tally");
        let count = || -> Result<usize> { Ok(std::fs::read_to_string(&tally)?.lines().count()) };
        let append = format!("echo x >> '{}'", tally.display());
        storm_of("/bin/sh", &["-c", &append], 20)?;
        assert_eq!(count()?, 20, "each of the 20 spawns ran once");
        let failing = format!("{append}; exit 3");
        let Err(e) = storm_of("/bin/sh", &["-c", &failing], 20) else {
            panic!("a storm of a failing program must fail");
        };
        assert!(
            format!("{e:#}").contains("(spawn 1 of 20) exited with"),
            "{e:#}"
        );
        assert_eq!(count()?, 21, "the storm stopped at its first failure");
        // The program the benchmarks storm with runs and succeeds.
        storm(3)?;
        Ok(())
    }

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(
            median(vec![ms(4), ms(1), ms(2), ms(3)]),
            Some(ms(2) + ms(500) / 1000)
        );
    }
}
