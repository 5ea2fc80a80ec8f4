//! What the eBPF source may write into the kernel's watch map, and what it
//! must tell the tracker when lineage may be incomplete.
//!
//! Owns: the check that a process is alive before its watch entry is
//! written (a pidfd first, then its start time in /proc), the kinds of
//! failure to write one, and turning the kernel's counters into losses and
//! lineage gaps (`KernelSeen`). Must never: touch a map itself (the
//! source does), or report one increase of a counter twice.

use std::{os::fd::OwnedFd, path::Path};

use rustix::{
    event::{PollFd, PollFlags},
    io::Errno,
    process::{Pid, PidfdFlags, pidfd_open},
};

use crate::{
    procs::identity::ProcKey,
    procs::procscan,
    source::event::{GapCause, SourceMsg},
};

/// The kernel's own /proc: watch entries are checked against the running
/// kernel whatever `proc_root` the rest of the agent reads.
const KERNEL_PROC: &str = "/proc";

/// What a request to watch a process did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// The entry is in the kernel's watch map.
    Added,
    /// The process is not alive (any more): nothing was written.
    Gone,
}

/// A watch that could not be written: lineage is incomplete from here on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the watch map is full: pid {0} not watched")]
    Full(u32),
    #[error("watching pid {tgid}: {reason}")]
    Failed { tgid: u32, reason: String },
}

impl WatchError {
    pub fn from_map(tgid: u32, e: &aya::maps::MapError) -> Self {
        match e {
            aya::maps::MapError::SyscallError(aya::sys::SyscallError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                Self::Full(tgid)
            }
            other => Self::Failed {
                tgid,
                reason: other.to_string(),
            },
        }
    }

    /// The lineage gap this failure is.
    pub fn cause(&self) -> GapCause {
        match self {
            Self::Full(_) => GapCause::WatchFull,
            Self::Failed { .. } => GapCause::WatchError,
        }
    }
}

/// Whether the process behind `pidfd` has exited (the pidfd polls
/// readable). A failed poll says no: an entry written for a process that
/// did exit still names it, and the kernel programs ignore it for anyone
/// else.
pub fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

/// A pidfd for `key` when it is alive: opened first, then /proc must show
/// the key's start time (so the pidfd is that process) and no zombie.
/// `Ok(None)`: the process is gone.
pub fn open_if_alive(key: ProcKey) -> Result<Option<OwnedFd>, WatchError> {
    let Some(pid) = i32::try_from(key.tgid).ok().and_then(Pid::from_raw) else {
        return Ok(None);
    };
    let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Ok(None),
        Err(e) => {
            return Err(WatchError::Failed {
                tgid: key.tgid,
                reason: format!("pidfd_open: {e}"),
            });
        }
    };
    Ok(procscan::is_alive(Path::new(KERNEL_PROC), key).then_some(pidfd))
}

/// The kernel's cumulative counters as last reported.
#[derive(Debug, Default)]
pub struct KernelSeen {
    lost: u64,
    read_errors: u64,
    watch_full: u64,
}

impl KernelSeen {
    /// What to tell the tracker about the counters' new values and the
    /// records that failed to decode in this drain: every increase is a
    /// loss or a gap in lineage, reported once.
    pub fn advance(
        &mut self,
        lost: u64,
        read_errors: u64,
        watch_full: u64,
        undecoded: u64,
    ) -> Vec<SourceMsg> {
        let mut out = Vec::new();
        let step = |seen: &mut u64, now: u64| {
            let d = now.saturating_sub(*seen);
            *seen = (*seen).max(now);
            d
        };
        let lost = step(&mut self.lost, lost);
        let read_errors = step(&mut self.read_errors, read_errors);
        let watch_full = step(&mut self.watch_full, watch_full);
        if lost > 0 {
            out.push(SourceMsg::Lost(lost));
        }
        for (cause, n) in [
            (GapCause::KernelReadError, read_errors),
            (GapCause::WatchFull, watch_full),
            (GapCause::DecodeError, undecoded),
        ] {
            if n > 0 {
                out.push(SourceMsg::Gap(cause, n));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn described(msgs: &[SourceMsg]) -> Vec<String> {
        msgs.iter()
            .map(|m| match m {
                SourceMsg::Lost(n) => format!("lost {n}"),
                SourceMsg::Gap(c, n) => format!("{} {n}", c.as_str()),
                SourceMsg::Event(_) => "event".to_owned(),
                SourceMsg::Drained(_) => "drained".to_owned(),
            })
            .collect()
    }

    #[test]
    fn every_counter_increase_is_reported_once() {
        let mut seen = KernelSeen::default();
        // (lost, read errors, watch full, undecoded) -> messages
        type Step = ((u64, u64, u64, u64), &'static [&'static str]);
        let steps: [Step; 5] = [
            ((0, 0, 0, 0), &[]),
            ((2, 0, 0, 0), &["lost 2"]),
            ((2, 1, 3, 0), &["kernel_read_error 1", "watch_full 3"]),
            ((2, 1, 3, 4), &["decode_error 4"]),
            // Per-CPU sums never go down; if one seemed to, nothing is
            // reported and the high mark stays.
            ((1, 1, 3, 0), &[]),
        ];
        for ((lost, read, full, undecoded), want) in steps {
            let got = described(&seen.advance(lost, read, full, undecoded));
            assert_eq!(got, want, "at {lost} {read} {full} {undecoded}");
        }
        assert_eq!(described(&seen.advance(3, 1, 3, 0)), ["lost 1"]);
    }

    #[test]
    fn a_dead_or_absent_process_is_not_opened() {
        // PID 0 is no process; a start time of u64::MAX is nobody's.
        assert!(open_if_alive(ProcKey::new(0, 1)).unwrap().is_none());
        let me = procscan::read_key(Path::new(KERNEL_PROC), std::process::id()).unwrap();
        let mut other = me;
        other.start_ticks = u64::MAX;
        assert!(open_if_alive(other).unwrap().is_none());
        let fd = open_if_alive(me).unwrap().expect("this process is alive");
        assert!(!exited(&fd));
    }

    #[test]
    fn map_full_is_told_apart_from_other_failures() {
        let full = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
        });
        let other = aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(libc::ENOMEM),
        });
        assert_eq!(WatchError::from_map(7, &full).cause(), GapCause::WatchFull);
        assert_eq!(
            WatchError::from_map(7, &other).cause(),
            GapCause::WatchError
        );
    }
}
