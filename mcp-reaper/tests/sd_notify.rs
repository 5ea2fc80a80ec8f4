//! The daemon under a service manager's notification protocol: the real
//! binary, a real `NOTIFY_SOCKET` bound by the test as systemd binds its
//! own, `WATCHDOG_USEC` set and `WATCHDOG_PID` naming the daemon. It must
//! say `READY=1` only once it tracks, send `WATCHDOG=1` keep-alives at
//! half the timeout, bracket a SIGHUP reload with `RELOADING=1` and
//! `READY=1`, and say `STOPPING=1` on SIGTERM before a clean exit. Needs
//! root (it loads the kernel programs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    os::unix::net::UnixDatagram,
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use mcp_reaper_tests::{lines_of, privileged};

/// The watchdog timeout the test sets: keep-alives every half second.
const WATCHDOG_USEC: u64 = 1_000_000;

/// Kills and reaps the daemon if the test ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notification within `timeout`, or `None`.
fn next(manager: &UnixDatagram, timeout: Duration) -> Option<String> {
    manager.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = manager.recv(&mut buf).ok()?;
    Some(String::from_utf8(buf[..n].to_vec()).unwrap())
}

/// Notifications until one has the line `line`, within `timeout`: (those
/// before it, it).
fn until(manager: &UnixDatagram, line: &str, timeout: Duration) -> (Vec<String>, String) {
    let deadline = Instant::now() + timeout;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = next(manager, left.max(Duration::from_millis(1)))
            .unwrap_or_else(|| panic!("no {line} within {timeout:?}; got {before:?}"));
        if msg.lines().any(|l| l == line) {
            return (before, msg);
        }
        before.push(msg);
    }
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// The daemon's log lines so far, without waiting.
fn logged(log: &Receiver<String>) -> Vec<String> {
    log.try_iter().collect()
}

/// The first log line containing `needle` within `timeout`.
fn line_with(log: &Receiver<String>, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match log.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle} within {timeout:?}: {e}"),
        }
    }
}

/// `t` as the daemon's JSON log writes timestamps (RFC 3339, UTC,
/// microseconds), so that the two compare as strings.
fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = i64::try_from(days).unwrap() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Starts the daemon as systemd would: through `sh`, which sets
/// `WATCHDOG_PID` to its own PID and then execs the daemon in its place.
fn start(dir: &std::path::Path, config: &std::path::Path, notify: &std::path::Path) -> Daemon {
    start_with(dir, config, notify, &["--listen", "off"], &[])
}

