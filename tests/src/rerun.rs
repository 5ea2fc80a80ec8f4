//! Runs one test of the current test binary again in a process of its own,
//! inside a fresh PID namespace with its own /proc, so that a test can
//! check what needs a complete walk of /proc on a machine where some
//! process of the outer namespace (a sandbox's PID 1) cannot be read even
//! by root.
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
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("{test}: cannot name this test binary: {e}"));
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc", "--"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, test)
        .output()
        .unwrap_or_else(|e| panic!("{test}: cannot run unshare: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- inner run of {test} ---\n{stdout}{stderr}--- end of inner run ---");
    assert!(
        out.status.success(),
        "{test}: the run in its own PID namespace failed ({})",
        out.status
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test}: the run in its own PID namespace ran no test"
    );
}
