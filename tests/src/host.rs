//! A stand-in MCP host for tests: drives `tests/hosts/stdio_host.py`, which
//! starts real stdio MCP servers with `npm exec --offline <pkg>` over
//! socketpair or pipe stdio and performs the MCP `initialize` handshake.
//!
//! Owns: the host process and every server tree it started. Dropping a
//! [`TestHost`] SIGKILLs the trees (deepest members found by /proc lineage
//! first, then the recorded members, then the host) and waits until none is
//! alive, so no test leaves a leak behind. Must never: signal a process that
//! is not one of its own (members are checked by start time).
//!
//! Protocol errors panic with context: these are test helpers.

#![allow(clippy::expect_used)]

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{kill_if_same, start_ticks, wait_until};

/// The MCP server that keeps running after stdin EOF (the real leak).
pub const SERVER_EVERYTHING: &str = "@modelcontextprotocol/server-everything";

/// The `[[host]]` rule that matches [`TestHost`]; its sessions are named by
/// `MCP_TEST_SESSION`.
pub const HOST_RULE: &str = r#"
[[host]]
name = "testhost"
cmdline = '(?:\S*/)?python3 \S*stdio_host\.py(?: .*)?'
session_env = ["MCP_TEST_SESSION"]
"#;

/// [`HOST_RULE`] and an open `[policy]` table with these `grace` and
/// `kill_after` durations; more policy keys may be appended.
pub fn host_config(grace: &str, kill_after: &str) -> String {
    format!("{HOST_RULE}\n[policy]\ngrace = \"{grace}\"\nkill_after = \"{kill_after}\"\n")
}

/// How long to wait for any answer of the host (a spawn's handshake itself
/// times out after 60 s inside the host).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory holding `node_modules` with the test servers:
/// `MCP_REAPER_NPM_DIR`, or `<workspace>/tests/npm`.
pub fn npm_dir() -> PathBuf {
    std::env::var_os("MCP_REAPER_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/npm")))
}

/// Path of the host script.
pub fn host_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/hosts/stdio_host.py"))
}

/// How the host wires a server's stdio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One AF_UNIX stream socketpair per stdio stream (Node/libuv hosts).
    Socket,
    /// Pipes (Python's subprocess).
    Pipe,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::Pipe => "pipe",
        }
    }
}

/// A server session the host started and completed the handshake with.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    /// The tree root: the `npm exec` process (a child of the host).
    pub pid: u32,
    /// The host's end of the server's stdin, as an fd number in the host.
    pub host_stdin_fd: i32,
    /// The host's end of the server's stdout, as an fd number in the host.
    pub host_stdout_fd: i32,
    /// Seconds from spawn to the initialize result, measured by the host.
    pub handshake_s: f64,
}

/// The stand-in host process.
pub struct TestHost {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pid: u32,
    /// Every tree member seen, with its start time, so Drop finds members
    /// even after lineage was broken (host killed, intermediate exited).
    members: HashMap<u32, u64>,
    roots: Vec<u32>,
    reaped: bool,
    /// Started in namespaces of its own: the namespace's PID 1 (a shell
    /// that outlives the host), by PID and start time. PIDs the host
    /// reports are its namespace's and are translated (`NSpid`).
    ns_init: Option<(u32, u64)>,
    /// The host's start time.
    start: u64,
}

impl TestHost {
    /// Starts the host and waits for its ready line. Panics if the npm
    /// packages are not installed.
    pub fn start() -> TestHost {
        Self::start_with(&[])
    }

    /// Starts the host in network, PID and mount namespaces of its own
    /// (`unshare --net --pid --mount --fork --mount-proc`), as a host in a
    /// container: a shell is the namespace's PID 1 and the host its child,
    /// so that killing the host leaves its servers running (reparented to
    /// that shell), as a crashed host in a container does. [`pid`] and the
    /// sessions' PIDs are this test's (translated from the host's own).
    ///
    /// [`pid`]: TestHost::pid
    pub fn start_in_namespaces() -> TestHost {
        Self::start_with(&[
            "unshare",
            "--net",
            "--pid",
            "--mount",
            "--fork",
            "--mount-proc",
            "--",
            "/bin/sh",
            "-c",
            "\"$0\" \"$@\"; while :; do sleep 3600; done",
        ])
    }

