//! What `run` needs besides the kernel: the configuration in force, the
//! metrics address and the place of the control socket, each checked as
//! `run` would meet it at start.
//!
//! Owns: turning each into one `Check`: a configuration that does not
//! load, an address that cannot be bound or a socket path that cannot be
//! made fails (`run` would stop at start); an address in use warns (a
//! running daemon holds it).
//! Must never: keep anything open or create anything: the metrics address
//! is bound and closed at once, the control socket and its directory are
//! only looked at (never connected to, so a running daemon sees nothing).

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener},
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
};

use super::report::{Check, CheckId, Status};
use crate::{
    cli::values::Listen,
    config::{Config, ConfigFile, DaemonConfig},
};

/// What `run` would be started with, as far as `doctor` checks it.
#[derive(Clone, Debug)]
pub struct Setup {
    pub config: ConfigFile,
    /// `None`: the configuration's `[daemon] listen`.
    pub listen: Option<Listen>,
    /// `None`: no control socket.
    pub control_socket: Option<PathBuf>,
}

/// The configuration, metrics address and control socket checks.
pub(super) fn setup_checks(setup: &Setup) -> Vec<Check> {
    let (config_check, config) = check_config(&setup.config);
    let listen = match setup.listen {
        Some(Listen::Off) => None,
        Some(Listen::At(a)) => Some(a),
        None => config.map_or(DaemonConfig::default().listen, |c| c.daemon.listen),
    };
    vec![
        config_check,
        check_listen(listen),
        check_control_socket(setup.control_socket.as_deref()),
    ]
}

/// The configuration in force, and the configuration itself when valid.
pub(super) fn check_config(file: &ConfigFile) -> (Check, Option<Config>) {
    match file.load() {
        Ok(c) => {
            let detail = match file.path() {
                Some(_) => format!("{file}: valid"),
                None => file.to_string(),
            };
            (Check::new(CheckId::Config, Status::Ok, detail), Some(c))
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid");
            let detail = match e.errors.len() {
                0 | 1 => first.to_owned(),
                n => format!("{first} (and {} more errors)", n - 1),
            };
            (Check::new(CheckId::Config, Status::Fail, detail), None)
        }
    }
}

/// The metrics endpoint's address: free, in use, or not bindable here.
pub(super) fn check_listen(addr: Option<SocketAddr>) -> Check {
    let Some(addr) = addr else {
        return Check::new(CheckId::Metrics, Status::Ok, "off");
    };
    match TcpListener::bind(addr) {
        Ok(_) => Check::new(CheckId::Metrics, Status::Ok, format!("{addr} is free")),
        Err(e) if e.kind() == ErrorKind::AddrInUse => Check::new(
            CheckId::Metrics,
            Status::Warn,
            format!("{addr} is in use (by a running daemon?): run cannot start while it is"),
        ),
        Err(e) => Check::new(
            CheckId::Metrics,
            Status::Fail,
            format!("cannot listen on {addr}: {e}"),
        ),
    }
}

/// The control socket's path: a socket there, or a directory it can be
/// made in (`run` creates a missing one, 0700).
pub(super) fn check_control_socket(path: Option<&Path>) -> Check {
    let Some(path) = path else {
        return Check::new(CheckId::ControlSocket, Status::Ok, "off");
    };
    let (status, detail) = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => (
            Status::Ok,
            format!(
                "{}: a socket is there (a running daemon's, or a stale one run replaces)",
                path.display()
            ),
        ),
        Ok(_) => (
            Status::Fail,
            format!("{} exists and is not a socket", path.display()),
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => place_for(path),
        Err(e) => (
            Status::Fail,
            format!("cannot inspect {}: {e}", path.display()),
        ),
    };
    Check::new(CheckId::ControlSocket, status, detail)
}

/// Whether a socket can be made at `path`: its directory is writable, or
/// the nearest directory above it that exists is.
fn place_for(path: &Path) -> (Status, String) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let writable = rustix::fs::access(existing, rustix::fs::Access::WRITE_OK).is_ok();
    let found = |what: &str| format!("{}: {what}", path.display());
    match (existing == dir, writable) {
        (true, true) => (Status::Ok, found("its directory is writable")),
        (false, true) => (
            Status::Ok,
            found(&format!("run creates {} (0700)", dir.display())),
        ),
        (_, false) => (
            Status::Fail,
            found(&format!("{} is not writable", existing.display())),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_in_force_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config.toml");
        let (c, config) = check_config(&ConfigFile::resolve_with(None, &default));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("built-in defaults"), "{}", c.detail);
        assert!(config.is_some());

        std::fs::write(&default, "[daemon]\nlisten = \"off\"\n").unwrap();
        let (c, config) = check_config(&ConfigFile::resolve_with(None, &default));
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail.contains("config.toml (the default path): valid"),
            "{}",
            c.detail
        );
        assert_eq!(config.unwrap().daemon.listen, None);

        std::fs::write(&default, "[policy]\ngrace = \"soon\"\nkill_after = 2\n").unwrap();
        let (c, config) = check_config(&ConfigFile::resolve_with(None, &default));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("config.toml:2:9"), "{}", c.detail);
        assert!(c.detail.contains("and 1 more errors"), "{}", c.detail);
        assert!(config.is_none());
    }

    #[test]
    fn the_metrics_address_is_free_in_use_or_not_here() {
        assert_eq!(check_listen(None).status, Status::Ok);
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = busy.local_addr().unwrap();
        assert_eq!(check_listen(Some(addr)).status, Status::Warn);
        drop(busy);
        assert_eq!(check_listen(Some(addr)).status, Status::Ok);
        // TEST-NET-1: no address of this machine.
        let elsewhere = "192.0.2.1:9863".parse().unwrap();
        let c = check_listen(Some(elsewhere));
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
    }

    #[test]
    fn the_control_socket_needs_a_place() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_control_socket(None).status, Status::Ok);
        let in_dir = dir.path().join("control.sock");
        assert_eq!(check_control_socket(Some(&in_dir)).status, Status::Ok);
        let deeper = dir.path().join("a/b/control.sock");
        let c = check_control_socket(Some(&deeper));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("run creates"), "{}", c.detail);
        std::fs::write(&in_dir, "").unwrap();
        assert_eq!(check_control_socket(Some(&in_dir)).status, Status::Fail);
        let _l = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).unwrap();
        let c = check_control_socket(Some(&dir.path().join("s.sock")));
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
    }

    #[test]
    fn the_listen_address_comes_from_the_configuration_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[daemon]\nlisten = \"off\"\n").unwrap();
        let setup = |listen| Setup {
            config: ConfigFile::Given(file.clone()),
            listen,
            control_socket: None,
        };
        let checks = setup_checks(&setup(None));
        assert_eq!(checks[1].detail, "off");
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let checks = setup_checks(&setup(Some(Listen::At(busy.local_addr().unwrap()))));
        assert_eq!(checks[1].status, Status::Warn);
        let ids: Vec<_> = checks.iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [CheckId::Config, CheckId::Metrics, CheckId::ControlSocket]
        );
    }
}
