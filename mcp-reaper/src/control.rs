//! The local control socket and its client (`mcp-reaper release`).
//!
//! Owns: the wire protocol (newline-delimited JSON over a UNIX stream
//! socket, default `/run/mcp-reaper/control.sock`), the server loop that
//! checks each peer's credentials before passing its requests to the
//! daemon's handler, and the blocking client the CLI uses.
//! Must never: act on a request from a peer other than root or the daemon's
//! own uid (checked with SO_PEERCRED on every connection, whatever the
//! socket's file mode says), replace a socket a live daemon answers on, or
//! let one connection's bad input (oversized, malformed, slow) crash the
//! server or stall other connections. It decides nothing itself: the
//! handler matches trees and the policy acts on them.
//!
//! Protocol, one JSON object per line each way, several per connection:
//! - `{"release": {"owner": {"pid": 123, "fd": 5}}, "dry_run": false}`
//!   (`fd` optional: any fd of that host), or
//!   `{"release": {"session": "abc"}, "dry_run": true}`;
//! - `{"status": {}}`.
//!
//! Responses: `{"ok": true, "matched": [{"root": {"tgid", "start_ticks"},
//! "server", "state", "action"}], "message": "..."}` (status replies carry a
//! `status` object instead of `matched`), or `{"ok": false, "error": "..."}`.
//!
//! `mcp-reaper release` exit codes: 0 at least one tree matched, 1 nothing
//! matched, 2 usage (bad arguments, or the daemon rejected the request as
//! invalid), 3 daemon unreachable (no socket, not answering, timed out) or
//! it refused this caller (permission denied).

use std::{
    future::Future,
    io::{self, BufRead as _, Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
    task::JoinSet,
};

use crate::{
    audit::{Action, ProcRef},
    trees::TreeView,
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mcp-reaper/control.sock";
/// Longest request line, newline excluded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest response line the client accepts.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Connections served at once; more are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 32;
/// A connection that sends no complete line for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The error a peer that is neither root nor the daemon's uid gets.
pub const PERMISSION_DENIED: &str = "permission denied: only root may release sessions";
/// Longest session id accepted.
pub const MAX_SESSION_BYTES: usize = 1024;

/// `mcp-reaper release` exit codes.
pub const EXIT_MATCHED: u8 = 0;
pub const EXIT_NO_MATCH: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

/// A host fd (or every fd of a host, with `fd` unset) whose trees to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerRef {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
}

/// Which trees a `release` names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ReleaseTarget {
    Owner(OwnerRef),
    Session(String),
}

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireRequest", into = "WireRequest")]
pub enum Request {
    /// The host says these trees' session is over: treat them as
    /// `session-ended` (or, with `dry_run`, say what that would do).
    Release {
        target: ReleaseTarget,
        dry_run: bool,
    },
    Status,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    release: Option<ReleaseTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<StatusArgs>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
}

impl TryFrom<WireRequest> for Request {
    type Error = String;

    fn try_from(w: WireRequest) -> Result<Self, String> {
        match (w.release, w.status) {
            (Some(target), None) => {
                match &target {
                    ReleaseTarget::Owner(o) if o.pid == 0 => {
                        return Err("owner pid must be a positive number".into());
                    }
                    ReleaseTarget::Session(s) if s.is_empty() || s.len() > MAX_SESSION_BYTES => {
                        return Err(format!("session id must be 1 to {MAX_SESSION_BYTES} bytes"));
                    }
                    _ => {}
                }
                Ok(Self::Release {
                    target,
                    dry_run: w.dry_run,
                })
            }
            (None, Some(_)) => Ok(Self::Status),
            (Some(_), Some(_)) => Err("a request is either `release` or `status`, not both".into()),
            (None, None) => Err("a request needs `release` or `status`".into()),
        }
    }
}

impl From<Request> for WireRequest {
    fn from(r: Request) -> Self {
        match r {
            Request::Release { target, dry_run } => Self {
                release: Some(target),
                status: None,
                dry_run,
            },
            Request::Status => Self {
                release: None,
                status: Some(StatusArgs {}),
                dry_run: false,
            },
        }
    }
}

/// One tree a release matched, and what the daemon does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedTree {
    pub root: ProcRef,
    pub server: String,
    /// The tree's state when matched (`live`, `orphaned`, ...).
    pub state: String,
    pub action: Action,
}

impl MatchedTree {
    pub fn from_view(t: &TreeView, action: Action) -> Self {
        Self {
            root: t.root.into(),
            server: t.server.clone(),
            state: t.state.as_str().to_owned(),
            action,
        }
    }
}

/// A control response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<Vec<MatchedTree>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A release's answer (an empty `matched` is still `ok`).
    pub fn matched(matched: Vec<MatchedTree>, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            matched: Some(matched),
            message: Some(message.into()),
            status: None,
            error: None,
        }
    }

    pub fn status(status: serde_json::Value, message: impl Into<String>) -> Self {
        Self {
            ok: true,
            matched: None,
            message: Some(message.into()),
            status: Some(status),
            error: None,
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            matched: None,
            message: None,
            status: None,
            error: Some(error.into()),
        }
    }

    fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"ok":false,"error":"internal error: cannot encode the response"}"#.to_vec()
        });
        line.push(b'\n');
        line
    }
}

