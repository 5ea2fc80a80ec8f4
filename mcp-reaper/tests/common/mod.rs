//! Shared by the tests that run the real `mcp-reaper` binary.
// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// One daemon-running test at a time in a test binary: two daemons would
/// see (and act on) each other's trees, such as a release one test made
/// while its own daemon is down on purpose. Each such test holds this for
/// its whole run.
static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the one-daemon lock for a test that starts daemons its own way.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_DAEMON
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running daemon, killed and waited for on drop.
pub struct DaemonProcess {
    pub child: Child,
    /// Its control socket.
    pub socket: PathBuf,
    /// Every line it logged (JSON), the `ready` line included; empty for a
    /// daemon whose stderr the caller reads itself.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DaemonProcess {
    /// Waits up to `timeout` for a logged line containing every one of
    /// `parts`; panics naming `what` and the log's tail if none came.
    pub fn wait_log(&self, what: &str, timeout: Duration, parts: &[&str]) {
        let found = mcp_reaper_tests::wait_until(timeout, || self.logged(parts));
        if !found {
            let log = self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let tail = log[log.len().saturating_sub(20)..].join("\n");
            panic!(
                "waited {timeout:?} for the daemon to log {what} ({parts:?}); its last lines:\n{tail}"
            );
        }
    }

    /// Whether some logged line contains every one of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `mcp-reaper run --source ebpf` with `config`, its control socket
/// next to the config file and no metrics endpoint, and waits for `ready`.
// The returned value kills and waits for the daemon when dropped.
#[allow(clippy::zombie_processes)]
pub fn start_daemon(config: &Path) -> DaemonProcess {
    start_daemon_with(config, &[], &[])
}

/// As [`start_daemon`], with more arguments and environment variables. The
/// state directory is next to the config file unless `args` names one.
#[allow(clippy::zombie_processes)]
pub fn start_daemon_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> DaemonProcess {
    let socket = config.with_file_name("control.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"));
    // Its own process group, as under a service manager: its death must not
    // orphan the test's group, or the kernel would SIGHUP and SIGCONT every
    // stopped process in it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.args(["run", "--source", "ebpf", "--log-format", "json"])
        .args(["--listen", "off", "--control-socket"])
        .arg(&socket)
        .arg("--config")
        .arg(config);
    if !args.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(config.with_file_name("state"));
    }
    let mut child = cmd
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let rx = mcp_reaper_tests::lines_of(child.stderr.take().expect("stderr"));
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = |l: String| {
        if std::env::var_os("MCP_REAPER_TEST_DAEMON_LOG").is_some() {
            eprintln!("daemon: {l}");
        }
        log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(l);
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("daemon logs ready");
        let ready = line.contains("\"ready\"");
        keep(line);
        if ready {
            // Keep draining (and keeping) in the background.
            let log2 = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                while let Ok(l) = rx.recv() {
                    if std::env::var_os("MCP_REAPER_TEST_DAEMON_LOG").is_some() {
                        eprintln!("daemon: {l}");
                    }
                    log2.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(l);
                }
            });
            return DaemonProcess { child, socket, log };
        }
    }
}

/// A fresh directory holding `config.toml` with `toml`; the daemon's
/// control socket and state directory go next to it. Keep the directory
/// alive for the test's length.
pub fn config_dir(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, toml).expect("write config.toml");
    (dir, config)
}
