//! What one process looks like once read: `ProcInfo`, and what its
//! fields may hold.
//!
//! Owns: the fields the daemon keeps of a process, the command-line budget
//! they are held to, which stat states mean "exited", and their JSON form.
//! Must never: read /proc (that is `read`'s), or serialize in a way that
//! fails on what a process chose (a non-UTF-8 executable path).

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use crate::procs::identity::ProcKey;

/// Most bytes of a command line kept (arguments plus their NUL separators).
/// A command line can be 2 MiB; beyond this the rest is dropped and
/// `ProcInfo::cmdline_truncated` is set.
pub const MAX_CMDLINE_BYTES: usize = 4096;

/// One process as /proc showed it.
#[derive(Clone, Debug, Serialize)]
pub struct ProcInfo {
    /// (tgid, start time): field 1 and field 22 (`starttime`) of stat.
    pub key: ProcKey,
    /// Current parent (after any reparenting); 0 for PID 1 and kthreadd.
    pub ppid: u32,
    pub pgid: i32,
    pub sid: i32,
    /// Real uid (first field of `Uid:` in status).
    pub uid: u32,
    /// Stat state letter: R, S, D, Z (zombie: exited, not yet reaped), ...
    pub state: char,
    /// The kernel's comm, as the process set it (may hold any character).
    pub comm: String,
    /// Arguments, lossily converted to UTF-8, at most `MAX_CMDLINE_BYTES`
    /// in total. Empty for kernel threads and zombies. May hold control
    /// characters: log it through `display_cmdline`.
    pub cmdline: Vec<String>,
    /// The command line was longer than `MAX_CMDLINE_BYTES`.
    pub cmdline_truncated: bool,
    /// Target of the `exe` link; `None` when unreadable (another user's
    /// process without privileges, kernel threads, zombies).
    #[serde(serialize_with = "serialize_lossy_path")]
    pub exe: Option<PathBuf>,
    /// Resident set size (`VmRSS`); 0 when the kernel reports none.
    pub rss_bytes: u64,
    /// The PID inside the process's own PID namespace (a container's),
    /// when it differs from `key.tgid` (`NSpid` in status).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
}

impl ProcInfo {
    /// Exited but not yet reaped by its parent (or being torn down).
    pub fn is_zombie(&self) -> bool {
        is_dead_state(self.state)
    }
}

pub(super) fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

fn serialize_lossy_path<S: Serializer>(path: &Option<PathBuf>, ser: S) -> Result<S::Ok, S::Error> {
    // serde's own PathBuf impl fails on non-UTF-8 paths, which a process
    // can choose for its executable.
    match path {
        Some(p) => ser.serialize_some(&p.to_string_lossy()),
        None => ser.serialize_none(),
    }
}
