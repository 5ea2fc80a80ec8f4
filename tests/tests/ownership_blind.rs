//! Ownership where the walk of /proc is blind, against the real kernel: a
//! host whose fd table the checker cannot read (another uid, not dumpable,
//! the checker without CAP_SYS_PTRACE; or the checker out of descriptors),
//! and a host whose far end no fd table shows (in flight in SCM_RIGHTS, or
//! only in a thread with its own fd table). None of these is a release:
//! the trees stay `unknown` and alive. Needs root; each test first proves
//! the blindness it claims, and fails when it cannot set it up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::process::CommandExt,
    },
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

mod common;

use common::Daemon;
use mcp_reaper::{config::Config, ownership::unix_socket, source::SourceChoice, trees::TreeState};
use mcp_reaper_tests::{
    host::is_alive, kill_if_same, lines_of, privileged, start_ticks, wait_until,
};
use serde_json::Value;

/// How long a spawned helper may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// (read end, write end), close-on-exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array we own.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Children killed (and reaped) on drop, whatever the test's outcome.
#[derive(Default)]
struct Procs {
    children: Vec<Child>,
    others: Vec<(u32, u64)>,
}

impl Procs {
    fn child(&mut self, c: Child) -> u32 {
        let pid = c.id();
        self.children.push(c);
        pid
    }

