//! The service manager's notification protocol (sd_notify(3)): datagrams
//! of `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET`, which
//! systemd sets for `Type=notify` services: `READY=1`, `RELOADING=1`,
//! `STOPPING=1`, `STATUS=...` and the watchdog's `WATCHDOG=1`.
//!
//! Owns: reading `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, the
//! keep-alive period (half the watchdog timeout), formatting messages and
//! sending them.
//! Must never: send anything without `NOTIFY_SOCKET`, fail or end the
//! daemon (a send that fails is logged and forgotten), or wait on the
//! manager for longer than [`SEND_TIMEOUT`]. It decides nothing about
//! when: the agent sends `READY=1` once tracking runs, and keep-alives
//! from its event loop, so a stuck loop stops them.
//!
//! Written here rather than taken from the `sd-notify` crate: the protocol
//! is a few lines over the standard library's unix datagram sockets
//! (abstract names included). Here the variables' values are passed in,
//! so the PID check, the period and both kinds of address are tested over
//! real sockets without setting the process environment (which the crate
//! reads on every call, and which is unsafe to change in a threaded test
//! process), and a send waits a bounded time on a manager that stopped
//! reading. No descriptors are passed, so no `SCM_RIGHTS`.

use std::{
    ffi::OsStr,
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::Arc,
    time::Duration,
};

use tracing::{debug, warn};

/// Longest a message waits for room in the manager's queue; then it is
/// dropped (a manager that slow would miss keep-alives either way).
pub const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// How often the event loop reports its state (`STATUS=`, when it
/// changed) when no watchdog asks for a shorter period.
pub const STATUS_PERIOD: Duration = Duration::from_secs(5);

/// The shortest keep-alive period, whatever `WATCHDOG_USEC` says (a zero
/// period would be a busy loop).
const MIN_KEEPALIVE: Duration = Duration::from_millis(1);

/// Sends notifications to the service manager; does nothing when the
/// daemon was not started by one. Cheap to clone: clones share the socket.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
    /// Half of `WATCHDOG_USEC`, when the watchdog is this process's.
    keepalive: Option<Duration>,
}

#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// A notifier that sends nothing (not under a service manager).
    #[must_use]
    pub fn disabled() -> Self {
        Self::default()
    }

    /// From the environment the service manager sets. An unusable
    /// `NOTIFY_SOCKET` is a warning and a disabled notifier.
    #[must_use]
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::new(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// From the variables' values: `socket` is `NOTIFY_SOCKET`,
    /// `watchdog_usec` and `watchdog_pid` the watchdog's, `own_pid` this
    /// process's id.
    #[must_use]
    pub fn new(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Self {
        let Some(name) = socket.filter(|s| !s.is_empty()) else {
            return Self::disabled();
        };
        match open(name) {
            Ok(target) => Self {
                target: Some(Arc::new(target)),
                keepalive: keepalive_period(watchdog_usec, watchdog_pid, own_pid),
            },
            Err(e) => {
                warn!(socket = ?name, "NOTIFY_SOCKET unusable, not notifying the service manager: {e}");
                Self::disabled()
            }
        }
    }

    /// Whether a service manager listens.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often the event loop must send `WATCHDOG=1`, when a watchdog
    /// watches this process.
    #[must_use]
    pub fn keepalive(&self) -> Option<Duration> {
        self.keepalive
    }

    /// How often the event loop notifies: the keep-alive period, else
    /// [`STATUS_PERIOD`]; `None` when nobody listens.
    #[must_use]
    pub fn loop_period(&self) -> Option<Duration> {
        self.enabled()
            .then(|| self.keepalive.unwrap_or(STATUS_PERIOD))
    }

    /// `READY=1`: start-up (or a reload) is complete; with the state.
    pub fn ready(&self, status: &str) -> bool {
        self.send(&[("READY", "1"), ("STATUS", status)])
    }

    /// `RELOADING=1`, with the monotonic time systemd 253 and later expect.
    pub fn reloading(&self, status: &str) -> bool {
        let now = monotonic_usec().to_string();
        self.send(&[
            ("RELOADING", "1"),
            ("MONOTONIC_USEC", &now),
            ("STATUS", status),
        ])
    }

    /// `STOPPING=1`: shutting down; with why.
    pub fn stopping(&self, status: &str) -> bool {
        self.send(&[("STOPPING", "1"), ("STATUS", status)])
    }

    /// One message with `fields`, in order. Returns whether it was sent
    /// (false without a service manager).
    pub fn send(&self, fields: &[(&str, &str)]) -> bool {
        let Some(t) = &self.target else {
            return false;
        };
        if fields.is_empty() {
            return false;
        }
        let msg = message(fields);
        match t.socket.send_to_addr(msg.as_bytes(), &t.addr) {
            Ok(_) => true,
            Err(e) => {
                debug!(message = %msg.trim_end(), "notifying the service manager failed: {e}");
                false
            }
        }
    }
}

/// The event loop's side: `WATCHDOG=1` each period, and `STATUS=` when the
/// state it reports changed since the last one sent.
#[derive(Debug, Default)]
pub struct Heartbeat {
    notifier: Notifier,
    status: Option<String>,
}

impl Heartbeat {
    #[must_use]
    pub fn new(notifier: Notifier) -> Self {
        Self {
            notifier,
            status: None,
        }
    }

    #[must_use]
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// `READY=1` with `status`, remembered as the last status sent.
    pub fn ready(&mut self, status: String) {
        if self.notifier.ready(&status) {
            self.status = Some(status);
        }
    }

    /// One beat: `WATCHDOG=1` when a watchdog watches, `STATUS=` when
    /// `status` differs from the last one sent; one datagram or none.
    pub fn beat(&mut self, status: String) {
        let changed = self.status.as_deref() != Some(status.as_str());
        let mut fields = Vec::with_capacity(2);
        if self.notifier.keepalive().is_some() {
            fields.push(("WATCHDOG", "1"));
        }
        if changed {
            fields.push(("STATUS", status.as_str()));
        }
        if self.notifier.send(&fields) && changed {
            self.status = Some(status);
        }
    }
}

/// `KEY=VALUE` lines, newline-terminated. A newline inside a value would
/// start a new assignment: it becomes a space.
#[must_use]
pub fn message(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        out.push_str(key);
        out.push('=');
        out.extend(value.chars().map(|c| if c == '\n' { ' ' } else { c }));
        out.push('\n');
    }
    out
}

/// The address `NOTIFY_SOCKET` names: an absolute path, or an abstract
/// name after `@` (the manager's own convention). Anything else (a
/// relative path, `vsock:`) is refused.
pub fn socket_addr(name: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(name),
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@...)",
        )),
    }
}

/// Half of `WATCHDOG_USEC` (as `sd_watchdog_enabled` advises), when it is
/// a positive number and `WATCHDOG_PID` is unset or names `own_pid`.
#[must_use]
pub fn keepalive_period(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = watchdog_pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec = watchdog_usec?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&u| u > 0)?;
    Some((Duration::from_micros(usec) / 2).max(MIN_KEEPALIVE))
}

fn open(name: &OsStr) -> io::Result<Target> {
    let addr = socket_addr(name)?;
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok(Target { socket, addr })
}

/// CLOCK_MONOTONIC in microseconds, the clock `MONOTONIC_USEC=` is on.
fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let micros = u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000;
    secs.saturating_mul(1_000_000).saturating_add(micros)
}
