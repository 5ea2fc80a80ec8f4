//! The socket file the server listens on.
//!
//! Owns: creating its parent directory (0700), binding and restricting the
//! socket to its owner (0600), and clearing a stale socket left by a
//! daemon that died.
//! Must never: replace a socket a live daemon answers on (a connection that
//! succeeds or hangs means someone listens), or remove anything that is not
//! a socket.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::Path,
    time::Duration,
};

use tokio::net::{UnixListener, UnixStream};

/// Creates the parent directory (0700) if missing, clears a stale socket,
/// binds and restricts the socket to its owner (0600).
pub(super) async fn bind(path: &Path) -> io::Result<UnixListener> {
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