    fn other(&mut self, pid: u32) {
        if let Some(start) = start_ticks(pid) {
            self.others.push((pid, start));
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (pid, start) in &self.others {
            kill_if_same(*pid, *start);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The first line of `lines`, or a panic naming what was awaited.
fn first_line(lines: &Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("no ready line from {what} within {READY_TIMEOUT:?}: {e}"))
}

/// A host holding `far` as its stdin, running as uid/gid 65534 and not
/// dumpable: only CAP_SYS_PTRACE lets another uid read its fd table.
fn foreign_host(procs: &mut Procs, far: OwnedFd) -> u32 {
    let script = "import ctypes, sys\n\
                  if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0: sys.exit('prctl')\n\
                  print('ready', flush=True)\n\
                  import signal; signal.pause()\n";
    let mut child = Command::new("python3");
    child
        .args(["-c", script])
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::from(far))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = child.spawn().expect("start the uid-65534 host");
    let lines = lines_of(child.stdout.take().unwrap());
    let pid = procs.child(child);
    assert_eq!(first_line(&lines, "the uid-65534 host"), "ready");
    pid
}

/// A `sleep 600` tree root with `stdin` as fd 0, started through
/// `wrapper` (a root with more capabilities than the checker is itself
/// unreadable to it).
fn sleeper(procs: &mut Procs, wrapper: &[&str], stdin: OwnedFd) -> u32 {
    let argv: Vec<&str> = wrapper.iter().copied().chain(["sleep", "600"]).collect();
    let c = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    procs.child(c)
}

/// Runs `ownership-check` on `root`, through `wrapper` (e.g. setpriv).
fn check(wrapper: &[&str], root: u32, extra: &[&str]) -> Value {
    let bin = env!("CARGO_BIN_EXE_ownership-check");
    let root = root.to_string();
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.extend([bin, root.as_str()]);
    argv.extend(extra);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ownership-check prints JSON")
}

/// setpriv dropping CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH for good.
const NO_PTRACE: [&str; 3] = [
    "setpriv",
    "--inh-caps=-sys_ptrace,-dac_read_search",
    "--bounding-set=-sys_ptrace,-dac_read_search",
];

/// A far end in a foreign, non-dumpable host; the checker without
/// CAP_SYS_PTRACE. Returns the check's JSON.
fn foreign_host_check(transport: &str) -> Value {
    let mut procs = Procs::default();
    let (root_end, far) = match transport {
        "pipe" => pipe(),
        _ => socketpair(),
    };
    let root = sleeper(&mut procs, &NO_PTRACE, root_end);
    let host = foreign_host(&mut procs, far);
    let host_s = host.to_string();
    let v = check(&NO_PTRACE, root, &["--probe", host_s.as_str()]);
    // The blindness is real: the reduced checker cannot read the host's
    // fd links (the ptrace check refuses them), while full root can.
    assert_eq!(v["probe"]["link"], libc::EACCES, "probe: {}", v["probe"]);
    assert!(std::fs::read_link(format!("/proc/{host}/fd/0")).is_ok());
    let full = check(&[], root, &[]);
    assert_eq!(
        full["ownership"]["state"]["state"], "held",
        "with every capability the host is seen: {full}"
    );
    assert_eq!(
        full["ownership"]["state"]["owners"][0]["key"]["tgid"], host,
        "{full}"
    );
    v
}

#[test]
fn unreadable_host_pipe_is_unknown_not_released() {
    if !privileged("unreadable_host_pipe_is_unknown_not_released") {
        return;
    }
    let v = foreign_host_check("pipe");
    let state = &v["ownership"]["state"];
    assert_eq!(state["state"], "unknown", "{v}");
    assert_eq!(state["reason"], "scan-incomplete", "{v}");
}

#[test]
fn unreadable_host_socketpair_is_unknown_not_released() {
    if !privileged("unreadable_host_socketpair_is_unknown_not_released") {
        return;
    }
    let v = foreign_host_check("socket");
    let state = &v["ownership"]["state"];
    assert_eq!(state["state"], "unknown", "{v}");
    assert_eq!(state["reason"], "scan-incomplete", "{v}");
}

#[test]
fn checker_out_of_descriptors_is_unknown_not_released() {
    if !privileged("checker_out_of_descriptors_is_unknown_not_released") {
        return;
    }
    let mut procs = Procs::default();
    let (root_end, far) = pipe();
    let root = sleeper(&mut procs, &[], root_end);
    // The writer: a plain child of ours (readable), its stdin the far end.
    let host = sleeper(&mut procs, &[], far);
    let host_s = host.to_string();
    let v = check(&[], root, &["--one-spare-fd", "--probe", host_s.as_str()]);
    assert_eq!(v["probe"]["fdinfo"], libc::EMFILE, "probe: {}", v["probe"]);
    let state = &v["ownership"]["state"];
    assert_eq!(state["state"], "unknown", "{v}");
    assert_eq!(state["reason"], "scan-incomplete", "{v}");
    // With descriptors to spare, the writer is found.
    let full = check(&[], root, &[]);
    assert_eq!(full["ownership"]["state"]["state"], "held", "{full}");
}

/// A stand-in host (`tests/hosts/unseen_host.py MODE MARKER`) and the
/// fake server it started; all killed on drop.
struct UnseenHost {
    _procs: Procs,
    _stdin: Option<ChildStdin>,
    host: u32,
    server: u32,
    info: Value,
}

impl UnseenHost {
    fn start(mode: &str, marker: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hosts/unseen_host.py");
        let mut child = Command::new("python3")
            .args([script, mode, marker])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start unseen_host.py");
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().unwrap());
        let mut procs = Procs::default();
        let host = procs.child(child);
        let line = first_line(&lines, &format!("unseen_host.py {mode}"));
        let info: Value = serde_json::from_str(&line).expect("unseen_host.py JSON");
        let server = info["server"].as_u64().expect("server pid") as u32;
        procs.other(server);
        if let Some(r) = info["receiver"].as_u64() {
            procs.other(r as u32);
        }
        Self {
            _procs: procs,
            _stdin: stdin,
            host,
            server,
            info,
        }
    }

    fn far_inode(&self) -> u64 {
        self.info["far_inode"].as_u64().unwrap()
    }
}

/// Every process of the machine whose fd table shows `socket:[inode]`.
fn visible_holders(inode: u64) -> Vec<u32> {
    let want = format!("socket:[{inode}]");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy() == want))
        {
            out.push(pid);
        }
    }
    out
}

/// The server's stdin as the kernel records it: (peer inode, shutdown).
fn kernel_peer(server: u32) -> (Option<u32>, u8) {
    let link = std::fs::read_link(format!("/proc/{server}/fd/0")).unwrap();
    let ino: u32 = link
        .to_string_lossy()
        .trim_start_matches("socket:[")
        .trim_end_matches(']')
        .parse()
        .unwrap();
    let info = unix_socket(ino)
        .unwrap()
        .expect("sock_diag knows the server's stdin");
    (info.peer_inode, info.shutdown)
}

/// Only the test's own rules: the fake server by its marker.
fn config(marker: &str) -> Config {
    let toml = format!(
        r#"
presets = []
builtin_servers = false

[[host]]
name = "unseenhost"
cmdline = '(?:\S*/)?python3 \S*unseen_host\.py .*'

[[server]]
name = "unseenfake"
cmdline = '(?:\S*/)?python3(?:\.\d+)? -c .+ {marker}'

[policy]
grace = "1s"
kill_after = "1s"
"#
    );
    Config::from_toml_str(&toml, "ownership-blind-test").unwrap()
}

