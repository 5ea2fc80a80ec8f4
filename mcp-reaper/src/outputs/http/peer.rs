//! Who is at the other end of an accepted connection, as the per-client
//! limit counts clients.
//!
//! Every local client connects from the same address (127.0.0.1 on the
//! default listener), so an address cannot tell a local Prometheus from
//! another local user's process. A client on this machine is known by the
//! user owning its socket instead: the kernel's exact sock_diag lookup of
//! the peer's TCP socket finds it only when it lives in this network
//! namespace, and reports its owner. A remote client is known by its
//! address.
//!
//! Owns: the lookup (one netlink request and reply, never waiting) and the
//! `Client` key.
//! Must never: refuse or delay a connection because the lookup failed (a
//! failure falls back to the address), or read /proc/net/tcp (a walk of
//! every socket for each connection).

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

/// A client as the per-client connection limit counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Client {
    /// A process on this machine, by the user owning its socket.
    User(u32),
    /// A remote client (or one the lookup could not place), by address.
    Address(IpAddr),
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(uid) => write!(f, "local uid {uid}"),
            Self::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// The client of a connection from `peer` accepted on `local`.
pub(super) fn client_of(peer: SocketAddr, local: SocketAddr) -> Client {
    classify(peer, local_socket_owner(peer, local))
}

/// `owner` is the uid found for the peer's socket on this machine.
pub(super) fn classify(peer: SocketAddr, owner: Option<u32>) -> Client {
    match owner {
        Some(uid) => Client::User(uid),
        None => Client::Address(peer.ip().to_canonical()),
    }
}

/// The owner of the peer's socket when that socket is on this machine (in
/// this network namespace): the TCP socket whose own end is `peer` and
/// whose far end is `local`. `None` for a remote peer, a peer already
/// gone, or any failure of the lookup.
pub(super) fn local_socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let (src, dst) = match (peer.ip().to_canonical(), local.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(v6(s)), IpAddr::V6(v6(d))),
    };
    let family = if src.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let mut id = if src.is_ipv4() {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    id.source_address = src;
    id.source_port = peer.port();
    id.destination_address = dst;
    id.destination_port = local.port();
    // All ones: no cookie (INET_DIAG_NOCOOKIE), which an exact lookup needs.
    id.cookie = [0xff; 8];
    let request = InetRequest {
        family: u8::try_from(family).ok()?,
        protocol: u8::try_from(libc::IPPROTO_TCP).ok()?,
        extensions: ExtensionFlags::empty(),
        states: StateFlags::all(),
        socket_id: id,
    };
    converse(request)
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Sends the exact request and reads the reply. The kernel answers an
/// exact sock_diag request before `send` returns, so the socket is
/// non-blocking: no reply is a failure, never a wait.
fn converse(request: InetRequest) -> Option<u32> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).ok()?;
    sock.bind_auto().ok()?;
    sock.connect(&NetlinkAddr::new(0, 0)).ok()?;
    sock.set_non_blocking(true).ok()?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);
    sock.send(&out, 0).ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let n = sock.recv(&mut buf, 0).ok()?;
    let reply = NetlinkMessage::<SockDiagMessage>::deserialize(buf.get(..n)?).ok()?;
    match reply.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => Some(r.header.uid),
        _ => None,
    }
}
