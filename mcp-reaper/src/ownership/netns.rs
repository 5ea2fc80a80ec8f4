//! Network namespaces for sock_diag: a UNIX socket is described only by
//! the NETLINK_SOCK_DIAG of its own network namespace, so a tree whose
//! stdio socket lives in a container's namespace is asked there.
//!
//! Owns: learning a stdio socket's network namespace (from the socket
//! itself, `SIOCGSKNS` on a `pidfd_getfd` duplicate, which needs
//! CAP_NET_ADMIN; else from the root process, `<proc>/PID/ns/net`), one
//! sock_diag socket per foreign namespace (made by a short-lived thread
//! that joins it with `setns`, which needs CAP_SYS_ADMIN), and the bound on
//! how many are kept and for how long (each one keeps its namespace
//! alive).
//! Must never: answer for a socket from a namespace other than the one
//! learned for it, turn "cannot enter" or "cannot tell" into an answer
//! (each is an error, which the caller makes `unknown`), or move any thread
//! but its own short-lived one into another namespace.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use netlink_sys::Socket;

use super::fdtable;
use super::sockdiag::{self, SockDiagError, UnixSockInfo};
use crate::procs::identity::ProcKey;

/// `SIOCGSKNS` (linux/sockios.h): an fd of a socket's network namespace.
/// `libc::Ioctl` is the request type, which glibc and musl spell differently.
const SIOCGSKNS: libc::Ioctl = 0x894C;

/// How long an unused namespace's sock_diag socket is kept.
const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// Most foreign namespaces kept at once; the least recently used goes.
const MAX_KEPT: usize = 64;

/// A network namespace, as nsfs names it (device and inode of its file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct NetNs {
    pub dev: u64,
    pub ino: u64,
}

