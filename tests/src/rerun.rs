//! Runs one test of the current test binary again in a process of its own:
//! inside a fresh PID namespace with its own /proc, so that a test can
//! check what needs a complete walk of /proc on a machine where some
//! process of the outer namespace (a sandbox's PID 1) cannot be read even
//! by root; or as an unprivileged user (with chosen groups), so that a test
//! can see what a client without root, or in a given group, gets.
//!
//! Owns: the inner run's command line and its verdict. Must never: count an
//! inner run that ran no test as passed (libtest exits 0 when its filter
//! matches nothing, so the summary line is checked too).

use std::process::Command;

/// Set, to the test's name, in the environment of the inner run.
const INNER: &str = "MCP_REAPER_TEST_INNER";

/// Whether this process is the inner run of `test`.
pub fn is_inner(test: &str) -> bool {
    std::env::var(INNER).is_ok_and(|v| v == test)
}

/// Runs `test` of this test binary alone, as root, in new PID and mount
/// namespaces with /proc mounted for them (`unshare --pid --fork --mount
/// --mount-proc`), and panics with its output unless it ran and passed.
pub fn in_own_pid_namespace(test: &str) {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount", "--mount-proc", "--"])
        .arg(this_binary(test));
    run(test, cmd, "in its own PID namespace");
}

/// Runs `test` of this test binary alone as uid and gid 65534 (nobody, no
/// supplementary groups, no capabilities), with `env` added, and panics
/// with its output unless it ran and passed.
pub fn as_nobody(test: &str, env: &[(&str, &str)]) {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(this_binary(test));
    cmd.uid(65534).gid(65534).envs(env.iter().copied());
    run(test, cmd, "as uid 65534");
}

/// Runs `test` of this test binary alone as `uid` and `gid` with exactly
/// the supplementary `groups` (and no capabilities), with `env` added, and
/// panics with its output unless it ran and passed.
pub fn as_user(test: &str, uid: u32, gid: u32, groups: &[u32], env: &[(&str, &str)]) {
    use std::os::unix::process::CommandExt as _;
    let how = format!("as uid {uid} gid {gid} groups {groups:?}");
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = Command::new(this_binary(test));
    cmd.envs(env.iter().copied());
    // Not `Command::uid`/`gid`: std drops the supplementary groups with
    // them, after which they can no longer be set. All three here, in order.
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run(test, cmd, &how);
}

fn this_binary(test: &str) -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|e| panic!("{test}: cannot name this test binary: {e}"))
}

fn run(test: &str, mut cmd: Command, how: &str) {
    let out = cmd
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, test)
        .output()
        .unwrap_or_else(|e| panic!("{test}: cannot start the run {how}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- inner run of {test} ---\n{stdout}{stderr}--- end of inner run ---");
    assert!(
        out.status.success(),
        "{test}: the run {how} failed ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test}: the run {how} ran no test"
    );
}