/// The handler the daemon passes to `serve`. It runs on tokio's blocking
/// pool; a panic in it becomes an error response.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

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
    let listener = bind(path).await?;
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
                            connection(stream, h, s, own_uid).await;
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

/// Creates the parent directory (0700) if missing, clears a stale socket,
/// binds and restricts the socket to its owner (0600).
async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| context(e, format!("cannot create {}", parent.display())))?;
    }
    clear_stale(path).await?;
    let listener = UnixListener::bind(path)
        .map_err(|e| context(e, format!("cannot bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| context(e, format!("cannot chmod {}", path.display())))?;
    Ok(listener)
}

/// Removes `path` only if it is a socket nobody listens on.
async fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(e, format!("cannot inspect {}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    let running = || {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another mcp-reaper is running: {} accepts connections",
                path.display()
            ),
        )
    };
    match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
        Ok(Ok(_)) => Err(running()),
        // A full backlog: someone listens, but is slow.
        Err(_) => Err(running()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "control socket: removing a stale socket");
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context(
                    e,
                    format!("cannot remove the stale socket {}", path.display()),
                )),
                _ => Ok(()),
            }
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(context(e, format!("cannot probe {}", path.display()))),
    }
}

fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

enum Line {
    Data(Vec<u8>),
    Oversized,
    Eof,
}

/// Reads one line of at most `max` bytes (newline excluded). A longer line
/// is discarded through its newline and reported as `Oversized`.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> io::Result<Line> {
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

async fn connection(stream: UnixStream, handler: Handler, stats: Arc<ControlStats>, own_uid: u32) {
    let peer = stream.peer_cred();
    let allowed = match &peer {
        Ok(c) => c.uid() == 0 || c.uid() == own_uid,
        Err(_) => false,
    };
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
                Ok(req) => {
                    bump(&stats.requests);
                    let h = Arc::clone(&handler);
                    match tokio::task::spawn_blocking(move || h(req)).await {
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

/// Client errors, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("daemon not running: no socket at {}", .path.display())]
    NotRunning { path: PathBuf },
    #[error("daemon not running: {} refuses connections (a stale socket)", .path.display())]
    Refused { path: PathBuf },
    #[error("permission denied: {detail}")]
    PermissionDenied { detail: String },
    #[error("daemon did not answer within {:?} on {}", .after, .path.display())]
    Timeout { path: PathBuf, after: Duration },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("bad response from the daemon: {0}")]
    Protocol(String),
}

impl ControlError {
    /// Every client error means the daemon could not act for us.
    pub fn exit_code(&self) -> u8 {
        EXIT_UNREACHABLE
    }
}

/// The exit code of `mcp-reaper release` for a request's result.
pub fn exit_code(result: &Result<Response, ControlError>) -> u8 {
    match result {
        Err(e) => e.exit_code(),
        Ok(r) if !r.ok => EXIT_USAGE,
        Ok(r) if r.matched.as_ref().is_some_and(|m| !m.is_empty()) => EXIT_MATCHED,
        Ok(_) => EXIT_NO_MATCH,
    }
}

/// Sends one request and waits for its response (blocking; `timeout`
/// applies to each write and read). A daemon's "permission denied" answer
/// is returned as `ControlError::PermissionDenied`; other `ok: false`
/// answers come back as a `Response`.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let io_err = |source: io::Error| {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            ControlError::Timeout {
                path: path.to_owned(),
                after: timeout,
            }
        } else {
            ControlError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ControlError::NotRunning {
            path: path.to_owned(),
        },
        io::ErrorKind::ConnectionRefused => ControlError::Refused {
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => ControlError::PermissionDenied {
            detail: format!(
                "cannot connect to {}: only root may release sessions",
                path.display()
            ),
        },
        _ => io_err(e),
    })?;
    let t = timeout.max(Duration::from_millis(1));
    stream.set_read_timeout(Some(t)).map_err(io_err)?;
    stream.set_write_timeout(Some(t)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;
    let mut reader = io::BufReader::new((&stream).take(MAX_RESPONSE_BYTES));
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf).map_err(io_err)?;
    if buf.last() != Some(&b'\n') {
        return Err(ControlError::Protocol(if buf.is_empty() {
            "the connection closed without an answer".into()
        } else {
            "truncated or oversized answer".into()
        }));
    }
    let resp: Response =
        serde_json::from_slice(&buf).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if !resp.ok
        && let Some(detail) = resp
            .error
            .as_deref()
            .and_then(|e| e.strip_prefix("permission denied: "))
    {
        return Err(ControlError::PermissionDenied {
            detail: detail.to_owned(),
        });
    }
    Ok(resp)
}

