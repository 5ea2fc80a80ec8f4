//! The blocking client `mcp-reaper release` and `status` use.
//!
//! Owns: connecting to the socket, sending one request and reading one
//! bounded answer within a timeout, the operator-facing errors, the
//! `release` exit codes, and parsing `--owner PID[:FD]`.
//! Must never: wait without a timeout, accept an unbounded answer, or turn
//! a refusal into a silent success: every failure to reach the daemon is
//! exit code 3, a rejected request exit code 2.

use std::{
    io::{self, BufRead as _, Read as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Request, Response};

/// Longest response line the client accepts.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// The client's read buffer.
const READ_BUFFER: usize = 256 * 1024;

/// `mcp-reaper release` exit codes.
pub const EXIT_MATCHED: u8 = 0;
pub const EXIT_NO_MATCH: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

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
    let buf = request_line(path, req, timeout)?;
    let resp: Response =
        serde_json::from_slice(&buf).map_err(|e| ControlError::Protocol(e.to_string()))?;
    if !resp.ok
        && let Some(e) = resp.error.as_deref()
        && let Some(denied) = permission_denied(e)
    {
        return Err(denied);
    }
    Ok(resp)
}

/// A daemon's "permission denied: ..." answer as the client's error.
pub fn permission_denied(error: &str) -> Option<ControlError> {
    error
        .strip_prefix("permission denied: ")
        .map(|detail| ControlError::PermissionDenied {
            detail: detail.to_owned(),
        })
}

/// Sends one request and returns its response line as sent (newline
/// included), unparsed: a large answer (`scan`) need not be copied again.
pub fn request_line(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Vec<u8>, ControlError> {
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
                "cannot connect to {}: only root (and, to scan, the daemon's read group) may",
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
    // Large reads: a scan's answer is hundreds of kilobytes.
    let mut reader = io::BufReader::with_capacity(READ_BUFFER, (&stream).take(MAX_RESPONSE_BYTES));
    let mut buf = Vec::with_capacity(READ_BUFFER);
    reader.read_until(b'\n', &mut buf).map_err(io_err)?;
    if buf.last() != Some(&b'\n') {
        return Err(ControlError::Protocol(if buf.is_empty() {
            "the connection closed without an answer".into()
        } else {
            "truncated or oversized answer".into()
        }));
    }
    Ok(buf)
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
