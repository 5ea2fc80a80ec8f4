//! Shared by the tests that run the real `mcp-reaper` binary.
// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running daemon, killed and waited for on drop.
pub struct DaemonProcess {
    pub child: Child,
    /// Its control socket.
    pub socket: PathBuf,
}

impl DaemonProcess {
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
    let socket = config.with_file_name("control.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["run", "--source", "ebpf", "--log-format", "json"])
        .args(["--listen", "off", "--control-socket"])
        .arg(&socket)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let rx = mcp_reaper_tests::lines_of(child.stderr.take().expect("stderr"));
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("daemon logs ready");
        if line.contains("\"ready\"") {
            // Keep draining in the background.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return DaemonProcess { child, socket };
        }
    }
}
