//! The control server: the accept loop and one task per connection.
//!
//! Owns: the connection limit, the idle timeout, the peer credential check
//! (SO_PEERCRED and SO_PEERGROUPS on every connection, weighed by the pure
//! `rights`), bounded line reading, passing each valid request to the
//! daemon's handler on the blocking pool, and the server's counters. On
//! shutdown it removes the socket only if the file is still the one it
//! bound.
//! Must never: pass a request from a peer other than root or the daemon's
//! own uid to the handler, save a read-only request (`scan`) from a member
//! of the configured read group, let one connection's oversized, malformed
//! or slow input crash the server or stall the others, or decide anything:
//! the handler matches trees and the policy acts on them.

use std::{
    future::Future,
    io,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
    sync::Semaphore,
    task::JoinSet,
};

use super::{
    peer::{Peer, peer_groups},
    protocol::{MAX_REQUEST_BYTES, PERMISSION_DENIED, READ_ONLY_DENIED, Request, Response},
    socket::bind,
};

/// Who may use the socket besides root and the daemon's own uid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// Members of this group (primary or supplementary) may send read-only
    /// requests (`scan`); the socket file is made theirs to connect to.
    pub read_gid: Option<u32>,
}

/// What a peer may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rights {
    /// Root or the daemon's own uid: every request.
    Full,
    /// A member of the read group: read-only requests.
    ReadOnly,
    /// Anyone else: nothing.
    Nothing,
}

/// What the peer with `uid`, primary `gid` and supplementary `groups` may
/// ask of a daemon running as `own_uid` with `access`. `groups` is only
/// called when it matters.
pub fn rights(
    uid: u32,
    gid: u32,
    groups: impl FnOnce() -> Vec<u32>,
    own_uid: u32,
    access: Access,
) -> Rights {
    if uid == 0 || uid == own_uid {
        return Rights::Full;
    }
    match access.read_gid {
        Some(g) if gid == g || groups().contains(&g) => Rights::ReadOnly,
        _ => Rights::Nothing,
    }
}

/// Connections served at once; more are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 32;
/// A connection that sends no complete line for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The handler the daemon passes to `serve`, called with each request and
/// who sent it. It runs on tokio's blocking pool; a panic in it becomes an
/// error response.
pub type Handler = Arc<dyn Fn(Request, Peer) -> Response + Send + Sync>;

/// Server counters (export them as metrics).
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Requests passed to the handler.
    pub requests: AtomicU64,
    /// Connections from a peer that is neither root nor the daemon's uid.
    pub refused: AtomicU64,
    /// Lines that were not a valid request.
    pub malformed: AtomicU64,
    /// Lines over `MAX_REQUEST_BYTES`.
    pub oversized: AtomicU64,
    /// Connections closed at once because `MAX_CONNECTIONS` were open.
    pub busy: AtomicU64,
}

impl ControlStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Serves `path` until `shutdown` resolves, then removes the socket.
pub async fn serve(
    path: &Path,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_counted(path, handler, shutdown, Arc::new(ControlStats::default())).await
}

/// `serve`, counting into `stats`.
pub async fn serve_counted(
    path: &Path,
    handler: Handler,
    shutdown: impl Future<Output = ()>,
    stats: Arc<ControlStats>,
) -> io::Result<()> {
    serve_with(path, handler, Access::default(), shutdown, stats).await
}

/// `serve_counted`, letting `access`'s read group in for read-only requests
/// (the socket file is then group-owned by it, mode 0660).
pub async fn serve_with(
    path: &Path,
    handler: Handler,
    access: Access,
    shutdown: impl Future<Output = ()>,
    stats: Arc<ControlStats>,
) -> io::Result<()> {
    let listener = bind(path, access.read_gid).await?;
    // Remember which file is ours, so shutdown never removes a successor's.
    let ours = std::fs::symlink_metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let own_uid = rustix::process::geteuid().as_raw();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        let (h, s) = (Arc::clone(&handler), Arc::clone(&stats));
                        conns.spawn(async move {
                            connection(stream, h, s, own_uid, access).await;
                            drop(slot);
                        });
                    }
                    Err(_) => bump(&stats.busy),
                },
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    conns.shutdown().await;
    drop(listener);
    let still_ours = std::fs::symlink_metadata(path)
        .map(|m| Some((m.dev(), m.ino())) == ours)
        .unwrap_or(false);
    if still_ours {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

pub(super) enum Line {
    Data(Vec<u8>),
    Oversized,
    Eof,
}

/// Reads one line of at most `max` bytes (newline excluded). A longer line
/// is discarded through its newline and reported as `Oversized`.
pub(super) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Line> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = (&mut *r).take(limit).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Line::Data(buf));
    }
    if buf.len() <= max {
        // The last line, without a newline before EOF.
        return Ok(Line::Data(buf));
    }
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            r.consume(i + 1);
            break;
        }
        let len = chunk.len();
        r.consume(len);
    }
    Ok(Line::Oversized)
}

async fn connection(
    stream: UnixStream,
    handler: Handler,
    stats: Arc<ControlStats>,
    own_uid: u32,
    access: Access,
) {
    let peer = stream.peer_cred();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let may = match &peer {
        Ok(c) => rights(
            c.uid(),
            c.gid(),
            || peer_groups(fd).unwrap_or_default(),
            own_uid,
            access,
        ),
        Err(_) => Rights::Nothing,
    };
    let allowed = may != Rights::Nothing;
    if !allowed {
        bump(&stats.refused);
        match &peer {
            Ok(c) => {
                tracing::warn!(uid = c.uid(), pid = ?c.pid(), "control socket: refused a peer that is not root")
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: refused a peer without credentials")
            }
        }
    }
    let sender = Peer::of_socket(
        std::os::fd::AsRawFd::as_raw_fd(&stream),
        peer.as_ref().ok().and_then(tokio::net::unix::UCred::pid),
    );
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let line =
            match tokio::time::timeout(IDLE_TIMEOUT, read_line_bounded(&mut rd, MAX_REQUEST_BYTES))
                .await
            {
                Ok(Ok(line)) => line,
                Ok(Err(_)) | Err(_) => break,
            };
        let response = match line {
            Line::Eof => break,
            _ if !allowed => Response::error(PERMISSION_DENIED),
            Line::Oversized => {
                bump(&stats.oversized);
                Response::error(format!("request too large: over {MAX_REQUEST_BYTES} bytes"))
            }
            Line::Data(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Data(bytes) => match serde_json::from_slice::<Request>(&bytes) {
                Err(e) => {
                    bump(&stats.malformed);
                    Response::error(format!("malformed request: {e}"))
                }
                Ok(req) if may == Rights::ReadOnly && !req.is_read_only() => {
                    bump(&stats.refused);
                    tracing::warn!(
                        pid = ?sender.pid,
                        "control socket: refused a request that acts from the read group"
                    );
                    Response::error(READ_ONLY_DENIED)
                }
                Ok(req) => {
                    bump(&stats.requests);
                    let h = Arc::clone(&handler);
                    let from = sender.clone();
                    match tokio::task::spawn_blocking(move || h(req, from)).await {
                        Ok(r) => r,
                        Err(_) => Response::error("internal error: the request handler failed"),
                    }
                }
            },
        };
        let written = tokio::time::timeout(IDLE_TIMEOUT, wr.write_all(&response.to_line())).await;
        if !matches!(written, Ok(Ok(()))) || !allowed {
            break;
        }
    }
}
