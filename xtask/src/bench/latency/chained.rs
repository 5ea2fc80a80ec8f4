//! The chained-host variant: this process is an OpenClaw-shaped host
//! (`tests/hosts/chain_host.py`'s relay and anchor roles; this process plays
//! the host role itself). Per session it starts `chain_host.py relay` with
//! stdin/stdout on a socketpair (the top-level socket, whose other end it
//! keeps) and a lineage socketpair end as fd 3; the relay starts
//! `chain_host.py anchor --stuck` (setsid), which starts a fake server. The
//! anchor is `--stuck`: without it, the anchor kills the server itself on
//! upstream EOF and the daemon has nothing to detect. A session ends when
//! this process closes the top-level and lineage sockets: the relay exits,
//! and the daemon detects the server tree as released by its relay.
//! Every relay, anchor and server started here is killed (the relays also
//! waited for) on every exit path.
//!
//! Owns: the chains' processes and sockets. Must never: signal a process
//! it did not start (only the relays' and anchors' process groups).
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rustix::process::{Pid, Signal, kill_process_group};

use super::audit::{TierResult, tier_result, wait_reaped};
use super::tier::{DISCOVERY_TIMEOUT, SETTLE};
use crate::bench::context::Context;
use crate::bench::shared::{BATCH, BATCH_PAUSE, CONFIG, SERVER_SCRIPT, now_us};
use crate::child_daemon::{RunArgs, free_addr, wait_live_trees};
use crate::paths::repo_root;

pub(super) const SOURCE: &str = "ebpf (chained host)";
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The chained config's file name in the scratch directory.
const CONFIG_FILE: &str = "config-chained.toml";
/// Puts the fd named by argv[1] at fd 3 and execs argv[2..].
const LAUNCH: &str = "import os, sys\nn = int(sys.argv[1])\nif n != 3:\n    \
                      os.dup2(n, 3)\n    os.close(n)\nos.execv(sys.argv[2], sys.argv[2:])";

struct Chain {
    relay: Child,
    anchor: Option<u32>,
    root: u32,
    top: Option<UnixStream>,
    lineage: Option<UnixStream>,
}

/// Chains; dropping it closes every socket, kills the anchors' process
/// groups (anchor and server) and the relays, and waits for the relays.
#[derive(Default)]
struct Chains(Vec<Chain>);

impl Drop for Chains {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.top = None;
            c.lineage = None;
            let anchor = c.anchor.or_else(|| children(c.relay.id()).first().copied());
            for pid in [anchor, Some(c.relay.id())].into_iter().flatten() {
                if let Some(pid) = Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
                    let _ = kill_process_group(pid, Signal::KILL);
                }
            }
        }
        for c in &mut self.0 {
            let _ = c.relay.kill();
            let _ = c.relay.wait();
        }
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The interpreter `python3` runs, by its real path.
fn python() -> Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("run python3 (the chained host's relay and anchor are Python)")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || path.is_empty() {
        bail!("python3 did not report its executable");
    }
    Ok(path)
}

