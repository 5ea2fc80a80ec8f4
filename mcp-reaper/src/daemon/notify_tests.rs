//! The notification protocol over real datagram sockets (a path and an
//! abstract name), without root: message format, the addresses
//! `NOTIFY_SOCKET` may name, the keep-alive period, and a notifier that
//! does nothing without a manager or when the manager stops reading.

use std::{
    ffi::OsStr,
    os::unix::net::{SocketAddr, UnixDatagram},
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use super::notify::{
    Heartbeat, Notifier, SEND_TIMEOUT, STATUS_PERIOD, keepalive_period, message, socket_addr,
};

const PID: u32 = 4242;

/// A manager's socket bound at a fresh path; the directory lives as long
/// as the returned guard.
fn manager_at_path() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (dir, path, sock)
}

/// A manager's socket bound at a fresh abstract name; returns `@name`.
fn manager_abstract() -> (String, UnixDatagram) {
    use std::os::linux::net::SocketAddrExt as _;
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "mcp-reaper-notify-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    (format!("@{name}"), sock)
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Nothing waiting on `sock` (checked without blocking).
fn nothing_more(sock: &UnixDatagram) {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let got = sock.recv(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "unexpected notification: {:?}",
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    sock.set_nonblocking(false).unwrap();
}

fn notifier(socket: &str, usec: Option<&str>) -> Notifier {
    Notifier::new(Some(OsStr::new(socket)), usec, None, PID)
}

#[test]
fn messages_are_newline_terminated_assignments_in_order() {
    assert_eq!(message(&[("READY", "1")]), "READY=1\n");
    assert_eq!(
        message(&[("READY", "1"), ("STATUS", "ebpf tier")]),
        "READY=1\nSTATUS=ebpf tier\n"
    );
    // A newline in a value must not smuggle in a second assignment.
    assert_eq!(message(&[("STATUS", "a\nREADY=1")]), "STATUS=a READY=1\n");
    assert_eq!(message(&[]), "");
}

#[test]
fn notify_socket_names_a_path_or_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let p = socket_addr(OsStr::new("/run/systemd/notify")).unwrap();
    assert_eq!(
        p.as_pathname(),
        Some(std::path::Path::new("/run/systemd/notify"))
    );
    let a = socket_addr(OsStr::new("@/org/freedesktop/systemd1/notify/42")).unwrap();
    assert_eq!(
        a.as_abstract_name(),
        Some(&b"/org/freedesktop/systemd1/notify/42"[..])
    );
    assert!(a.as_pathname().is_none());
    for bad in ["", "relative/notify", "vsock:2:1234"] {
        assert!(socket_addr(OsStr::new(bad)).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn without_notify_socket_nothing_is_sent() {
    for n in [
        Notifier::new(None, Some("30000000"), None, PID),
        Notifier::new(Some(OsStr::new("")), Some("30000000"), None, PID),
        // Unusable: a relative path is refused, not guessed at.
        Notifier::new(Some(OsStr::new("notify")), Some("30000000"), None, PID),
        Notifier::disabled(),
    ] {
        assert!(!n.enabled());
        assert_eq!(n.keepalive(), None, "no watchdog without a manager");
        assert_eq!(n.loop_period(), None);
        assert!(!n.ready("x"));
        assert!(!n.reloading("x"));
        assert!(!n.stopping("x"));
        assert!(!n.send(&[("WATCHDOG", "1")]));
        let mut beat = Heartbeat::new(n);
        beat.ready("x".to_owned());
        beat.beat("x".to_owned());
    }
}

#[test]
fn reaches_a_manager_at_a_path() {
    let (_dir, path, manager) = manager_at_path();
    let n = notifier(path.to_str().unwrap(), None);
    assert!(n.enabled());
    assert!(n.ready("tracking with the ebpf tier"));
    assert_eq!(
        recv(&manager),
        "READY=1\nSTATUS=tracking with the ebpf tier\n"
    );
    assert!(n.stopping("stopping: signal"));
    assert_eq!(recv(&manager), "STOPPING=1\nSTATUS=stopping: signal\n");
}

#[test]
fn reaches_a_manager_at_an_abstract_name() {
    let (name, manager) = manager_abstract();
    let n = notifier(&name, Some("2000000"));
    assert!(n.ready("up"));
    assert_eq!(recv(&manager), "READY=1\nSTATUS=up\n");
    // Clones share the socket.
    assert!(n.clone().send(&[("WATCHDOG", "1")]));
    assert_eq!(recv(&manager), "WATCHDOG=1\n");
}

#[test]
fn reloading_carries_the_monotonic_clock() {
    let (_dir, path, manager) = manager_at_path();
    let n = notifier(path.to_str().unwrap(), None);
    let now = || {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        u64::try_from(ts.tv_sec).unwrap() * 1_000_000 + u64::try_from(ts.tv_nsec).unwrap() / 1_000
    };
    let before = now();
    assert!(n.reloading("reloading the configuration"));
    let after = now();
    let msg = recv(&manager);
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines[0], "RELOADING=1");
    let usec: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&usec),
        "{before} <= {usec} <= {after}"
    );
    assert_eq!(lines[2], "STATUS=reloading the configuration");
    assert_eq!(lines.len(), 3);
}

#[test]
fn keepalive_is_half_the_watchdog_timeout_of_this_process() {
    let pid = PID.to_string();
    let half = Some(Duration::from_secs(15));
    assert_eq!(keepalive_period(Some("30000000"), None, PID), half);
    assert_eq!(keepalive_period(Some("30000000"), Some(&pid), PID), half);
    assert_eq!(keepalive_period(Some("30000000"), Some("4243"), PID), None);
    assert_eq!(keepalive_period(Some("30000000"), Some("x"), PID), None);
    assert_eq!(keepalive_period(Some("30000000"), Some(""), PID), None);
    assert_eq!(keepalive_period(None, Some(&pid), PID), None);
    for bad in ["0", "", "-5", "30s", "1e6"] {
        assert_eq!(keepalive_period(Some(bad), None, PID), None, "{bad:?}");
    }
    assert_eq!(
        keepalive_period(Some("1500001"), None, PID),
        Some(Duration::from_nanos(750_000_500))
    );
    // Never a zero period, which would spin the loop.
    assert_eq!(
        keepalive_period(Some("1"), None, PID),
        Some(Duration::from_millis(1))
    );
}

#[test]
fn the_loop_notifies_at_the_keepalive_period_or_for_status() {
    let (_dir, path, _manager) = manager_at_path();
    let path = path.to_str().unwrap();
    assert_eq!(
        notifier(path, Some("30000000")).loop_period(),
        Some(Duration::from_secs(15))
    );
    assert_eq!(notifier(path, None).loop_period(), Some(STATUS_PERIOD));
    let other = Notifier::new(Some(OsStr::new(path)), Some("30000000"), Some("1"), PID);
    assert_eq!(other.keepalive(), None, "another process's watchdog");
    assert_eq!(other.loop_period(), Some(STATUS_PERIOD));
}

#[test]
fn heartbeat_sends_watchdog_and_status_only_when_it_changed() {
    let (_dir, path, manager) = manager_at_path();
    let mut beat = Heartbeat::new(notifier(path.to_str().unwrap(), Some("2000000")));
    beat.ready("ebpf tier: 0 trees".to_owned());
    assert_eq!(recv(&manager), "READY=1\nSTATUS=ebpf tier: 0 trees\n");
    beat.beat("ebpf tier: 0 trees".to_owned());
    assert_eq!(recv(&manager), "WATCHDOG=1\n");
    beat.beat("ebpf tier: 2 trees".to_owned());
    assert_eq!(recv(&manager), "WATCHDOG=1\nSTATUS=ebpf tier: 2 trees\n");
    beat.beat("ebpf tier: 2 trees".to_owned());
    assert_eq!(recv(&manager), "WATCHDOG=1\n");
    nothing_more(&manager);
}

#[test]
fn heartbeat_without_a_watchdog_sends_only_changes() {
    let (_dir, path, manager) = manager_at_path();
    let mut beat = Heartbeat::new(notifier(path.to_str().unwrap(), None));
    beat.beat("poll tier".to_owned());
    assert_eq!(recv(&manager), "STATUS=poll tier\n");
    beat.beat("poll tier".to_owned());
    nothing_more(&manager);
}

#[test]
fn a_manager_that_went_away_or_stopped_reading_costs_at_most_the_timeout() {
    let (dir, path, manager) = manager_at_path();
    let n = notifier(path.to_str().unwrap(), Some("2000000"));
    // The manager stops reading: its queue fills, and each send then gives
    // up after SEND_TIMEOUT instead of stalling the loop.
    let mut refused = 0;
    let start = Instant::now();
    for _ in 0..10_000 {
        if !n.send(&[("WATCHDOG", "1")]) {
            refused += 1;
            if refused == 2 {
                break;
            }
        }
    }
    assert_eq!(refused, 2, "the queue never filled");
    assert!(
        start.elapsed() < SEND_TIMEOUT * 2 + Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The manager is gone: sends fail, nothing panics.
    drop(manager);
    drop(dir);
    assert!(!n.ready("x"));
    assert!(!n.stopping("x"));
}
