//! The control socket end to end: a real server on a temporary socket, the
//! real blocking client, raw connections for hostile input, and a non-root
//! peer (a forked child that drops to uid 65534) for the credential check.
//! Only the non-root test needs root; it skips with a printed reason
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use mcp_reaper::{
    audit::{Action, ProcRef},
    control::{
        self, ControlError, ControlStats, Handler, MatchedTree, OwnerRef, ReleaseTarget, Request,
        Response,
    },
};
use mcp_reaper_tests::{privileged, rerun, wait_until};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mcp-reaper-control-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server on its own thread and runtime, stopped on drop.
struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    stats: Arc<ControlStats>,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(path: &Path) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let handler: Handler = Arc::new(move |req: Request, _sender| {
            log.lock().unwrap().push(req.clone());
            match req {
                Request::Status => Response::status(serde_json::json!({"trees": 1}), "running"),
                Request::Scan => Response::scan(
                    serde_json::value::RawValue::from_string(r#"{"source":"daemon"}"#.into())
                        .unwrap(),
                    "scan",
                ),
                Request::Release { target, dry_run } => {
                    let hit = match &target {
                        ReleaseTarget::Owner(o) => o.pid == 4242,
                        ReleaseTarget::Session(s) => s == "abc",
                    };
                    let matched = if hit {
                        vec![MatchedTree {
                            root: ProcRef {
                                tgid: 4243,
                                start_ticks: 99,
                            },
                            server: "server-everything".into(),
                            state: "live".into(),
                            action: if dry_run {
                                Action::DryRun
                            } else {
                                Action::Enforce
                            },
                        }]
                    } else {
                        Vec::new()
                    };
                    let n = matched.len();
                    Response::matched(matched, format!("{n} tree(s)"))
                }
            }
        });
        let stats = Arc::new(ControlStats::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (p, s) = (path.to_owned(), Arc::clone(&stats));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(control::serve_counted(
                &p,
                handler,
                async {
                    let _ = rx.await;
                },
                s,
            ))
        });
        let server = Self {
            stop: Some(tx),
            thread: Some(thread),
            stats,
            seen,
        };
        assert!(
            wait_until(TIMEOUT, || {
                server.thread.as_ref().is_some_and(JoinHandle::is_finished)
                    || std::fs::metadata(path)
                        .is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600)
            }),
            "the server never bound {}",
            path.display()
        );
        assert!(
            !server.thread.as_ref().unwrap().is_finished(),
            "the server stopped at once"
        );
        server
    }

    fn stop(mut self) -> std::io::Result<()> {
        self.stop.take().map(|tx| tx.send(()));
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn release_owner(pid: u32, fd: Option<u32>, dry_run: bool) -> Request {
    Request::Release {
        target: ReleaseTarget::Owner(OwnerRef { pid, fd }),
        dry_run,
    }
}

/// Writes raw lines on one connection and reads one response per line.
fn raw_exchange(path: &Path, lines: &[&[u8]]) -> Vec<serde_json::Value> {
    let stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = Vec::new();
    for line in lines {
        (&stream).write_all(line).unwrap();
        let mut resp = String::new();
        reader.read_line(&mut resp).unwrap();
        assert!(resp.ends_with('\n'), "no full response line: {resp:?}");
        out.push(serde_json::from_str(&resp).unwrap());
    }
    out
}

#[test]
fn release_round_trips_by_owner_and_by_session() {
    let dir = TempDir::new();
    // The parent directory is created 0700 when missing.
    let path = dir.0.join("run/control.sock");
    let server = Server::start(&path);
    let mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    let r = control::request(&path, &release_owner(4242, Some(5), false), TIMEOUT).unwrap();
    assert!(r.ok);
    let matched = r.matched.clone().unwrap();
    assert_eq!(matched.len(), 1);
    assert_eq!(
        matched[0].root,
        ProcRef {
            tgid: 4243,
            start_ticks: 99
        }
    );
    assert_eq!(matched[0].action, Action::Enforce);
    assert_eq!(control::exit_code(&Ok(r)), control::EXIT_MATCHED);

    let session = Request::Release {
        target: ReleaseTarget::Session("abc".into()),
        dry_run: true,
    };
    let r = control::request(&path, &session, TIMEOUT).unwrap();
    assert_eq!(r.matched.as_ref().unwrap()[0].action, Action::DryRun);

    let none = control::request(&path, &release_owner(7, None, false), TIMEOUT).unwrap();
    assert!(none.ok && none.matched.as_ref().unwrap().is_empty());
    assert_eq!(control::exit_code(&Ok(none)), control::EXIT_NO_MATCH);

    let status = control::request(&path, &Request::Status, TIMEOUT).unwrap();
    assert_eq!(status.status.unwrap()["trees"], 1);

    assert_eq!(
        *server.seen.lock().unwrap(),
        [
            release_owner(4242, Some(5), false),
            session,
            release_owner(7, None, false),
            Request::Status
        ]
    );
    assert_eq!(server.stats.requests.load(Ordering::Relaxed), 4);
    server.stop().unwrap();
    assert!(!path.exists(), "the socket outlived the server");
}

#[test]
fn several_requests_on_one_connection() {
    let dir = TempDir::new();
    let path = dir.0.join("control.sock");
    let _server = Server::start(&path);
    let replies = raw_exchange(
        &path,
        &[
            b"{\"status\":{}}\n",
            b"{\"release\":{\"session\":\"abc\"}}\n",
            b"{\"release\":{\"owner\":{\"pid\":4242}},\"dry_run\":true}\r\n",
        ],
    );
    assert_eq!(replies[0]["ok"], true);
    assert_eq!(replies[1]["matched"][0]["action"], "enforce");
    assert_eq!(replies[2]["matched"][0]["action"], "dry-run");
}

#[test]
fn oversized_and_malformed_lines_get_errors_and_serving_goes_on() {
    let dir = TempDir::new();
    let path = dir.0.join("control.sock");
    let server = Server::start(&path);
    let mut huge = br#"{"release":{"session":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 70 * 1024));
    huge.extend_from_slice(b"\"}}\n");
    let replies = raw_exchange(
        &path,
        &[
            b"this is not json\n",
            &huge,
            b"{\"release\":{\"owner\":{\"pid\":0}}}\n",
            b"{\"release\":{\"owner\":{\"pid\":1}},\"force\":true}\n",
            b"\xff\xfe\n",
            b"{\"status\":{}}\n",
        ],
    );
    for (i, r) in replies[..5].iter().enumerate() {
        assert_eq!(r["ok"], false, "line {i}: {r}");
    }
    assert!(
        replies[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed request")
    );
    assert!(replies[1]["error"].as_str().unwrap().contains("too large"));
    assert!(replies[2]["error"].as_str().unwrap().contains("positive"));
    assert_eq!(replies[5]["ok"], true, "the connection stopped serving");
    assert_eq!(server.stats.oversized.load(Ordering::Relaxed), 1);
    assert_eq!(server.stats.malformed.load(Ordering::Relaxed), 4);
    // Only the valid request reached the handler; a new connection works.
    assert_eq!(*server.seen.lock().unwrap(), [Request::Status]);
    let r = control::request(&path, &Request::Status, TIMEOUT).unwrap();
    assert!(r.ok);
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = TempDir::new();
    let path = dir.0.join("control.sock");
    // A socket file nobody listens on (a daemon that was SIGKILLed).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let err = control::request(&path, &Request::Status, TIMEOUT).unwrap_err();
    assert!(matches!(err, ControlError::Refused { .. }), "{err}");
    let _server = Server::start(&path);
    assert!(
        control::request(&path, &Request::Status, TIMEOUT)
            .unwrap()
            .ok
    );
}

#[test]
fn a_live_daemons_socket_is_not_stolen_and_other_files_are_kept() {
    let dir = TempDir::new();
    let path = dir.0.join("control.sock");
    let first = Server::start(&path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handler: Handler = Arc::new(|_, _| Response::error("second server"));
    let err = rt
        .block_on(control::serve(&path, Arc::clone(&handler), async {}))
        .unwrap_err();
    assert!(
        err.to_string().contains("another mcp-reaper is running"),
        "{err}"
    );
    // The first server still answers on the same socket.
    let r = control::request(&path, &release_owner(4242, None, false), TIMEOUT).unwrap();
    assert!(r.ok);
    assert_eq!(first.seen.lock().unwrap().len(), 1);

    let file = dir.0.join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = rt
        .block_on(control::serve(&file, handler, async {}))
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn no_daemon_is_a_clear_error_and_exit_3() {
    let dir = TempDir::new();
    let path = dir.0.join("control.sock");
    let res = control::request(&path, &Request::Status, TIMEOUT);
    let err = res.as_ref().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("daemon not running: no socket at {}", path.display())
    );
    assert_eq!(control::exit_code(&res), control::EXIT_UNREACHABLE);
}

/// What a forked child running as uid/gid 65534 got from the socket: the
/// connect errno, or the first response line.
enum ChildResult {
    ConnectErrno(i32),
    Reply(String),
}

/// Forks a child that drops to 65534:65534 (no groups), connects to `path`,
/// sends `line` and reads one reply. The child uses raw syscalls on
/// buffers prepared before the fork (no allocation after fork in a
/// threaded process).
fn as_nobody(path: &Path, line: &[u8]) -> ChildResult {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let mut reply = vec![0u8; 4096];
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the child only makes async-signal-safe syscalls on memory
    // prepared above and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: raw syscalls in the child, see above.
        unsafe {
            libc::close(rd);
            let nobody = 65534;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(nobody) != 0
                || libc::setuid(nobody) != 0
            {
                libc::_exit(10);
            }
            let s = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if s < 0 {
                libc::_exit(11);
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(s, (&raw const addr).cast(), len) != 0 {
                let errno = *libc::__errno_location();
                let tag = [b'E', errno as u8];
                libc::write(wr, tag.as_ptr().cast(), 2);
                libc::_exit(0);
            }
            libc::write(s, line.as_ptr().cast(), line.len());
            let mut got = 0usize;
            while got < reply.len() {
                let n = libc::read(s, reply.as_mut_ptr().add(got).cast(), reply.len() - got);
                if n <= 0 {
                    break;
                }
                got += n as usize;
                if reply[got - 1] == b'\n' {
                    break;
                }
            }
            libc::write(wr, b"R".as_ptr().cast(), 1);
            libc::write(wr, reply.as_ptr().cast(), got);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; the child holds its own.
    unsafe { libc::close(wr) };
    let mut out = Vec::new();
    // SAFETY: rd is our pipe's read end, owned from here on.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(rd) };
    std::io::Read::read_to_end(&mut file, &mut out).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status:#x}"
    );
    match out.split_first() {
        Some((b'E', rest)) => ChildResult::ConnectErrno(i32::from(rest[0])),
        Some((b'R', rest)) => ChildResult::Reply(String::from_utf8_lossy(rest).into_owned()),
        _ => panic!("no result from the child: {out:?}"),
    }
}

#[test]
fn a_non_root_peer_is_refused() {
    if !privileged("a_non_root_peer_is_refused") {
        return;
    }
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.0.join("control.sock");
    let server = Server::start(&path);
    let line = b"{\"release\":{\"session\":\"abc\"}}\n";

    // The socket is 0600: the kernel refuses the connection outright.
    match as_nobody(&path, line) {
        ChildResult::ConnectErrno(e) => assert_eq!(e, libc::EACCES),
        ChildResult::Reply(r) => panic!("uid 65534 reached a 0600 socket: {r}"),
    }

    // With the mode opened up, the credential check still refuses.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    match as_nobody(&path, line) {
        ChildResult::Reply(r) => {
            let v: serde_json::Value = serde_json::from_str(r.trim_end()).unwrap();
            assert_eq!(v["ok"], false);
            assert_eq!(v["error"], control::PERMISSION_DENIED);
        }
        ChildResult::ConnectErrno(e) => panic!("connect failed with errno {e}"),
    }
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "a refused request reached the handler"
    );
    assert_eq!(server.stats.refused.load(Ordering::Relaxed), 1);

    // Root still gets through.
    assert!(
        control::request(&path, &Request::Status, TIMEOUT)
            .unwrap()
            .ok
    );
}

/// The client run by a non-root user against a socket it may open reports
/// the daemon's refusal as permission denied, exit 3. The test runs itself
/// again as uid 65534 for the client's side.
#[test]
fn the_client_reports_a_refusal_as_permission_denied() {
    const TEST: &str = "the_client_reports_a_refusal_as_permission_denied";
    const SOCKET_ENV: &str = "MCP_REAPER_TEST_CONTROL_SOCKET";
    if rerun::is_inner(TEST) {
        let path = std::env::var(SOCKET_ENV).unwrap();
        let res = control::request(Path::new(&path), &release_owner(1, None, false), TIMEOUT);
        assert!(
            matches!(res, Err(ControlError::PermissionDenied { .. })),
            "{res:?}"
        );
        assert_eq!(control::exit_code(&res), control::EXIT_UNREACHABLE);
        return;
    }
    if !privileged(TEST) {
        return;
    }
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.0.join("control.sock");
    let server = Server::start(&path);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    rerun::as_nobody(TEST, &[(SOCKET_ENV, path.to_str().unwrap())]);
    assert_eq!(server.stats.refused.load(Ordering::Relaxed), 1);
    assert!(server.seen.lock().unwrap().is_empty());
}