    /// Starts `wrapper... python3 <host script>`, and waits for its ready
    /// line.
    fn start_with(wrapper: &[&str]) -> TestHost {
        let npm = npm_dir();
        assert!(
            npm.join("node_modules").is_dir(),
            "{}/node_modules is missing: run `cargo xtask setup --tests` \
             (or `npm install` in that directory), or set MCP_REAPER_NPM_DIR",
            npm.display()
        );
        let mut argv: Vec<std::ffi::OsString> = wrapper.iter().map(Into::into).collect();
        argv.push("python3".into());
        argv.push(host_script().into());
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("MCP_REAPER_NPM_DIR", &npm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("host stdout is piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut host = TestHost {
            pid: child.id(),
            child,
            stdin,
            lines,
            members: HashMap::new(),
            roots: Vec::new(),
            reaped: false,
            ns_init: None,
            start: 0,
        };
        let ready = host.read_answer("ready line");
        assert_eq!(ready["ready"], json!(true), "host ready line: {ready}");
        if wrapper.is_empty() {
            assert_eq!(ready["pid"], json!(host.pid), "host ready line: {ready}");
        } else {
            let inner = ready["pid"].as_u64().expect("ready line has a pid") as u32;
            let outer = host.child.id();
            let under = server_tree_pids(outer);
            let init = under
                .iter()
                .copied()
                .find(|&p| ns_pid(p) == Some(1))
                .unwrap_or_else(|| panic!("no namespace init under {outer}"));
            host.ns_init = Some((init, start_ticks(init).expect("namespace init alive")));
            host.pid = under
                .into_iter()
                .find(|&p| p != init && ns_pid(p) == Some(inner))
                .unwrap_or_else(|| panic!("no host with PID {inner} in its namespace"));
        }
        host.start = start_ticks(host.pid).expect("the host is alive");
        host
    }

    /// This test's PID of a process the host names by `pid` (its own
    /// namespace's, when namespaced): a descendant of the host.
    fn outer_pid(&self, pid: u32) -> u32 {
        if self.ns_init.is_none() {
            return pid;
        }
        server_tree_pids(self.pid)
            .into_iter()
            .find(|&p| ns_pid(p) == Some(pid))
            .unwrap_or_else(|| panic!("no process with PID {pid} in the host's namespace"))
    }

    /// The host's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn read_answer(&mut self, what: &str) -> Value {
        let line = match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("stand-in host: no answer to {what} in {ANSWER_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("stand-in host exited before answering {what}")
            }
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stand-in host: bad answer to {what}: {e}: {line:?}"))
    }