impl NetNs {
    fn of(fd: impl AsFd) -> std::io::Result<Self> {
        let st = rustix::fs::fstat(fd)?;
        Ok(Self {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

impl std::fmt::Display for NetNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// Why a socket's namespace could not be asked. Each is `unknown`.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// Neither the socket nor the root process named a namespace.
    #[error("network namespace of the socket unknown: {0}")]
    Unreachable(std::io::Error),
    /// The namespace is known but this process cannot join it (setns needs
    /// CAP_SYS_ADMIN, and the unit's or pod's seccomp must allow setns).
    #[error("cannot enter network namespace {ns}: {source}")]
    NotEnterable {
        ns: NetNs,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    SockDiag(#[from] SockDiagError),
}

impl NetNsError {
    /// The `unknown` reason a verdict carries.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "netns-unreachable",
            Self::NotEnterable { .. } => "netns-not-enterable",
            Self::SockDiag(_) => "sock-diag-failed",
        }
    }
}

/// This process's own network namespace, read once (the daemon never
/// moves its threads; only the short-lived joiner does, and it exits).
pub fn own() -> Option<NetNs> {
    static OWN: OnceLock<Option<NetNs>> = OnceLock::new();
    *OWN.get_or_init(|| {
        let f = std::fs::File::open("/proc/self/ns/net").ok()?;
        NetNs::of(&f).ok()
    })
}

/// The network namespace of `root`'s fd `fd`, which must still be the
/// socket `ino`: from the socket when the kernel lets us ask it, else the
/// root's own namespace. The fd returned refers to the namespace.
pub fn of_socket(
    root: ProcKey,
    fd: u32,
    ino: u64,
    proc_root: &Path,
) -> Result<(NetNs, OwnedFd), NetNsError> {
    if let Some(nsfd) = from_socket(root, fd, ino, proc_root) {
        let ns = NetNs::of(&nsfd).map_err(NetNsError::Unreachable)?;
        return Ok((ns, nsfd));
    }
    let link = proc_root.join(root.tgid.to_string()).join("ns/net");
    let file = std::fs::File::open(&link).map_err(NetNsError::Unreachable)?;
    // Opened after the PID was reused? Then it names another process's
    // namespace: refuse rather than ask the wrong one.
    if fdtable::proc_key(proc_root, root.tgid) != Some(root) {
        return Err(NetNsError::Unreachable(std::io::Error::from_raw_os_error(
            libc::ESRCH,
        )));
    }
    let nsfd = OwnedFd::from(file);
    let ns = NetNs::of(&nsfd).map_err(NetNsError::Unreachable)?;
    Ok((ns, nsfd))
}

/// `SIOCGSKNS` on a duplicate of the root's fd, when it is still socket
/// `ino` of the same process (only where `proc_root` numbers processes as
/// this PID namespace does: pidfds name PIDs of this namespace).
fn from_socket(root: ProcKey, fd: u32, ino: u64, proc_root: &Path) -> Option<OwnedFd> {
    use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
    if !crate::procs::pidns::shows_our_pids(proc_root) {
        return None;
    }
    let pid = Pid::from_raw(i32::try_from(root.tgid).ok()?)?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty()).ok()?;
    if fdtable::proc_key(proc_root, root.tgid) != Some(root) {
        return None;
    }
    let dup = pidfd_getfd(&pidfd, i32::try_from(fd).ok()?, PidfdGetfdFlags::empty()).ok()?;
    if rustix::fs::fstat(&dup).ok()?.st_ino != ino {
        return None;
    }
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd or -1; the
    // duplicate is a socket fd we own for the call.
    let raw = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dup), SIOCGSKNS) };
    // SAFETY: a non-negative result is a fresh fd that nothing else owns.
    (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The network namespace process `pid` is in.
pub fn of_process(pid: u32, proc_root: &Path) -> Result<NetNs, NetNsError> {
    let link = proc_root.join(pid.to_string()).join("ns/net");
    let file = std::fs::File::open(&link).map_err(NetNsError::Unreachable)?;
    NetNs::of(&file).map_err(NetNsError::Unreachable)
}

/// The network namespace of process `pid`, and whether sock_diag can be
/// asked there: at once when it is this process's own (`Ok(true)`), else
/// by making (and dropping) a sock_diag socket inside it (`Ok(false)`).
/// For `doctor`; nothing is kept.
pub fn probe(pid: u32, proc_root: &Path) -> Result<(NetNs, bool), NetNsError> {
    let link = proc_root.join(pid.to_string()).join("ns/net");
    let file = std::fs::File::open(&link).map_err(NetNsError::Unreachable)?;
    let nsfd = OwnedFd::from(file);
    let ns = NetNs::of(&nsfd).map_err(NetNsError::Unreachable)?;
    if own() == Some(ns) {
        return Ok((ns, true));
    }
    open_in(ns, nsfd).map(|_| (ns, false))
}

/// A sock_diag socket made inside `nsfd`'s namespace by a thread that joins
/// it and then exits; the calling thread never moves.
fn open_in(ns: NetNs, nsfd: OwnedFd) -> Result<Socket, NetNsError> {
    let joined = std::thread::Builder::new()
        .name("netns-join".into())
        .spawn(move || -> Result<Socket, NetNsError> {
            rustix::thread::move_into_link_name_space(
                nsfd.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| NetNsError::NotEnterable {
                ns,
                source: e.into(),
            })?;
            Ok(sockdiag::open()?)
        })
        .map_err(|source| NetNsError::NotEnterable { ns, source })?;
    joined.join().unwrap_or_else(|_| {
        Err(NetNsError::NotEnterable {
            ns,
            source: std::io::Error::other("namespace joiner panicked"),
        })
    })
}

struct Kept {
    socket: Socket,
    used: Instant,
    seq: u32,
}

/// The sock_diag sockets of foreign namespaces, by namespace.
static KEPT: Mutex<Option<HashMap<NetNs, Kept>>> = Mutex::new(None);

/// Which kept namespaces to drop before one more is added: those unused
/// for [`IDLE_LIMIT`], then the least recently used until there is room
/// under [`MAX_KEPT`].
fn to_evict(used: &[(NetNs, Instant)], now: Instant) -> Vec<NetNs> {
    let mut live: Vec<(NetNs, Instant)> = Vec::new();
    let mut out = Vec::new();
    for &(ns, at) in used {
        if now.saturating_duration_since(at) >= IDLE_LIMIT {
            out.push(ns);
        } else {
            live.push((ns, at));
        }
    }
    live.sort_by_key(|&(ns, at)| (at, ns));
    let over = (live.len() + 1).saturating_sub(MAX_KEPT);
    out.extend(live.into_iter().take(over).map(|(ns, _)| ns));
    out
}

fn evict(kept: &mut HashMap<NetNs, Kept>, now: Instant) {
    let used: Vec<(NetNs, Instant)> = kept.iter().map(|(ns, k)| (*ns, k.used)).collect();
    for ns in to_evict(&used, now) {
        kept.remove(&ns);
    }
}

/// Drops the sockets of namespaces unused for [`IDLE_LIMIT`] (the daemon's
/// periodic clean-up calls it, so that a gone container's namespace is not
/// kept alive by an idle daemon).
pub fn expire() {
    let mut guard = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kept) = guard.as_mut() {
        let now = Instant::now();
        kept.retain(|_, k| now.saturating_duration_since(k.used) < IDLE_LIMIT);
    }
}

