//! AF_UNIX socket state from the kernel, over NETLINK_SOCK_DIAG.
//!
//! Owns: the netlink conversation (one exact-inode request, or one dump of
//! every UNIX socket in this network namespace) and its translation into
//! `UnixSockInfo`. Message layout and attribute parsing come from
//! `netlink-packet-sock-diag`; the socket from `netlink-sys`. Must never:
//! report a peer or shutdown state it did not read from the kernel, or treat
//! /proc/net/unix as a substitute (it keeps saying "connected", St 03, after
//! the far end of a socketpair is released).
//!
//! Kernel facts relied on (checked by the tests on 6.18):
//! - UNIX_DIAG_SHUTDOWN is sent for every socket, unrequested.
//! - An exact request (no NLM_F_DUMP, `udiag_ino` set) needs the cookie to
//!   be all ones (`INET_DIAG_NOCOOKIE`) or the socket's own cookie; an
//!   unknown inode answers ENOENT.
//! - When the last file of a stream socket's far end is closed, the kernel
//!   orphans that end (its inode reads 0) and sets the survivor's shutdown to
//!   SHUTDOWN_MASK (3): the survivor's record shows peer 0, shutdown 3. A
//!   `shutdown(SHUT_RDWR)` by the far end also gives shutdown 3, but the
//!   peer inode stays set.
//! - Only sockets of the caller's network namespace are visible.

use std::collections::HashMap;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    unix::{ShowFlags, StateFlags, UnixRequest, UnixResponse, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// Both directions shut: what the kernel sets on the survivor when the far
/// end of a stream socket is released (RCV_SHUTDOWN | SEND_SHUTDOWN).
pub const SHUTDOWN_BOTH: u8 = 3;

/// All ones: "no cookie" (INET_DIAG_NOCOOKIE), which the kernel's exact
/// lookup accepts for any socket; any other value must be the socket's
/// own cookie or the kernel answers ESTALE.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// Receive buffer: a dump message batch never exceeds 32 KiB of skb data.
const RECV_BUF: usize = 64 * 1024;

/// The socket type of a UNIX socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnixKind {
    Stream,
    Dgram,
    Seqpacket,
    Other(u8),
}

impl UnixKind {
    fn from_raw(kind: u8) -> Self {
        match i32::from(kind) {
            libc::SOCK_STREAM => Self::Stream,
            libc::SOCK_DGRAM => Self::Dgram,
            libc::SOCK_SEQPACKET => Self::Seqpacket,
            _ => Self::Other(kind),
        }
    }
}

/// One UNIX socket as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnixSockInfo {
    pub inode: u32,
    /// The far end's inode; `None` when the kernel reports none or 0 (the
    /// far end was released, or the socket was never connected).
    pub peer_inode: Option<u32>,
    /// TCP-style state number (1 = established, 7 = close, 10 = listen).
    pub state: u8,
    /// Bit 1: RCV_SHUTDOWN, bit 2: SEND_SHUTDOWN.
    pub shutdown: u8,
    pub kind: UnixKind,
    /// Bytes queued for reading (pending connections for a listener).
    pub rqueue: u32,
    /// Bytes sent and not yet read by the far end (backlog for a listener).
    pub wqueue: u32,
}

impl UnixSockInfo {
    /// The far end is gone: no peer inode and both directions shut. This is
    /// the kernel's own record of a release, not a heuristic.
    pub fn peer_released(&self) -> bool {
        self.peer_inode.is_none() && self.shutdown == SHUTDOWN_BOTH
    }

    fn from_response(r: &UnixResponse) -> Self {
        let mut info = Self {
            inode: r.header.inode,
            peer_inode: None,
            state: r.header.state,
            shutdown: 0,
            kind: UnixKind::from_raw(r.header.kind),
            rqueue: 0,
            wqueue: 0,
        };
        for nla in &r.nlas {
            match nla {
                Nla::Peer(p) => info.peer_inode = (*p != 0).then_some(*p),
                Nla::Shutdown(s) => info.shutdown = *s,
                Nla::ReceiveQueueLength(rq, wq) => {
                    info.rqueue = *rq;
                    info.wqueue = *wq;
                }
                _ => {}
            }
        }
        info
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("sock_diag socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("sock_diag send: {0}")]
    Send(#[source] std::io::Error),
    #[error("sock_diag recv: {0}")]
    Recv(#[source] std::io::Error),
    #[error("sock_diag: kernel answered error {0}")]
    Kernel(i32),
    #[error("sock_diag: malformed reply: {0}")]
    Decode(String),
}

fn show_flags() -> ShowFlags {
    ShowFlags::PEER | ShowFlags::RQLEN
}

/// A sock_diag socket of the calling thread's network namespace, which
/// it keeps for its life whatever namespace the thread moves to later.
pub(crate) fn open() -> Result<Socket, SockDiagError> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::Socket)?;
    sock.bind_auto().map_err(SockDiagError::Socket)?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(SockDiagError::Socket)?;
    Ok(sock)
}

fn request(inode: u32, dump: bool, cookie: [u8; 8], seq: u32) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    hdr.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        hdr,
        SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: StateFlags::all(),
            inode,
            show_flags: show_flags(),
            cookie,
        })
        .into(),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Sends one request numbered `seq` on `sock` and feeds every UNIX record
