//! The daemon as a child of the benchmarks and of the soak: started with
//! the command line [`RunArgs`] builds, ready when a line on its stderr
//! contains the word `ready`, measured through /proc/<pid>/status and
//! `/metrics`, stopped with SIGTERM (or, by the soak, killed with SIGKILL).
//! Dropping a [`Daemon`] that was not stopped kills it, so a failed run
//! leaves nothing running.
//!
//! Owns: the daemon's process and what is read from it. Must never: import
//! a benchmark or soak module, or signal any process but its own child.
use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
/// Connect, read and write timeout of a `/metrics` request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A memory reading as `12.3 MiB (12595 kB)`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB ({kib} kB)", kib as f64 / 1024.0)
}

/// `mcp-reaper run` as the benchmarks start it, with its config and its
/// control socket (`c.sock`) in a scratch directory: `run --source SOURCE
/// [EXTRA] --config DIR/CONFIG --listen LISTEN --audit-log AUDIT
/// --control-socket DIR/c.sock`.
pub struct RunArgs<'a> {
    /// A `--source` value.
    pub source: &'a str,
    /// Options right after `--source` (such as `--close-tier on`).
    pub extra: &'a [&'a str],
    pub dir: &'a Path,
    /// The config's file name in `dir`.
    pub config: &'a str,
    /// An address, or `off`.
    pub listen: &'a str,
    /// A path, or `off`.
    pub audit: &'a str,
}

impl<'a> RunArgs<'a> {
    /// `config.toml` in `dir`, no listener, no audit log.
    pub fn new(source: &'a str, dir: &'a Path) -> Self {
        Self {
            source,
            extra: &[],
            dir,
            config: "config.toml",
            listen: "off",
            audit: "off",
        }
    }

    pub fn to_vec(&self) -> Vec<String> {
        let p = |name: &str| self.dir.join(name).display().to_string();
        let mut args = vec!["run".to_owned(), "--source".into(), self.source.into()];
        args.extend(self.extra.iter().map(|a| (*a).to_owned()));
        args.extend([
            "--config".into(),
            p(self.config),
            "--listen".into(),
            self.listen.into(),
            "--audit-log".into(),
            self.audit.into(),
            "--control-socket".into(),
            p("c.sock"),
        ]);
        args
    }

    /// Starts `bin` with these arguments; see [`Daemon::start`].
    pub fn start(&self, bin: &Path) -> Result<Daemon> {
        let args = self.to_vec();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::start(bin, &args)
    }
}

fn has_word(line: &str, word: &str) -> bool {
    line.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

impl Daemon {
    pub fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        Self::start_with_env(bin, args, &[])
    }

    /// [`Daemon::start`] with extra environment variables (the daemon's
    /// fault-injection hooks).
    pub fn start_with_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let command = format!("{} {}", bin.display(), args.join(" "));
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
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

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap, as a crash would end it (the soak's chaos).
    pub fn kill9(mut self) {
        self.kill();
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

/// A free loopback port for `--listen`: bound, read, released.
pub fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    l.local_addr().context("local address")
}

/// One `GET /metrics` over a fresh connection: the body, or an error for
/// anything but a 200.
pub fn get_metrics(addr: SocketAddr) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .context("send GET /metrics")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).context("read the response")?;
    let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in a {}-byte response", resp.len());
    };
    let status = String::from_utf8_lossy(&resp[..split]);
    let first = status.lines().next().unwrap_or_default();
    if first.split_whitespace().nth(1) != Some("200") {
        bail!("GET /metrics answered `{first}`");
    }
    Ok(resp.split_off(split + 4))
}

/// `sum(NAME{state="STATE"})` over the series of a text exposition.
pub fn sum_by_state(text: &str, name: &str, state: &str) -> f64 {
    let label = format!("state=\"{state}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            labels
                .split(',')
                .any(|kv| kv.trim() == label)
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// Polls `/metrics` until at least `want` trees are live; the time it took.
pub fn wait_live_trees(addr: SocketAddr, want: u32, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut seen = 0.0;
    while start.elapsed() < timeout {
        if let Ok(body) = get_metrics(addr) {
            seen = sum_by_state(&String::from_utf8_lossy(&body), "mcp_reaper_trees", "live");
            if seen >= f64::from(want) {
                return Ok(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "the daemon reported {seen} live trees of {want} after {} s",
        timeout.as_secs()
    )
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
    fn sums_live_trees() {
        let text = "# HELP mcp_reaper_trees Trees.\n# TYPE mcp_reaper_trees gauge\n\
                    mcp_reaper_trees{host=\"none\",server=\"none\",state=\"live\"} 0\n\
                    mcp_reaper_trees{host=\"none\",server=\"fake\",state=\"live\"} 998\n\
                    mcp_reaper_trees{host=\"h\",server=\"fake\",state=\"live\"} 2\n\
                    mcp_reaper_trees{host=\"none\",server=\"fake\",state=\"orphaned\"} 7\n\
                    mcp_reaper_trees_reaped_total{state=\"live\"} 5\n";
        assert!((sum_by_state(text, "mcp_reaper_trees", "live") - 1000.0).abs() < f64::EPSILON);
        assert!((sum_by_state(text, "mcp_reaper_trees", "orphaned") - 7.0).abs() < f64::EPSILON);
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
        let pid = daemon
            .child
            .as_ref()
            .map(Child::id)
            .context("a started daemon has a child")?;
        assert!(
            daemon.stderr_text().contains("starting"),
            "{}",
            daemon.stderr_text()
        );
        daemon.stop()?;
        // Stopped and waited for: not even a zombie is left.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the daemon {pid} outlived stop()"
        );
        Ok(())
    }
}
