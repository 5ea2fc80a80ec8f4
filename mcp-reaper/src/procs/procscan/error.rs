//! Why a process could not be read, and the one rule that tells a process
//! that is gone from one that could not be read.
//!
//! Owns: `ProcError` and the mapping of an I/O error to it: ENOENT and
//! ESRCH mean the process is gone (`Vanished`), anything else is `Io`.
//! Must never: call a process gone on any other errno: callers treat
//! `Vanished` as "nothing to see" and every other error as "unknown".

use std::path::PathBuf;

use rustix::io::Errno;

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (and was reaped) before or during the read.
    #[error("pid {pid}: process vanished while reading {}", path.display())]
    Vanished { pid: u32, path: PathBuf },
    /// Any other I/O failure (permissions, hidepid mounts, ...).
    #[error("pid {pid}: cannot read {}: {source}", path.display())]
    Io {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are not what a kernel writes.
    #[error("pid {pid}: malformed {}: {reason}", path.display())]
    Malformed {
        pid: u32,
        path: PathBuf,
        reason: String,
    },
    /// The PID is a thread (task) id, not a thread-group id.
    #[error("pid {pid}: {} belongs to thread {pid} of process {tgid}, not to a process", path.display())]
    Thread { pid: u32, tgid: u32, path: PathBuf },
    /// The /proc directory itself could not be listed.
    #[error("cannot list {}: {source}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ProcError {
    /// The PID the error is about (`None` for a listing failure).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Vanished { pid, .. }
            | Self::Io { pid, .. }
            | Self::Malformed { pid, .. }
            | Self::Thread { pid, .. } => Some(*pid),
            Self::List { .. } => None,
        }
    }

    /// The process is simply gone: the ordinary outcome of a race with its
    /// exit, not a sign of trouble.
    pub fn is_vanished(&self) -> bool {
        matches!(self, Self::Vanished { .. })
    }
}

/// ENOENT and ESRCH mean the process is gone; anything else is an error.
pub(super) fn io_error(pid: u32, path: PathBuf, source: std::io::Error) -> ProcError {
    let errno = source.raw_os_error().map(Errno::from_raw_os_error);
    if errno == Some(Errno::NOENT) || errno == Some(Errno::SRCH) {
        ProcError::Vanished { pid, path }
    } else {
        ProcError::Io { pid, path, source }
    }
}