/// `s` as a regex matching itself.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The latency config plus a host rule for this process, naming
/// chain_host.py's relay and anchor as relays.
fn chained_config() -> Result<String> {
    let exe = std::fs::read("/proc/self/cmdline").context("read /proc/self/cmdline")?;
    let argv0 =
        String::from_utf8_lossy(exe.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    if argv0.contains('\'') {
        bail!("this program's path {argv0:?} cannot go in a TOML literal string");
    }
    Ok(format!(
        "{CONFIG}\n[[host]]\nname = \"bench\"\ncmdline = '{}(?s: .*)?'\n\
         relays = [ {{ cmdline = '(?:\\S*/)?python3(?:\\.\\d+)? \\S*chain_host\\.py (?:relay|anchor)(?s: .*)?' }} ]\n\
         lineage_fds = [3]\n",
        regex_escape(&argv0)
    ))
}

fn start_chain(py: &str, script: &str, npm_dir: &Path) -> Result<Chain> {
    let (top, theirs) = UnixStream::pair().context("socketpair")?;
    let theirs_out = theirs.try_clone().context("dup socket")?;
    let (lineage, lineage_child) = UnixStream::pair().context("socketpair")?;
    // Inherited across exec (only by this child: it is dropped right after).
    rustix::io::fcntl_setfd(lineage_child.as_fd(), rustix::io::FdFlags::empty())
        .context("clear FD_CLOEXEC")?;
    let lfd = std::os::fd::AsRawFd::as_raw_fd(&lineage_child).to_string();
    let relay = Command::new(py)
        .args([
            "-c",
            LAUNCH,
            &lfd,
            py,
            script,
            "relay",
            "--lineage-fd",
            "3",
            "--",
        ])
        .args([py, script, "anchor", "--lineage-fd", "3", "--stuck", "--"])
        .args(["bash", "-c", SERVER_SCRIPT])
        .env("MCP_REAPER_NPM_DIR", npm_dir)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("start chain_host.py relay")?;
    drop(lineage_child);
    let mut chain = Chain {
        relay,
        anchor: None,
        root: 0,
        top: Some(top),
        lineage: Some(lineage),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        for a in children(chain.relay.id()) {
            chain.anchor = Some(a);
            let kids = children(a);
            let bash = kids.iter().copied().find(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm")).is_ok_and(|c| c.trim() == "bash")
            });
            if let Some(root) = bash {
                chain.root = root;
                return Ok(chain);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Dropped through a one-chain guard, so nothing is left behind.
    drop(Chains(vec![chain]));
    bail!(
        "no fake server under the chain within {} s",
        START_TIMEOUT.as_secs()
    )
}

/// `trees` chained sessions ended `gap` apart.
pub(super) fn run(ctx: &Context, dir: &Path, trees: u32, gap: Duration) -> Result<TierResult> {
    let py = python()?;
    let script = repo_root().join("tests/hosts/chain_host.py");
    if !script.is_file() {
        bail!("{} is missing", script.display());
    }
    let script = script.display().to_string();
    let config = dir.join(CONFIG_FILE);
    std::fs::write(&config, chained_config()?)
        .with_context(|| format!("write {}", config.display()))?;
    let audit = dir.join("audit-chained.jsonl");
    let _ = std::fs::remove_file(&audit);
    let addr = free_addr()?;
    let (listen, audit_arg) = (addr.to_string(), audit.display().to_string());
    let daemon = RunArgs {
        config: CONFIG_FILE,
        listen: &listen,
        audit: &audit_arg,
        ..RunArgs::new("ebpf", dir)
    }
    .start(&ctx.daemon_bin)
    .context("start the daemon (--source ebpf, chained host)")?;
    let mut chains = Chains::default();
    for i in 0..trees {
        chains.0.push(
            start_chain(&py, &script, dir)
                .with_context(|| format!("chain {} of {}", i + 1, trees))?,
        );
        if (i + 1).is_multiple_of(BATCH) {
            std::thread::sleep(BATCH_PAUSE);
        }
    }
    let pids: Vec<u32> = chains.0.iter().map(|c| c.root).collect();
    std::thread::sleep(SETTLE);
    let discovery = SETTLE + wait_live_trees(addr, trees, DISCOVERY_TIMEOUT)?;
    println!(
        "latency ({SOURCE}): {} trees live {:.1} s after the last spawn; ending sessions",
        pids.len(),
        discovery.as_secs_f64()
    );
    let mut closed_us = Vec::with_capacity(pids.len());
    for c in &mut chains.0 {
        let (top, lineage) = (c.top.take(), c.lineage.take());
        let t = now_us();
        drop(top);
        drop(lineage);
        closed_us.push(t);
        std::thread::sleep(gap);
    }
    wait_reaped(&audit, &pids);
    daemon.stop()?;
    drop(chains);
    Ok(tier_result(SOURCE, &audit, &pids, &closed_us, discovery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_paths() {
        assert_eq!(
            regex_escape("/work/main/target/debug/xtask"),
            "/work/main/target/debug/xtask"
        );
        assert_eq!(regex_escape("/a.b/c+d"), "/a\\.b/c\\+d");
    }
}