/// As [`start`], with more arguments (`--listen` among them) and
/// environment variables.
fn start_with(
    dir: &std::path::Path,
    config: &std::path::Path,
    notify: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Daemon {
    let mut cmd = Command::new("/bin/sh");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["run", "--source", "ebpf", "--log-format", "json"])
        .args(args)
        .arg("--control-socket")
        .arg(dir.join("control.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Daemon(cmd.spawn().expect("start the daemon"))
}

#[test]
fn notifies_ready_keepalives_reload_and_stopping() {
    if !privileged("notifies_ready_keepalives_reload_and_stopping") {
        return;
    }
    let _one = common::serial();
    let (dir, config) = common::config_dir("presets = []\n");
    let notify = dir.path().join("notify");
    let manager = UnixDatagram::bind(&notify).unwrap();
    let mut daemon = start(dir.path(), &config, &notify);
    let log = lines_of(daemon.0.stderr.take().unwrap());

    // Ready: only once the source is attached and the table seeded, which
    // the daemon logs (`ready`) before it tells the manager.
    let (before, ready) = until(&manager, "READY=1", Duration::from_secs(60));
    let ready_at = rfc3339(std::time::SystemTime::now());
    assert!(
        before
            .iter()
            .all(|m| m.starts_with("STATUS=") && !m.contains("WATCHDOG=1")),
        "before READY=1: {before:?}"
    );
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("READY=1 carries a STATUS=");
    assert!(
        status.starts_with("tracking ") && status.contains("ebpf tier"),
        "{status}"
    );
    // The log reaches the test through a pipe and a reader thread, so the
    // line may arrive after the datagram; its own timestamp says when it
    // was written, and that must not be later than READY=1's arrival.
    let line = line_with(&log, "\"message\":\"ready\"", Duration::from_secs(10));
    let logged_at = line
        .split("\"timestamp\":\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a JSON log line has a timestamp");
    assert!(
        logged_at <= ready_at.as_str(),
        "READY=1 (received {ready_at}) before the daemon logged ready ({line})"
    );
    let status = mcp_reaper::control::request(
        &dir.path().join("control.sock"),
        &mcp_reaper::control::Request::Status,
        Duration::from_secs(5),
    );
    assert!(status.is_ok(), "control socket after READY=1: {status:?}");

    // Keep-alives from the loop: more than one, at about half the timeout,
    // and not a flood.
    let started = Instant::now();
    let mut keepalives = 0;
    while started.elapsed() < Duration::from_secs(3) {
        if let Some(m) = next(&manager, Duration::from_millis(200))
            && m.lines().any(|l| l == "WATCHDOG=1")
        {
            keepalives += 1;
        }
    }
    assert!(
        (3..=10).contains(&keepalives),
        "{keepalives} keep-alives in 3 s at a {WATCHDOG_USEC} us timeout"
    );

    // SIGHUP: RELOADING=1 (with the monotonic clock), then READY=1 once
    // the reloaded configuration is in force.
    signal(&daemon.0, libc::SIGHUP);
    let (_, reloading) = until(&manager, "RELOADING=1", Duration::from_secs(10));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    until(&manager, "READY=1", Duration::from_secs(10));

    // SIGTERM: STOPPING=1, then a clean exit.
    signal(&daemon.0, libc::SIGTERM);
    until(&manager, "STOPPING=1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after STOPPING=1");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}: {:?}", logged(&log));
    // Nothing after STOPPING=1 but, at most, a last status.
    while let Some(m) = next(&manager, Duration::from_millis(100)) {
        assert!(!m.contains("READY=1"), "after STOPPING=1: {m}");
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The HTTP status of `GET path` on the daemon's listener, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// A loop that stops turning (here: blocked in its thread by a fault
/// injected 3 s after `ready`) stops its keep-alives, so that systemd's
/// watchdog restarts the daemon, and `/livez` fails once the loop's last
/// turn is older than its limit, while the HTTP listener, which runs apart
/// from the loop, still answers.
#[test]
fn a_hung_loop_stops_keepalives_and_fails_livez() {
    if !privileged("a_hung_loop_stops_keepalives_and_fails_livez") {
        return;
    }
    let _one = common::serial();
    let (dir, config) = common::config_dir("presets = []\n");
    let notify = dir.path().join("notify");
    let manager = UnixDatagram::bind(&notify).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = start_with(
        dir.path(),
        &config,
        &notify,
        &["--listen", &listen],
        &[("MCP_REAPER_FAULT_HANG_LOOP_MS", "3000")],
    );
    let log = lines_of(daemon.0.stderr.take().unwrap());
    until(&manager, "READY=1", Duration::from_secs(60));
    assert_eq!(
        http_status(port, "/livez"),
        Some(200),
        "a turning loop is live"
    );
    until(&manager, "WATCHDOG=1", Duration::from_secs(2));

    let hung = mcp_reaper_tests::wait_until(Duration::from_secs(30), || {
        log.try_iter().any(|l| l.contains("the event loop hangs"))
    });
    assert!(hung, "the injected hang never came");
    // What the loop sent before it hung may still be queued.
    std::thread::sleep(Duration::from_millis(200));
    while next(&manager, Duration::from_millis(10)).is_some() {}
    let quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(4) {
        if let Some(m) = next(&manager, Duration::from_millis(200)) {
            assert!(
                !m.lines().any(|l| l == "WATCHDOG=1"),
                "a keep-alive from a hung loop: {m}"
            );
        }
    }
    let stale = mcp_reaper::outputs::http::LIVENESS_STALE + Duration::from_secs(15);
    assert!(
        mcp_reaper_tests::wait_until(stale, || http_status(port, "/livez") == Some(503)),
        "/livez still passes {stale:?} after the loop hung"
    );
}

#[test]
fn timestamps_format_as_the_log_writes_them() {
    for secs in [0u64, 951_782_400, 1_796_052_887, 4_107_542_399] {
        let t = std::time::UNIX_EPOCH + Duration::new(secs, 123_456_789);
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{secs}"),
                "+%Y-%m-%dT%H:%M:%S.123456Z",
            ])
            .output()
            .unwrap();
        assert_eq!(rfc3339(t), String::from_utf8(out.stdout).unwrap().trim());
    }
}