/// Grace and kill_after of [`config`], with room for the confirmation: a
/// tree the daemon would reap is gone well within this.
const PAST_GRACE: Duration = Duration::from_secs(5);

/// The daemon (poll tier) starts once the far end is already hidden, so
/// its first look at the tree goes through the full ownership check; the
/// tree must become `unknown` (peer-unseen) and outlive the grace.
fn daemon_keeps_unseen_tree(h: &UnseenHost) {
    let server_start = start_ticks(h.server).unwrap();
    let marker = h.info["marker"].as_str().unwrap().to_owned();
    let daemon = Daemon::start(SourceChoice::Poll, config(&marker));
    let seen = wait_until(Duration::from_secs(15), || {
        daemon
            .tree(h.server)
            .is_some_and(|t| t.state == TreeState::Unknown)
    });
    let rec = daemon.tree(h.server);
    assert!(
        seen,
        "the daemon never judged tree {} unknown: {:?}",
        h.server,
        rec.map(|t| (t.state, t.reason))
    );
    std::thread::sleep(PAST_GRACE);
    let rec = daemon.tree(h.server).expect("the tree is still tracked");
    assert_eq!(rec.state, TreeState::Unknown, "{:?}", rec.reason);
    assert_unseen(rec.reason.as_deref());
    assert!(
        start_ticks(h.server) == Some(server_start) && is_alive(h.server),
        "the server of a live host was killed"
    );
    assert!(is_alive(h.host));
    assert!(daemon.read(|s| s.reaps.is_empty()), "nothing may be reaped");
}

/// The reason of a tree whose far end the kernel records and no fd table
/// shows: `peer-unseen`, or `scan-incomplete` where some process of the
/// machine cannot be read at all (then the walk proves nothing either).
fn assert_unseen(reason: Option<&str>) {
    assert!(
        matches!(reason, Some("peer-unseen" | "scan-incomplete")),
        "{reason:?}"
    );
}

fn marker(test: &str) -> String {
    format!("mcp-blind-{test}-{}", std::process::id())
}

fn start_unseen(mode: &str) -> UnseenHost {
    let m = marker(mode);
    let mut h = UnseenHost::start(mode, &m);
    h.info["marker"] = Value::from(m);
    // The kernel still records the server's peer, with no shutdown...
    let (peer, shutdown) = kernel_peer(h.server);
    assert_eq!(
        (peer.map(u64::from), shutdown),
        (Some(h.far_inode()), 0),
        "the far end is not released"
    );
    // ...and no fd table of /proc/PID/fd shows it.
    assert_eq!(visible_holders(h.far_inode()), Vec::<u32>::new());
    h
}

#[test]
fn far_end_in_flight_in_scm_rights_is_unknown_and_survives_grace() {
    if !privileged("far_end_in_flight_in_scm_rights_is_unknown_and_survives_grace") {
        return;
    }
    let h = start_unseen("scm");
    let receiver = h.info["receiver"].as_u64().unwrap() as u32;
    assert!(is_alive(receiver), "the receiver holds the message unread");
    let tree: HashSet<u32> = [h.server].into();
    let own = mcp_reaper::ownership::stdio_owner(
        mcp_reaper::identity::ProcKey::new(h.server, start_ticks(h.server).unwrap()),
        &tree,
        &[],
        std::path::Path::new("/proc"),
    );
    assert!(own.full_scan);
    let mcp_reaper::ownership::OwnerState::Unknown { reason } = own.state else {
        panic!("a far end in flight is no release: {own:#?}");
    };
    assert_unseen(Some(reason));
    daemon_keeps_unseen_tree(&h);
}

#[test]
fn far_end_only_in_a_thread_with_its_own_fd_table_survives() {
    if !privileged("far_end_only_in_a_thread_with_its_own_fd_table_survives") {
        return;
    }
    let h = start_unseen("thread");
    let tid = h.info["thread"].as_u64().unwrap();
    // Only the thread's own table (not /proc/PID/fd) holds the far end.
    let want = format!("socket:[{}]", h.far_inode());
    let in_thread = std::fs::read_dir(format!("/proc/{}/task/{tid}/fd", h.host))
        .unwrap()
        .flatten()
        .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy() == want));
    assert!(in_thread, "the keeper thread holds the far end");
    daemon_keeps_unseen_tree(&h);
}
