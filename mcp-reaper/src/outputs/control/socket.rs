//! The socket file the server listens on.
//!
//! Owns: creating its parent directory (0700; 0710 and the read group's
//! with one), binding and restricting the socket to its owner (0600; 0660
//! and the read group's with one), a warning when an existing directory
//! keeps the read group out, and clearing a stale socket left by a daemon
//! that died.
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

/// Creates the parent directory if missing (0700, or 0710 owned by group
/// `read_gid`), clears a stale socket, binds and restricts the socket to
/// its owner (0600), or to its owner and group `read_gid` (0660).
pub(super) async fn bind(path: &Path, read_gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        if parent.exists() {
            if let Some(gid) = read_gid {
                warn_if_closed(parent, gid);
            }
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(if read_gid.is_some() { 0o710 } else { 0o700 })
                .create(parent)
                .map_err(|e| context(e, format!("cannot create {}", parent.display())))?;
            if let Some(gid) = read_gid {
                std::os::unix::fs::chown(parent, None, Some(gid))
                    .map_err(|e| context(e, format!("cannot chgrp {}", parent.display())))?;
            }
        }
    }
    clear_stale(path).await?;
    let listener = UnixListener::bind(path)
        .map_err(|e| context(e, format!("cannot bind {}", path.display())))?;
    if let Some(gid) = read_gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| context(e, format!("cannot chgrp {}", path.display())))?;
    }
    let mode = if read_gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| context(e, format!("cannot chmod {}", path.display())))?;
    Ok(listener)
}

/// Warns when group `gid` cannot pass through `dir` (no search permission
/// for it), so its members cannot reach the socket however it is set.
fn warn_if_closed(dir: &Path, gid: u32) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.mode();
    let open = if meta.gid() == gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    };
    if !open {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o7777),
            gid,
            "control socket: the read group cannot reach the socket through its directory"
        );
    }
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