/// How many foreign namespaces have a sock_diag socket kept now.
pub fn kept() -> usize {
    KEPT.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map_or(0, HashMap::len)
}

/// The kernel's record of UNIX socket `ino`, root's fd `fd`, asked in the
/// socket's own network namespace.
pub fn unix_socket(
    root: ProcKey,
    fd: u32,
    ino: u32,
    proc_root: &Path,
) -> Result<Option<UnixSockInfo>, NetNsError> {
    let (ns, nsfd) = of_socket(root, fd, u64::from(ino), proc_root)?;
    if own() == Some(ns) {
        return Ok(sockdiag::unix_socket(ino)?);
    }
    let mut guard = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    let kept = guard.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    if !kept.contains_key(&ns) {
        evict(kept, now);
        let socket = open_in(ns, nsfd)?;
        kept.insert(
            ns,
            Kept {
                socket,
                used: now,
                seq: 0,
            },
        );
    }
    let Some(k) = kept.get_mut(&ns) else {
        return Err(NetNsError::Unreachable(std::io::Error::other(
            "namespace socket lost",
        )));
    };
    k.used = now;
    k.seq = k.seq.wrapping_add(1);
    match sockdiag::unix_socket_on(&k.socket, k.seq, ino) {
        Ok(answer) => Ok(answer),
        Err(e) => {
            // A socket that failed once is not trusted again.
            kept.remove(&ns);
            Err(e.into())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ns(ino: u64) -> NetNs {
        NetNs { dev: 4, ino }
    }

    #[test]
    fn eviction_drops_the_idle_then_the_least_recently_used() {
        let now = Instant::now() + IDLE_LIMIT * 2;
        let old = now - IDLE_LIMIT;
        let recent = now - Duration::from_secs(1);
        // (kept, expected evictions)
        type Kept = Vec<(NetNs, Instant)>;
        let cases: Vec<(Kept, Vec<NetNs>)> = vec![
            (vec![], vec![]),
            (vec![(ns(1), recent)], vec![]),
            (vec![(ns(1), old), (ns(2), recent)], vec![ns(1)]),
        ];
        for (used, want) in cases {
            assert_eq!(to_evict(&used, now), want, "{used:?}");
        }
        // Full: the oldest of the recent ones makes room for one more.
        let full: Vec<(NetNs, Instant)> = (0..MAX_KEPT as u64)
            .map(|i| (ns(i), now - Duration::from_secs(100 - i)))
            .collect();
        assert_eq!(to_evict(&full, now), vec![ns(0)]);
    }

    #[test]
    fn every_failure_is_an_unknown_reason() {
        let io = || std::io::Error::from_raw_os_error(libc::EPERM);
        let cases = [
            (NetNsError::Unreachable(io()), "netns-unreachable"),
            (
                NetNsError::NotEnterable {
                    ns: ns(1),
                    source: io(),
                },
                "netns-not-enterable",
            ),
            (
                NetNsError::SockDiag(SockDiagError::Kernel(-1)),
                "sock-diag-failed",
            ),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason, "{err}");
        }
    }

    /// The daemon's own namespace is read from /proc and is a namespace
    /// file (nsfs): the same as what a child in it reports.
    #[test]
    fn own_namespace_is_this_process_namespace() {
        let own = own().expect("own netns");
        let child = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        assert_eq!(NetNs::of(&child).unwrap(), own);
    }

    /// A socket of this namespace is asked here, through the socket
    /// itself (this test's own process as the root).
    #[test]
    fn a_socket_of_this_namespace_is_asked_here() {
        use std::os::fd::AsRawFd as _;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = rustix::fs::fstat(&a).unwrap().st_ino;
        let me = fdtable::proc_key(Path::new("/proc"), std::process::id()).unwrap();
        let fd = u32::try_from(a.as_raw_fd()).unwrap();
        let (ns, _) = of_socket(me, fd, ino, Path::new("/proc")).unwrap();
        assert_eq!(Some(ns), own());
        let info = unix_socket(me, fd, u32::try_from(ino).unwrap(), Path::new("/proc"))
            .unwrap()
            .expect("sock_diag knows it");
        assert_eq!(u64::from(info.inode), ino);
        assert!(info.peer_inode.is_some());
    }
}
