//! Who sent a control request: the peer's PID from its credentials
//! (SO_PEERCRED) and, where the kernel gives one (Linux 6.5+), a pidfd of
//! the peer (SO_PEERPIDFD), which tells whether that PID still names the
//! sender.
//!
//! Owns: reading both from a connected socket, the peer's supplementary
//! groups (SO_PEERGROUPS, for the read group), and the liveness check.
//! Must never: signal the peer, or claim a PID still names the sender when
//! it cannot tell (`still_running` is `None` then).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::Arc;

/// `SO_PEERPIDFD` (asm-generic/socket.h, as on x86_64 and arm64): a pidfd
/// of the process that connected.
const SO_PEERPIDFD: libc::c_int = 77;
/// `SO_PEERGROUPS` (asm-generic/socket.h, Linux 4.13+): the supplementary
/// groups of the process that connected, as they were at connect time.
const SO_PEERGROUPS: libc::c_int = 59;
/// Supplementary groups a process can have (NGROUPS_MAX).
const MAX_GROUPS: usize = 65_536;

/// Who sent a request.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The sender's PID in the daemon's PID namespace (the kernel
    /// translates it); `None` when the kernel could not name one. A PID in
    /// a request is in the sender's namespace, which may differ.
    pub pid: Option<u32>,
    /// A pidfd of the sender, when the kernel supports SO_PEERPIDFD.
    pidfd: Option<Arc<OwnedFd>>,
}

impl Peer {
    /// The peer of the connected socket `fd`, with the PID `pid` its
    /// credentials gave.
    pub fn of_socket(fd: RawFd, pid: Option<i32>) -> Self {
        Self {
            pid: pid.and_then(|p| u32::try_from(p).ok()).filter(|&p| p > 0),
            pidfd: peer_pidfd(fd).map(Arc::new),
        }
    }

    /// Whether `pid` still names the sender, which has not exited: then
    /// nothing else can hold that PID. `None` when the kernel gave no
    /// pidfd, or its state cannot be read.
    pub fn still_running(&self) -> Option<bool> {
        let fd = self.pidfd.as_ref()?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
        // `Pid:` is the pidfd's process in our namespace, -1 once it exited.
        let pid: i64 = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse()
            .ok()?;
        Some(self.pid.is_some_and(|p| i64::from(p) == pid))
    }
}

/// The supplementary groups of the peer of the connected socket `fd`;
/// `None` when the kernel cannot tell (before 4.13).
pub fn peer_groups(fd: RawFd) -> Option<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let bytes = groups.len() * std::mem::size_of::<libc::gid_t>();
        let mut len = libc::socklen_t::try_from(bytes).ok()?;
        // SAFETY: getsockopt writes at most `len` bytes into `groups`, a
        // buffer of that size we own; `fd` is open for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let n = usize::try_from(len).ok()? / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n.min(groups.len()));
            return Some(groups);
        }
        // ERANGE: `len` now says how much room the list needs.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE)
            || n <= groups.len()
            || n > MAX_GROUPS
        {
            return None;
        }
        groups.resize(n, 0);
    }
}

fn peer_pidfd(fd: RawFd) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into `pidfd`, an int we
    // own; `fd` is a socket the caller holds open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut pidfd).cast(),
            &raw mut len,
        )
    };
    // SAFETY: on success the kernel installed a new pidfd nothing else owns.
    (rc == 0 && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_sender_that_exited_no_longer_owns_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();

        // Ourselves: running.
        let _me = UnixStream::connect(&path).unwrap();
        let (ours, _) = listener.accept().unwrap();
        let cred_pid = Some(i32::try_from(std::process::id()).unwrap());
        let peer = Peer::of_socket(ours.as_raw_fd(), cred_pid);
        assert_eq!(peer.pid, Some(std::process::id()));
        assert_eq!(peer.still_running(), Some(true));

        // A child that connects and exits: its PID names nobody now.
        let script = format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?})",
            path.display().to_string()
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let child_pid = i32::try_from(child.id()).unwrap();
        let peer = Peer::of_socket(theirs.as_raw_fd(), Some(child_pid));
        child.wait().unwrap();
        assert_eq!(peer.still_running(), Some(false));

        // No pidfd (an old kernel): cannot tell.
        let blind = Peer {
            pid: Some(1),
            pidfd: None,
        };
        assert_eq!(blind.still_running(), None);
    }
}
