//! `scan` answered by a running daemon: the real agent, the real control
//! server and handler on a temporary socket, and the client code `scan`
//! runs (`cli::scan_source`). The daemon's answer shows its trees with
//! source `daemon` and its own verdicts (grace left on an orphan);
//! `--standalone` says standalone; a member of the configured read group
//! can scan but not release; anyone else is refused, by the socket's mode
//! and, with the mode opened, by the server itself. The group runs are the
//! test run again as uid 65534 (`rerun::as_user`). Needs root; skips with
//! a printed reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use mcp_reaper::{
    cli::scan_source::{self, Answer, Plan},
    config::Config,
    control::{self, ControlError, ControlStats, OwnerRef, ReleaseTarget, Request},
    daemon::{Agent, AgentOptions},
    source::{SourceChoice, poll::PollOptions},
    trees::{ReportRows, TreeState},
};
use mcp_reaper_tests::{FAKE_SERVER_RULE, fake_server, privileged, rerun, wait_until};

const TEST: &str = "scan_is_answered_by_the_daemon_and_only_root_may_release";
const SOCKET_ENV: &str = "MCP_REAPER_TEST_SCAN_SOCKET";
const ROLE_ENV: &str = "MCP_REAPER_TEST_SCAN_ROLE";
/// The read group of the test's daemon: a gid no one has by default.
const READ_GID: u32 = 43_210;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Never reaps: dry run, and an hour's grace shown counting down.
fn config() -> Config {
    let text = format!(
        "{FAKE_SERVER_RULE}\n[policy]\ngrace = \"1h\"\ndry_run = true\n\n\
         [control]\nread_group = {READ_GID}\n"
    );
    Config::from_toml_str(&text, "test-config").unwrap()
}

/// The agent and its control socket on a thread of their own, stopped on
/// drop.
struct Served {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<ControlStats>,
}

