//! The daemon as a benchmark subject: started as a child, ready when a line
//! on its stderr contains the word `ready`, measured through
//! /proc/<pid>/status, stopped with SIGTERM. Dropping a [`Daemon`] that was
//! not stopped kills it, so a failed benchmark leaves nothing running.
use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use rustix::process::{Pid, Signal, kill_process};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many of the daemon's last stderr lines an error shows.
const KEEP_LINES: usize = 200;

pub struct Daemon {
    child: Option<Child>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    command: String,
}

/// From /proc/<pid>/status, in KiB.
#[derive(Clone, Copy)]
pub struct Memory {
    /// Peak resident set size (VmHWM).
    pub hwm_kib: u64,
    /// Current resident set size (VmRSS).
    pub rss_kib: u64,
    /// Its anonymous part (RssAnon: heap and stacks, not mapped files such
    /// as the binary's own code).
    pub anon_kib: u64,
}

fn has_word(line: &str, word: &str) -> bool {
    line.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

impl Daemon {
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let command = format!("{} {}", bin.display(), args.join(" "));
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start `{command}`"))?;
        let pipe = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe for `{command}`"))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let lines = Arc::clone(&stderr);
        // Keeps draining after `ready` so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if has_word(&line, "ready") {
                    let _ = ready_tx.send(());
                }
                if let Ok(mut lines) = lines.lock() {
                    if lines.len() == KEEP_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
        });
        let mut daemon = Self {
            child: Some(child),
            stderr,
            command,
        };
        daemon.wait_ready(&ready_rx)?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, ready: &mpsc::Receiver<()>) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = self.child_mut()?.try_wait()? {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "`{}` exited ({status}) before it reported ready; its stderr:\n{}",
                    self.command,
                    self.stderr_text()
                );
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "`{}` did not report ready within {} s; its stderr:\n{}",
                    self.command,
                    READY_TIMEOUT.as_secs(),
                    self.stderr_text()
                );
            }
        }
    }

    fn child_mut(&mut self) -> Result<&mut Child> {
        self.child
            .as_mut()
            .ok_or_else(|| anyhow!("`{}` was already stopped", self.command))
    }

    fn stderr_text(&self) -> String {
        let lines = self
            .stderr
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        if lines.is_empty() {
            "(empty)".to_owned()
        } else {
            lines
        }
    }

    pub fn memory(&mut self) -> Result<Memory> {
        let pid = self.child_mut()?.id();
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        parse_memory(&status).with_context(|| format!("no VmHWM/VmRSS in {path}"))
    }

    /// SIGTERM, then wait; an error if it has to be killed.
    pub fn stop(mut self) -> Result<()> {
        let command = self.command.clone();
        let child = self.child_mut()?;
        kill_process(Pid::from_child(child), Signal::TERM)
            .with_context(|| format!("SIGTERM `{command}`"))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("warning: `{command}` exited with {status} after SIGTERM");
                }
                self.child = None;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        bail!(
            "`{command}` did not exit within {} s of SIGTERM and was killed; its stderr:\n{}",
            STOP_TIMEOUT.as_secs(),
            self.stderr_text()
        )
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    };
    Some(Memory {
        hwm_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_a_word() {
        assert!(has_word(
            "2026-11-25T10:00:00Z INFO mcp_reaper: ready",
            "ready"
        ));
        assert!(has_word("{\"msg\":\"Ready\",\"source\":\"ebpf\"}", "ready"));
        assert!(!has_word("already running", "ready"));
    }

    #[test]
    fn parses_proc_status() {
        let status = "Name:\tmcp-reaper\nVmPeak:\t  100 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n\
             RssAnon:\t    1024 kB\n";
        let m = parse_memory(status);
        assert!(matches!(
            m,
            Some(Memory {
                hwm_kib: 5120,
                rss_kib: 4096,
                anon_kib: 1024,
            })
        ));
        assert!(parse_memory("Name:\tkthreadd\n").is_none());
    }

    #[test]
    fn start_failure_shows_stderr() {
        let Err(e) = Daemon::start(Path::new("/bin/sh"), &["-c", "echo boom >&2; exit 3"]) else {
            panic!("a daemon that exits must not be ready");
        };
        let msg = format!("{e:#}");
        assert!(
            msg.contains("before it reported ready") && msg.contains("boom"),
            "{msg}"
        );
    }

    #[test]
    fn ready_then_stop() -> Result<()> {
        let daemon = Daemon::start(
            Path::new("/bin/sh"),
            &["-c", "echo starting >&2; echo ready >&2; exec sleep 30"],
        )?;
        daemon.stop()
    }
}
