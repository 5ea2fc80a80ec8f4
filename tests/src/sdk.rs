//! A real MCP host for tests, written on the official TypeScript SDK:
//! drives `tests/hosts/sdk_host.mjs` (run with the machine's `node`), whose
//! sessions are `StdioClientTransport`s spawning `npm exec --offline <pkg>`
//! and ending with the SDK's own `client.close()`.
//!
//! Owns: the host process and every tree it started. Dropping an
//! [`SdkHost`] SIGKILLs every process it ever saw in its trees (checked by
//! start time), then the host, so no test leaves a leak behind. Must
//! never: signal a process that is not one of its own.

#![allow(clippy::expect_used)]

use std::{
    collections::HashMap,
    io::Write,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    host::{is_alive, npm_dir, server_tree_pids},
    kill_if_same, lines_of, start_ticks, wait_until,
};

/// The `[[host]]` rule matching [`SdkHost`].
pub const SDK_HOST_RULE: &str = r#"
[[host]]
name = "sdk-host"
cmdline = '(?:\S*/)?node \S*/sdk_host\.mjs'
"#;

/// A spawn, a tools/list or a close (the SDK waits up to 4 s per close).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// Path of the host script.
pub fn sdk_host_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/hosts/sdk_host.mjs"))
}

/// The SDK host process.
pub struct SdkHost {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every tree member seen: pid -> start time.
    members: HashMap<u32, u64>,
}

impl SdkHost {
    /// Starts the host and waits for its ready line.
    pub fn start() -> SdkHost {
        let npm = npm_dir();
        assert!(
            npm.join("node_modules/@modelcontextprotocol/sdk").is_dir(),
            "{}/node_modules lacks @modelcontextprotocol/sdk: run `cargo xtask setup --tests`",
            npm.display()
        );
        let mut child = Command::new("node")
            .arg(sdk_host_script())
            .env("MCP_REAPER_NPM_DIR", &npm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start node {}: {e}", sdk_host_script().display()));
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().expect("host stdout is piped"));
        let mut host = SdkHost {
            child,
            stdin,
            lines,
            members: HashMap::new(),
        };
        let ready = host.read_answer("ready line");
        assert_eq!(ready["pid"], json!(host.pid()), "host ready line: {ready}");
        host
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_answer(&mut self, what: &str) -> Value {
        let line = self
            .lines
            .recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|e| panic!("SDK host: no answer to {what}: {e}"));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("SDK host: bad answer to {what}: {e}: {line:?}"))
    }

    /// Sends one command and returns its answer, whatever `ok` says.
    pub fn request(&mut self, cmd: &Value) -> Value {
        let stdin = self.stdin.as_mut().expect("SDK host already stopped");
        writeln!(stdin, "{cmd}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("SDK host: send {cmd}: {e}"));
        self.read_answer(&cmd.to_string())
    }

    /// Starts `package` as session `id` through `npm exec --offline` and
    /// completes the handshake; returns the tree root (the `npm exec` pid).
    pub fn spawn(&mut self, id: &str, package: &str) -> u32 {
        let cmd = json!({"cmd": "spawn", "id": id, "package": package});
        let answer = self.request(&cmd);
        assert_eq!(answer["ok"], json!(true), "spawn failed: {cmd}: {answer}");
        let root = answer["pid"].as_u64().expect("spawn answer has a pid") as u32;
        // npm exec forks sh -c, which forks node: wait until all three run.
        wait_until(Duration::from_secs(30), || {
            server_tree_pids(root).len() >= 3
        });
        self.remember(root);
        root
    }

    /// Records the tree under `root` for the clean-up on drop.
    pub fn remember(&mut self, root: u32) {
        for pid in server_tree_pids(root) {
            if let Some(start) = start_ticks(pid) {
                self.members.entry(pid).or_insert(start);
            }
        }
    }

    /// MCP `tools/list` on the session: true when the server answered.
    pub fn ping(&mut self, id: &str) -> bool {
        self.request(&json!({"cmd": "ping", "id": id}))["ok"] == json!(true)
    }

    /// `client.close()` of every session in `ids` at once; returns when the
    /// SDK's close sequence returned for all.
    pub fn close(&mut self, ids: &[String]) {
        let cmd = json!({"cmd": "close", "ids": ids});
        let answer = self.request(&cmd);
        assert_eq!(answer["ok"], json!(true), "close failed: {cmd}: {answer}");
    }
}

impl Drop for SdkHost {
    fn drop(&mut self) {
        for (&pid, &start) in &self.members {
            kill_if_same(pid, start);
        }
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let members = self.members.clone();
        let gone = wait_until(Duration::from_secs(10), || {
            members
                .iter()
                .all(|(&pid, &start)| start_ticks(pid) != Some(start) || !is_alive(pid))
        });
        if !gone && !std::thread::panicking() {
            panic!("SdkHost drop: tree processes survived SIGKILL: {members:?}");
        }
    }
}
