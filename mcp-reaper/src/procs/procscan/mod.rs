//! Reading /proc.
//!
//! Owns: every read of /proc the agent makes: listing processes, reading one
//! process (stat, status, cmdline, exe), and the cheap identity checks
//! (`read_key`, `is_alive`) everything else uses before trusting a PID. Also
//! owns the hardening against what a process controls in those files: its
//! comm and command line may be any bytes, of any length, with fake `)` and
//! newlines in them.
//!
//! Must never: panic or abandon a whole scan because one process is odd
//! (it is counted in `Snapshot::skipped`); mix files of two processes in one
//! `ProcInfo` (all files of one read go through one handle on
//! `/proc/<pid>`, so a PID reused mid-read fails the read instead);
//! keep an unbounded command line; write anything under /proc.
//!
//! Layout: `info` is what one process looks like, `error` why it could not
//! be read, `parse` the text of its files, `read` one process through one
//! handle, `walk` the whole of /proc, and `display` a command line made
//! safe for a log line. This file only names what the rest of the daemon
//! uses.

mod display;
mod error;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod hostile_tests;
mod info;
mod parse;
mod read;
mod walk;

pub use display::{display_args, display_cmdline};
pub use error::ProcError;
pub use info::{MAX_CMDLINE_BYTES, ProcInfo};
pub use parse::parse_cgroup;
pub use read::{is_alive, read_cgroup, read_key, read_process};
pub use walk::{Snapshot, snapshot};

/// The parsers of one process's files over arbitrary bytes (the fuzz
/// targets' entry): each answers or errs, whatever the input.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_files(data: &[u8]) {
    let _ = parse::parse_stat(data);
    let _ = parse::parse_status(data);
    let (args, _) = parse::parse_cmdline(data, false);
    let kept: usize = args.iter().map(|a| a.len() + 1).sum();
    // Lossy UTF-8 may triple a byte (U+FFFD); the budget is in input bytes.
    assert!(kept <= 3 * MAX_CMDLINE_BYTES + args.len(), "{kept}");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse::parse_pid(text);
        let _ = parse::parse_cgroup(text);
    }
}