/// of the reply to `each`; messages of other numbers (left over on a
/// reused socket) are skipped. Returns Ok(false) when the kernel answered
/// ENOENT (no such socket).
fn converse(
    sock: &Socket,
    seq: u32,
    inode: u32,
    dump: bool,
    cookie: [u8; 8],
    mut each: impl FnMut(UnixSockInfo),
) -> Result<bool, SockDiagError> {
    let req = request(inode, dump, cookie, seq);
    sock.send(&req, 0).map_err(SockDiagError::Send)?;
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
    loop {
        buf.clear();
        let n = sock.recv(&mut buf, 0).map_err(SockDiagError::Recv)?;
        if n > buf.len() {
            return Err(SockDiagError::Decode(format!(
                "datagram of {n} bytes truncated to {}",
                buf.len()
            )));
        }
        if let Some(found) = read_datagram(&buf, seq, dump, &mut each)? {
            return Ok(found);
        }
    }
}

/// One datagram of replies: each UNIX socket record of conversation `seq`
/// goes to `each`. `Some(found)` when the conversation is over (`found`:
/// the exact lookup answered, or the dump ended), `None` when more
/// datagrams follow. A malformed message is an error, never a record.
pub(crate) fn read_datagram(
    buf: &[u8],
    seq: u32,
    dump: bool,
    each: &mut impl FnMut(UnixSockInfo),
) -> Result<Option<bool>, SockDiagError> {
    let mut off = 0;
    while off < buf.len() {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[off..])
            .map_err(|e| SockDiagError::Decode(e.to_string()))?;
        let len = msg.header.length as usize;
        let ours = msg.header.sequence_number == seq;
        match msg.payload {
            _ if !ours => {}
            NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                each(UnixSockInfo::from_response(&r));
                if !dump {
                    return Ok(Some(true));
                }
            }
            NetlinkPayload::Done(_) => return Ok(Some(true)),
            NetlinkPayload::Error(e) => match e.code {
                None => return Ok(Some(true)),
                Some(c) if c.get() == -libc::ENOENT => return Ok(Some(false)),
                Some(c) => return Err(SockDiagError::Kernel(c.get())),
            },
            _ => {}
        }
        if len == 0 {
            break;
        }
        // Netlink messages are 4-byte aligned.
        off += (len + 3) & !3;
    }
    Ok(None)
}

/// The kernel's record of one UNIX socket by inode (exact lookup, no
/// dump). `Ok(None)`: no UNIX socket with that inode in this network
/// namespace (gone, another family, or another namespace).
pub fn unix_socket(inode: u32) -> Result<Option<UnixSockInfo>, SockDiagError> {
    unix_socket_on(&open()?, 1, inode)
}

/// As [`unix_socket`], on `sock` (whose network namespace is the one
/// asked), with request number `seq`.
pub(crate) fn unix_socket_on(
    sock: &Socket,
    seq: u32,
    inode: u32,
) -> Result<Option<UnixSockInfo>, SockDiagError> {
    if inode == 0 {
        return Ok(None);
    }
    let mut found = None;
    let exists = converse(sock, seq, inode, false, NO_COOKIE, |info| {
        if info.inode == inode {
            found = Some(info);
        }
    })?;
    Ok(if exists { found } else { None })
}

