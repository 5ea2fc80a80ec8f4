//! Shared helpers for mcp-reaper's integration tests.
//!
//! Owns: the privilege gate every kernel test goes through, and small
//! process utilities. Must never: make a test pass without running it. A
//! test that cannot run prints why; with MCP_REAPER_REQUIRE_PRIVILEGED=1
//! (set by `cargo xtask test` when it runs as root, so in CI) it fails.

pub mod host;
pub mod rerun;
pub mod sdk;
use std::time::{Duration, Instant};

/// True when the test may use BPF and signal other processes. Otherwise
/// prints the reason and returns false (or panics when privileged runs are
/// required).
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let reason = format!("{test}: skipped: needs root (BPF and signals); euid is {euid}");
    if std::env::var_os("MCP_REAPER_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{reason}, but MCP_REAPER_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("{reason}");
    false
}

/// For a test that cannot do its job on this machine (a kernel knob it
/// needs is missing, say): prints why and returns, so the caller returns
/// too, or panics when privileged runs are required (in CI a skip is a
/// failure).
pub fn cannot_run(test: &str, why: &str) {
    let reason = format!("{test}: skipped: {why}");
    if std::env::var_os("MCP_REAPER_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{reason}, but MCP_REAPER_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("{reason}");
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Field 22 of /proc/PID/stat (start time in ticks), if the process exists.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// Starts a process on exactly `pid`, a PID that is free now: before each
/// `spawn`, /proc/sys/kernel/ns_last_pid is set to `pid - 1`, and a child
/// that landed elsewhere (other processes on the machine fork too) is
/// killed and reaped before the next try. Panics when ns_last_pid cannot
/// be written or all `tries` miss: a test that needs a reused PID cannot
/// do its job without one.
pub fn spawn_on_pid(
    pid: u32,
    tries: usize,
    mut spawn: impl FnMut() -> std::process::Child,
) -> std::process::Child {
    assert!(pid > 1, "cannot steer onto pid {pid}");
    for _ in 0..tries {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .unwrap_or_else(|e| panic!("cannot write /proc/sys/kernel/ns_last_pid: {e}"));
        let mut child = spawn();
        if child.id() == pid {
            return child;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("no process landed on pid {pid} in {tries} tries");
}

/// Sends SIGKILL to `pid` if it still has the start time `start`.
pub fn kill_if_same(pid: u32, start: u64) {
    if start_ticks(pid) == Some(start) {
        // SAFETY: plain kill(2); the identity check above narrows the PID
        // reuse window to this cleanup of the test's own processes.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Reads `stream` line by line on a thread of its own, so a test can wait
/// for a line with a timeout instead of hanging on a stuck child.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A connected AF_UNIX stream socketpair; `cloexec` says whether both ends
/// are close-on-exec.
pub fn socketpair(cloexec: bool) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    let mut fds = [0i32; 2];
    let flags = libc::SOCK_STREAM | if cloexec { libc::SOCK_CLOEXEC } else { 0 };
    // SAFETY: socketpair writes two new fds into the array.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    use std::os::fd::FromRawFd;
    // SAFETY: both fds are new and owned by nothing else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// The `[[server]]` rule that matches [`fake_server`]'s trees.
pub const FAKE_SERVER_RULE: &str = r#"
[[server]]
name = "fake"
cmdline = 'bash -c # mcp-fake-server(?s:.*)'
"#;

/// A stand-in server started by the calling test as its host over a
/// socketpair: `bash -c SCRIPT` with a marker that [`FAKE_SERVER_RULE`]
/// classifies as a server. Returns the child and the host's end.
// A test helper: failing to start bash is a failed test, with its reason.
#[allow(clippy::expect_used)]
pub fn fake_server(script: &str) -> (std::process::Child, std::os::fd::OwnedFd) {
    let (ours, theirs) = socketpair(true);
    let theirs_out = theirs.try_clone().expect("dup the server's end");
    let child = std::process::Command::new("bash")
        .args(["-c", &format!("# mcp-fake-server\n{script}")])
        .stdin(std::process::Stdio::from(theirs))
        .stdout(std::process::Stdio::from(theirs_out))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start bash");
    (child, ours)
}