/// Parses `--owner PID[:FD]`: a positive decimal PID, optionally a colon
/// and a decimal fd.
pub fn parse_owner(s: &str) -> Result<(u32, Option<u32>), String> {
    fn number(part: &str, what: &str, whole: &str) -> Result<u32, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid owner {whole:?}: {what} must be a decimal number (PID[:FD])"
            ));
        }
        part.parse::<u32>()
            .map_err(|_| format!("invalid owner {whole:?}: {what} is out of range"))
    }
    let (pid, fd) = match s.split_once(':') {
        Some((pid, fd)) => (pid, Some(fd)),
        None => (s, None),
    };
    let pid = number(pid, "the pid", s)?;
    if pid == 0 {
        return Err(format!("invalid owner {s:?}: the pid must be positive"));
    }
    let fd = fd.map(|f| number(f, "the fd", s)).transpose()?;
    Ok((pid, fd))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parse_owner_accepts_pid_and_pid_fd() {
        assert_eq!(parse_owner("123"), Ok((123, None)));
        assert_eq!(parse_owner("123:5"), Ok((123, Some(5))));
        assert_eq!(parse_owner("4194304:0"), Ok((4_194_304, Some(0))));
    }

    #[test]
    fn parse_owner_rejects_junk() {
        for bad in [
            "",
            "0",
            "0:1",
            "abc",
            "12:",
            ":5",
            "1:2:3",
            "-1",
            "+5",
            "1:+2",
            " 1",
            "99999999999",
            "1:x",
        ] {
            assert!(parse_owner(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn requests_have_the_documented_wire_form() {
        let owner = Request::Release {
            target: ReleaseTarget::Owner(OwnerRef {
                pid: 123,
                fd: Some(5),
            }),
            dry_run: false,
        };
        assert_eq!(
            serde_json::to_string(&owner).unwrap(),
            r#"{"release":{"owner":{"pid":123,"fd":5}}}"#
        );
        let session: Request =
            serde_json::from_str(r#"{"release": {"session": "abc"}, "dry_run": true}"#).unwrap();
        assert_eq!(
            session,
            Request::Release {
                target: ReleaseTarget::Session("abc".into()),
                dry_run: true
            }
        );
        let status: Request = serde_json::from_str(r#"{"status": {}}"#).unwrap();
        assert_eq!(status, Request::Status);
        assert_eq!(serde_json::to_string(&status).unwrap(), r#"{"status":{}}"#);
        let no_fd: Request = serde_json::from_str(r#"{"release":{"owner":{"pid":7}}}"#).unwrap();
        assert_eq!(
            no_fd,
            Request::Release {
                target: ReleaseTarget::Owner(OwnerRef { pid: 7, fd: None }),
                dry_run: false
            }
        );
    }

    #[test]
    fn invalid_requests_are_rejected() {
        for bad in [
            r#"{}"#,
            r#"{"release":{"owner":{"pid":0}}}"#,
            r#"{"release":{"session":""}}"#,
            r#"{"release":{"owner":{"pid":1}},"status":{}}"#,
            r#"{"release":{"owner":{"pid":1}},"force":true}"#,
            r#"{"release":{"pid":1}}"#,
            r#"{"release":{"owner":{"pid":-1}}}"#,
            r#"[1,2]"#,
        ] {
            assert!(
                serde_json::from_str::<Request>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn responses_and_exit_codes() {
        let m = MatchedTree {
            root: ProcRef {
                tgid: 1,
                start_ticks: 2,
            },
            server: "s".into(),
            state: "live".into(),
            action: Action::DryRun,
        };
        let ok = Response::matched(vec![m], "1 tree");
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["matched"][0]["action"], "dry-run");
        assert_eq!(v["matched"][0]["root"]["tgid"], 1);
        assert!(v.get("error").is_none());
        assert_eq!(exit_code(&Ok(ok)), EXIT_MATCHED);
        assert_eq!(
            exit_code(&Ok(Response::matched(vec![], "none"))),
            EXIT_NO_MATCH
        );
        assert_eq!(exit_code(&Ok(Response::error("bad"))), EXIT_USAGE);
        let err = Err(ControlError::NotRunning { path: "/x".into() });
        assert_eq!(exit_code(&err), EXIT_UNREACHABLE);
        assert_eq!(
            serde_json::to_string(&Response::error("e")).unwrap(),
            r#"{"ok":false,"error":"e"}"#
        );
    }

    #[tokio::test]
    async fn bounded_lines() {
        let data = b"short\r\nxxxxxxxxxxxxxxxx\nlast".to_vec();
        let mut r = BufReader::new(&data[..]);
        assert!(
            matches!(read_line_bounded(&mut r, 8).await.unwrap(), Line::Data(d) if d == b"short")
        );
        assert!(matches!(
            read_line_bounded(&mut r, 8).await.unwrap(),
            Line::Oversized
        ));
        assert!(
            matches!(read_line_bounded(&mut r, 8).await.unwrap(), Line::Data(d) if d == b"last")
        );
        assert!(matches!(
            read_line_bounded(&mut r, 8).await.unwrap(),
            Line::Eof
        ));
    }
}