    /// Sends one command and returns its answer, whatever `ok` says.
    pub fn request(&mut self, cmd: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("stand-in host already exited");
        writeln!(stdin, "{cmd}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("stand-in host: send {cmd}: {e}"));
        self.read_answer(&cmd.to_string())
    }

    /// Like `request`, panicking unless the answer says ok.
    fn request_ok(&mut self, cmd: Value) -> Value {
        let answer = self.request(cmd.clone());
        assert_eq!(
            answer["ok"],
            json!(true),
            "stand-in host refused {cmd}: {answer}"
        );
        answer
    }

    /// Starts `server-everything` as session `id` and completes the MCP
    /// handshake. `env` is added to the server's environment.
    pub fn spawn(&mut self, id: &str, transport: Transport, env: &[(&str, &str)]) -> Session {
        self.spawn_package(id, transport, SERVER_EVERYTHING, env)
    }

    /// Starts `package` (installed in [`npm_dir`]) as session `id`.
    pub fn spawn_package(
        &mut self,
        id: &str,
        transport: Transport,
        package: &str,
        env: &[(&str, &str)],
    ) -> Session {
        let env: serde_json::Map<String, Value> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let cmd = json!({
            "cmd": "spawn", "id": id, "transport": transport.as_str(),
            "package": package, "env": env,
        });
        let mut answer = self.request(cmd.clone());
        if let Some(root) = answer["pid"].as_u64() {
            let root = self.outer_pid(root as u32);
            answer["pid"] = json!(root);
            self.remember_tree(root);
        }
        assert_eq!(answer["ok"], json!(true), "spawn failed: {cmd}: {answer}");
        let fd = |name: &str| {
            answer["host_fds"][name]
                .as_i64()
                .unwrap_or_else(|| panic!("spawn answer lacks host_fds.{name}: {answer}"))
                as i32
        };
        Session {
            id: id.to_owned(),
            pid: answer["pid"].as_u64().expect("spawn answer has a pid") as u32,
            host_stdin_fd: fd("stdin"),
            host_stdout_fd: fd("stdout"),
            handshake_s: answer["handshake_s"].as_f64().unwrap_or(f64::NAN),
        }
    }

    /// Records the tree under `root` (called after each spawn; call again
    /// if a test lets a tree grow).
    pub fn remember_tree(&mut self, root: u32) {
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
        for pid in server_tree_pids(root) {
            if let Some(start) = start_ticks(pid) {
                self.members.entry(pid).or_insert(start);
            }
        }
    }

    /// Sends an MCP `tools/list` to the session: true when the server
    /// answered (alive and still owned by this host).
    pub fn ping(&mut self, id: &str) -> bool {
        self.request(json!({"cmd": "ping", "id": id}))["ok"] == json!(true)
    }

    /// Closes every host fd of the session (stdin, stdout, stderr) without
    /// signalling the server. server-everything@2025.4.8 survives this only
    /// until its next log notification (every 15 s), which dies on EPIPE;
    /// use [`TestHost::close_stdin`] for a leak that lasts.
    pub fn close(&mut self, id: &str) {
        self.request_ok(json!({"cmd": "close", "id": id}));
    }

    /// Closes only the host's end of the server's stdin (the spec's first
    /// shutdown step), keeping stdout and stderr: the server sees EOF,
    /// ignores it and runs on indefinitely.
    pub fn close_stdin(&mut self, id: &str) {
        self.close_streams(id, &["stdin"]);
    }

    /// Closes the named host ends (`"stdin"`, `"stdout"`, `"stderr"`).
    pub fn close_streams(&mut self, id: &str, streams: &[&str]) {
        self.request_ok(json!({"cmd": "close", "id": id, "streams": streams}));
    }

    /// shutdown(SHUT_RDWR) on the host's socket ends, keeping them open.
    pub fn shutdown(&mut self, id: &str) {
        self.request_ok(json!({"cmd": "shutdown", "id": id}));
    }

    /// Hands the session's host fds to a helper process (a `sleep` child of
    /// the host that keeps them) and closes the host's own copies. Returns
    /// the helper's PID: the far end is the helper's from now on.
    pub fn handoff(&mut self, id: &str) -> u32 {
        let answer = self.request_ok(json!({"cmd": "handoff", "id": id}));
        answer["helper_pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or_else(|| panic!("handoff of {id}: no helper pid in {answer}"))
    }

    /// Marks the session silent (fds kept, no more traffic).
    pub fn silence(&mut self, id: &str) {
        self.request_ok(json!({"cmd": "silence", "id": id}));
    }

    /// The host's view of every session.
    pub fn list(&mut self) -> Vec<Value> {
        let answer = self.request_ok(json!({"cmd": "list"}));
        answer["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// Asks the host to exit at once, leaving its children alone.
    pub fn exit(&mut self) {
        self.request_ok(json!({"cmd": "exit"}));
        self.stdin = None;
        self.wait_host();
    }

    /// SIGKILLs the host (its trees are left running) and reaps it.
    pub fn kill(&mut self) {
        if !self.reaped {
            // By start time: in namespaces the host is not our child.
            kill_if_same(self.pid, self.start);
        }
        self.stdin = None;
        self.wait_host();
    }

    fn wait_host(&mut self) {
        if self.reaped {
            return;
        }
        if self.ns_init.is_some() {
            // The namespace's init reaps it; the namespace stays for Drop.
            let gone = wait_until(ANSWER_TIMEOUT, || start_ticks(self.pid) != Some(self.start));
            assert!(gone, "the namespaced host {} did not exit", self.pid);
        } else {
            self.child.wait().expect("wait for the stand-in host");
        }
        self.reaped = true;
    }

    /// Every live process this host started: descendants of the host and
    /// of each recorded root, plus recorded members still alive.
    fn all_members(&self) -> HashSet<u32> {
        let mut out = HashSet::new();
        if !self.reaped {
            out.extend(
                server_tree_pids(self.pid)
                    .into_iter()
                    .filter(|&p| p != self.pid),
            );
        }
        for &root in &self.roots {
            if self
                .members
                .get(&root)
                .is_some_and(|&s| start_ticks(root) == Some(s))
            {
                out.extend(server_tree_pids(root));
            }
        }
        for (&pid, &start) in &self.members {
            if start_ticks(pid) == Some(start) {
                out.insert(pid);
            }
        }
        out
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Kill trees before the host so lineage is intact while we walk it;
        // repeat to catch members forked meanwhile.
        let mut killed: HashMap<u32, u64> = HashMap::new();
        for _ in 0..5 {
            let found: Vec<u32> = self
                .all_members()
                .into_iter()
                .filter(|p| !killed.contains_key(p) && is_alive(*p))
                .collect();
            if found.is_empty() {
                break;
            }
            for pid in found {
                if let Some(start) = start_ticks(pid) {
                    kill_if_same(pid, start);
                    killed.insert(pid, start);
                }
            }
        }
        self.stdin = None;
        self.kill();
        let gone = wait_until(Duration::from_secs(10), || {
            killed
                .iter()
                .all(|(&pid, &start)| start_ticks(pid) != Some(start) || !is_alive(pid))
        });
        if let Some((init, start)) = self.ns_init {
            // The namespace's init: with it, the kernel kills whatever is
            // left in the namespace.
            kill_if_same(init, start);
            let _ = self.child.wait();
        }
        if !gone && !std::thread::panicking() {
            panic!("TestHost drop: server processes survived SIGKILL: {killed:?}");
        }
    }
}

/// The PID of `pid` in its innermost PID namespace (the last `NSpid`).
pub fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// `root` followed by all its descendants (breadth-first), by walking the
/// ppid of every process in /proc. Empty if `root` does not exist.
pub fn server_tree_pids(root: u32) -> Vec<u32> {
    if !std::path::Path::new(&format!("/proc/{root}")).exists() {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_field(pid, 1).and_then(|f| f.parse().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            let mut kids = kids.clone();
            kids.sort_unstable();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// Field `n` (0 = state, 1 = ppid, ...) of /proc/PID/stat after the comm.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(n).map(str::to_owned)
}

/// True if the process exists and is not a zombie (PID 1 here may never
/// reap orphans, so an exited orphan can stay a zombie).
pub fn is_alive(pid: u32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// The process's argv, NUL separators turned into spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The process's comm (thread name of the main thread).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// The target of /proc/PID/fd/FD, such as `socket:[123]` or `pipe:[45]`.
pub fn fd_target(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}