impl Served {
    fn start(path: &Path) -> Self {
        let stats = Arc::new(ControlStats::default());
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (p, s) = (path.to_owned(), Arc::clone(&stats));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let config = config();
                let access = mcp_reaper::daemon::service::control_access(&config);
                assert_eq!(access.read_gid, Some(READ_GID));
                let mut agent = Agent::start(AgentOptions {
                    source: SourceChoice::Poll,
                    poll: PollOptions {
                        interval: Duration::from_millis(100),
                        ..PollOptions::default()
                    },
                    config: Arc::new(config),
                    ..AgentOptions::default()
                })
                .expect("agent starts");
                let handler = mcp_reaper::daemon::service::control_handler_for(&mut agent);
                let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
                let server = tokio::spawn(async move {
                    control::serve_with(
                        &p,
                        handler,
                        access,
                        async {
                            let _ = server_stopped.await;
                        },
                        s,
                    )
                    .await
                });
                agent
                    .run_until(async {
                        let _ = stop_rx.await;
                    })
                    .await;
                let _ = stop_server.send(());
                server.await.unwrap().unwrap();
            });
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
            stats,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.take().map(|tx| tx.send(()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The daemon's answer, read back as `scan` reads it.
fn daemon_rows(path: &Path) -> Result<ReportRows, String> {
    let reply = scan_source::ask_daemon(path, TIMEOUT)?;
    let mut answer = Answer::daemon(reply, path);
    answer.rows().cloned()
}

fn release(pid: u32) -> Request {
    Request::Release {
        target: ReleaseTarget::Owner(OwnerRef { pid, fd: None }),
        dry_run: true,
    }
}

/// The inner runs: a member of the read group, and a user in no group.
fn inner(role: &str, path: &Path) {
    match role {
        "member" => {
            let rows = daemon_rows(path).expect("a member of the read group may scan");
            assert_eq!(rows.source, "daemon");
            assert!(!rows.trees.is_empty(), "the daemon showed no tree");
            let res = control::request(path, &release(1), TIMEOUT);
            match res {
                Err(ControlError::PermissionDenied { detail }) => {
                    assert!(detail.contains("may only scan"), "{detail}");
                }
                other => panic!("a read-group member's release was not refused: {other:?}"),
            }
            assert!(matches!(
                control::request(path, &Request::Status, TIMEOUT),
                Err(ControlError::PermissionDenied { .. })
            ));
        }
        "stranger" => {
            let res = control::request(path, &Request::Scan, TIMEOUT);
            assert!(
                matches!(res, Err(ControlError::PermissionDenied { .. })),
                "{res:?}"
            );
            let note = daemon_rows(path).unwrap_err();
            assert!(note.contains("refused this user"), "{note}");
            assert!(note.contains("scanning /proc directly"), "{note}");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn scan_is_answered_by_the_daemon_and_only_root_may_release() {
    if rerun::is_inner(TEST) {
        let path = PathBuf::from(std::env::var(SOCKET_ENV).unwrap());
        inner(&std::env::var(ROLE_ENV).unwrap(), &path);
        return;
    }
    if !privileged(TEST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("run").join("control.sock");
    let (mut server, host_end) = fake_server("sleep 600; exit 0");
    let served = Served::start(&path);

    // The daemon answers with the tree, judged by itself.
    let mut last = None;
    let seen = wait_until(Duration::from_secs(20), || {
        last = daemon_rows(&path).ok();
        last.as_ref().is_some_and(|r| {
            r.trees
                .iter()
                .any(|t| t.root.tgid == server.id() && t.state == TreeState::Live)
        })
    });
    assert!(
        seen,
        "the daemon never showed tree {}: {last:?}",
        server.id()
    );
    let rows = last.unwrap();
    assert_eq!(rows.source, "daemon");
    let daemon = rows.daemon.as_ref().expect("the daemon names itself");
    assert_eq!(daemon.pid, std::process::id());
    assert_eq!(daemon.tier, "poll");

    // The socket and the directory it made let the read group in, no one else.
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, READ_GID));
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!((parent.mode() & 0o777, parent.gid()), (0o710, READ_GID));

    // Released by its host: orphaned, with the grace the daemon counts down.
    drop(host_end);
    let mut last = None;
    let orphaned = wait_until(Duration::from_secs(20), || {
        last = daemon_rows(&path)
            .ok()
            .and_then(|r| r.trees.into_iter().find(|t| t.root.tgid == server.id()));
        last.as_ref()
            .is_some_and(|t| t.state == TreeState::Orphaned)
    });
    assert!(orphaned, "never orphaned: {last:?}");
    let verdict = last.unwrap().daemon.expect("the daemon's verdict");
    assert_eq!(verdict.action.as_deref(), Some("enforce"));
    let left = verdict.grace_left_seconds.expect("grace left");
    assert!((3500..=3600).contains(&left), "grace left {left}");

    // --standalone walks /proc and says so.
    let plan = scan_source::plan(true, path.to_str().unwrap(), Path::new("/proc"));
    let Plan::Standalone(why) = plan else {
        panic!("--standalone asked the daemon");
    };
    let report = mcp_reaper::scan::scan(&config(), Path::new("/proc")).unwrap();
    let mut answer = Answer::standalone(&report, why).unwrap();
    let doc: serde_json::Value = serde_json::from_str(answer.json()).unwrap();
    assert_eq!(doc["source"], "standalone");
    assert!(answer.source_line.contains("standalone"));
    let tree = answer
        .rows()
        .unwrap()
        .trees
        .iter()
        .find(|t| t.root.tgid == server.id())
        .cloned()
        .expect("the walk finds the tree");
    assert!(tree.daemon.is_none(), "a walk has no daemon verdict");

    // A member of the read group scans; its release is refused.
    let sock = path.to_str().unwrap();
    let refused_before = served.stats.refused.load(Ordering::Relaxed);
    rerun::as_user(
        TEST,
        65534,
        65534,
        &[READ_GID],
        &[(SOCKET_ENV, sock), (ROLE_ENV, "member")],
    );
    assert_eq!(
        served.stats.refused.load(Ordering::Relaxed),
        refused_before + 2,
        "the server did not refuse the member's release and status"
    );

    // Anyone else: the socket's mode keeps them out...
    rerun::as_user(
        TEST,
        65534,
        65534,
        &[],
        &[(SOCKET_ENV, sock), (ROLE_ENV, "stranger")],
    );
    assert_eq!(
        served.stats.refused.load(Ordering::Relaxed),
        refused_before + 2
    );
    // ...and with the mode opened, the server's credential check does.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run_dir = path.parent().unwrap();
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    rerun::as_user(
        TEST,
        65534,
        65534,
        &[],
        &[(SOCKET_ENV, sock), (ROLE_ENV, "stranger")],
    );
    assert!(
        served.stats.refused.load(Ordering::Relaxed) >= refused_before + 3,
        "the server did not refuse a stranger"
    );

    drop(served);
    let _ = server.kill();
    let _ = server.wait();
}