/// Every UNIX socket of this network namespace, by inode, in one dump.
pub fn unix_sockets_dump() -> Result<HashMap<u32, UnixSockInfo>, SockDiagError> {
    let mut all = HashMap::new();
    converse(&open()?, 1, 0, true, NO_COOKIE, |info| {
        all.insert(info.inode, info);
    })?;
    Ok(all)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    fn pair(kind: libc::c_int) -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two fds into the array we own.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                kind | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
        // SAFETY: both fds are fresh and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn ino(fd: &impl AsFd) -> u32 {
        let st = rustix::fs::fstat(fd).expect("fstat");
        u32::try_from(st.st_ino).expect("socket inode fits u32")
    }

    #[test]
    fn exact_lookup_sees_connected_pair() {
        let (a, b) = pair(libc::SOCK_STREAM);
        let info = unix_socket(ino(&a)).expect("sock_diag").expect("present");
        assert_eq!(info.inode, ino(&a));
        assert_eq!(info.peer_inode, Some(ino(&b)));
        assert_eq!(info.shutdown, 0);
        assert_eq!(info.kind, UnixKind::Stream);
        assert!(!info.peer_released());
    }

    #[test]
    fn rqueue_counts_unread_bytes() {
        let (a, b) = pair(libc::SOCK_STREAM);
        rustix::io::write(&a, b"hello").expect("write");
        let info = unix_socket(ino(&b)).expect("sock_diag").expect("present");
        assert_eq!(info.rqueue, 5);
    }

    #[test]
    fn closing_far_end_gives_peer_zero_and_shutdown_three() {
        let (a, b) = pair(libc::SOCK_STREAM);
        let a_ino = ino(&a);
        drop(b);
        let info = unix_socket(a_ino).expect("sock_diag").expect("present");
        assert_eq!(info.peer_inode, None);
        assert_eq!(info.shutdown, SHUTDOWN_BOTH);
        assert!(info.peer_released());
    }

    #[test]
    fn shutdown_without_close_keeps_peer() {
        let (a, b) = pair(libc::SOCK_STREAM);
        // SAFETY: plain shutdown(2) on a valid fd.
        assert_eq!(unsafe { libc::shutdown(b.as_raw_fd(), libc::SHUT_RDWR) }, 0);
        let info = unix_socket(ino(&a)).expect("sock_diag").expect("present");
        assert_eq!(info.shutdown, SHUTDOWN_BOTH);
        assert_eq!(info.peer_inode, Some(ino(&b)));
        assert!(!info.peer_released());
    }

    #[test]
    fn dump_contains_both_ends_with_same_facts_as_exact() {
        let (a, b) = pair(libc::SOCK_SEQPACKET);
        let all = unix_sockets_dump().expect("dump");
        let ia = all.get(&ino(&a)).expect("a in dump");
        assert_eq!(ia.peer_inode, Some(ino(&b)));
        assert_eq!(ia.kind, UnixKind::Seqpacket);
        assert_eq!(Some(ia), unix_socket(ino(&a)).expect("exact").as_ref());
        assert!(all.contains_key(&ino(&b)));
    }

    #[test]
    fn unknown_inode_is_none() {
        let (a, b) = pair(libc::SOCK_STREAM);
        let gone = ino(&a);
        drop((a, b));
        assert_eq!(unix_socket(gone).expect("sock_diag"), None);
        assert_eq!(unix_socket(0).expect("sock_diag"), None);
    }

    #[test]
    fn exact_lookup_needs_no_cookie_or_the_right_one() {
        let (a, _b) = pair(libc::SOCK_STREAM);
        let mut cookie = None;
        converse(&open().unwrap(), 1, ino(&a), false, NO_COOKIE, |_| {})
            .expect("no cookie accepted");
        // A zero cookie is a wrong cookie, not a wildcard.
        match converse(&open().unwrap(), 1, ino(&a), false, [0; 8], |_| {}) {
            Err(SockDiagError::Kernel(e)) => assert_eq!(e, -libc::ESTALE),
            other => panic!("zero cookie: {other:?}"),
        }
        // The dump reports the cookie; the exact lookup accepts it back.
        let sock = open().expect("open");
        sock.send(&request(0, true, NO_COOKIE, 1), 0).expect("send");
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
        'recv: loop {
            buf.clear();
            sock.recv(&mut buf, 0).expect("recv");
            let mut off = 0;
            while off < buf.len() {
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[off..]).expect("msg");
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r))
                        if r.header.inode == ino(&a) =>
                    {
                        cookie = Some(r.header.cookie);
                    }
                    NetlinkPayload::Done(_) => break 'recv,
                    _ => {}
                }
                off += (msg.header.length as usize + 3) & !3;
            }
        }
        let cookie = cookie.expect("socket in dump");
        let mut seen = false;
        assert!(
            converse(&open().unwrap(), 1, ino(&a), false, cookie, |_| seen = true)
                .expect("own cookie")
        );
        assert!(seen);
    }

    #[test]
    fn dgram_pair_release_sets_no_shutdown() {
        let (a, b) = pair(libc::SOCK_DGRAM);
        drop(b);
        let info = unix_socket(ino(&a)).expect("sock_diag").expect("present");
        assert_eq!(info.kind, UnixKind::Dgram);
        assert_eq!((info.peer_inode, info.shutdown), (None, 0));
    }
}
