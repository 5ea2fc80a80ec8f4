//! The eBPF close tier against the real kernel: the per-syscall
//! tracepoints (and, by option, `raw_tp/sys_enter`) report a watched host's
//! closes of AF_UNIX sockets and pipes (with the peer's
//! inode and whether the close drops the last reference), dup2/dup3 onto an
//! open descriptor, and close_range; unwatched processes report nothing; a
//! close of a tracked tree's stdio wakes the reader without its timer; the
//! optional UNIX-socket release hook attaches where `doctor` says the kernel
//! allows it, and otherwise falls back to the close tier alone.
//! Needs root (BPF); skips with a printed reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    process::{Child, ChildStdin, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use mcp_reaper::{
    daemon::{Agent, AgentOptions},
    doctor::{self, CheckId},
    event::{CloseKind, ProcessEvent, SourceMsg},
    identity::ProcKey,
    source::{
        ActiveSource, SourceChoice, SourceCounters,
        ebpf::{CloseHook, CloseTier, EbpfOptions, EbpfSource},
    },
};
use mcp_reaper_tests::{privileged, start_ticks};
use tokio::sync::mpsc;

/// The stand-in host: a Python process with a socketpair and a pipe that
/// closes, dups and close_ranges descriptors when told on stdin, and
/// answers every command with one line.
const HOST: &str = r#"
import os, socket, sys, ctypes
libc = ctypes.CDLL(None, use_errno=True)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
r, w = os.pipe()
keep = [a, b]
print("ready", a.fileno(), os.fstat(a.fileno()).st_ino, b.fileno(),
      os.fstat(b.fileno()).st_ino, r, w, os.fstat(r).st_ino, flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    n = [int(x) for x in args]
    if cmd == "close":
        os.close(n[0]); print("ok", flush=True)
    elif cmd == "dup":
        print("fd", os.dup(n[0]), flush=True)
    elif cmd == "dup2":
        os.dup2(n[0], n[1], inheritable=False); print("ok", flush=True)
    elif cmd == "socketpair":
        x, y = socket.socketpair()
        keep += [x, y]
        print("fd", x.fileno(), y.fileno(), flush=True)
    elif cmd == "close_range":
        rc = libc.syscall(436, n[0], n[1], n[2])
        print("rc", rc, flush=True)
    elif cmd == "devnull":
        fd = os.open("/dev/null", os.O_RDONLY); os.close(fd); print("ok", flush=True)
    elif cmd == "exit":
        break
"#;

struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

/// The descriptors and inodes the host reported at start.
#[derive(Debug)]
struct Ready {
    a: u32,
    a_ino: u64,
    b: u32,
    b_ino: u64,
    r: u32,
    w: u32,
    pipe_ino: u64,
}

impl Host {
    fn start() -> (Self, Ready) {
        let mut child = Command::new("python3")
            .args(["-c", HOST])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take();
        let lines = mcp_reaper_tests::lines_of(child.stdout.take().unwrap());
        let host = Self {
            child,
            stdin,
            lines,
        };
        let n = host.nums(&host.line());
        let ready = Ready {
            a: n[0] as u32,
            a_ino: n[1],
            b: n[2] as u32,
            b_ino: n[3],
            r: n[4] as u32,
            w: n[5] as u32,
            pipe_ino: n[6],
        };
        (host, ready)
    }

    fn key(&self) -> ProcKey {
        let pid = self.child.id();
        ProcKey::new(pid, start_ticks(pid).expect("host is alive"))
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("host answered")
    }

    fn nums(&self, line: &str) -> Vec<u64> {
        line.split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect()
    }

    /// Sends one command; returns the numbers of its answer.
    fn cmd(&mut self, c: &str) -> Vec<u64> {
        writeln!(self.stdin.as_mut().unwrap(), "{c}").unwrap();
        let line = self.line();
        self.nums(&line)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the close tier runs and starts draining `src`: the records
/// arrive on the returned channel, counted in the returned counters; the
/// reader lives as long as the handle.
fn read_closes(
    src: &mut EbpfSource,
) -> (
    mpsc::Receiver<SourceMsg>,
    Arc<SourceCounters>,
    tokio::task::JoinHandle<()>,
) {
    assert!(
        src.close_tier(),
        "close tier off: {:?}",
        src.close_tier_reason()
    );
    let (tx, rx) = mpsc::channel(4096);
    let counters = Arc::new(SourceCounters::default());
    let reader = src.spawn_reader(tx, counters.clone()).unwrap();
    (rx, counters, reader)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One close as the test checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    fd: u32,
    inode: u64,
    peer_inode: u64,
    kind: CloseKind,
    last_ref: bool,
    via_dup: bool,
}

/// Receives events until one Close by `tgid` arrives (or 5 s pass), keeping
/// any Close by another tgid in `others`.
async fn next_close(
    rx: &mut mpsc::Receiver<SourceMsg>,
    tgid: u32,
    others: &mut Vec<ProcessEvent>,
) -> Option<(ProcKey, Seen)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if let SourceMsg::Event(ev @ ProcessEvent::Close { .. }) = msg {
            let ProcessEvent::Close {
                key,
                fd,
                inode,
                peer_inode,
                kind,
                last_ref,
                via_dup,
                ..
            } = ev.clone()
            else {
                unreachable!()
            };
            if key.tgid == tgid {
                return Some((
                    key,
                    Seen {
                        fd,
                        inode,
                        peer_inode,
                        kind,
                        last_ref,
                        via_dup,
                    },
                ));
            }
            others.push(ev);
        }
    }
}

/// Drains whatever arrives within `wait`, returning Close events.
async fn drain_closes(rx: &mut mpsc::Receiver<SourceMsg>, wait: Duration) -> Vec<ProcessEvent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let SourceMsg::Event(ev @ ProcessEvent::Close { .. }) = msg {
            out.push(ev);
        }
    }
    out
}

#[test]
fn host_closes_report_inode_peer_and_last_reference() {
    if !privileged("host_closes_report_inode_peer_and_last_reference") {
        return;
    }
    // The per-syscall tracepoints: reachable here as root, through a
    // private tracefs mount when the machine has none.
    host_closes_reported_through(CloseHook::Auto);
}

#[test]
fn host_closes_report_the_same_through_raw_sys_enter() {
    if !privileged("host_closes_report_the_same_through_raw_sys_enter") {
        return;
    }
    host_closes_reported_through(CloseHook::SysEnter);
}

fn host_closes_reported_through(hook: CloseHook) {
    runtime().block_on(async {
        // The source on its own (the Agent consumes its events): the same
        // kernel programs, ring buffer and decoder the daemon runs.
        let mut src = EbpfSource::load(&EbpfOptions {
            close_hook: hook,
            ..EbpfOptions::default()
        })
        .expect("eBPF loads");
        assert_eq!(
            src.close_hook(),
            Some(hook),
            "fell back: {:?}",
            src.close_fallback_reason()
        );
        let (mut rx, counters, _reader) = read_closes(&mut src);

        let (mut host, ready) = Host::start();
        let (mut bystander, by_ready) = Host::start();
        let key = host.key();
        src.watch_host(key).unwrap();
        let tgid = key.tgid;
        let mut others = Vec::new();

        // A dup'ed socket end: closing the copy is not the last reference.
        let dup = host.cmd(&format!("dup {}", ready.a))[0] as u32;
        host.cmd(&format!("close {dup}"));
        let (k, seen) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("close of dup");
        assert_eq!(k, key, "the record carries the host's identity");
        assert_eq!(
            seen,
            Seen {
                fd: dup,
                inode: ready.a_ino,
                peer_inode: ready.b_ino,
                kind: CloseKind::UnixSocket,
                last_ref: false,
                via_dup: false,
            }
        );
        // The original: last reference, peer is the other end.
        host.cmd(&format!("close {}", ready.a));
        let (_, seen) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("close of a");
        assert_eq!((seen.fd, seen.inode), (ready.a, ready.a_ino));
        assert_eq!(seen.peer_inode, ready.b_ino);
        assert!(seen.last_ref);
        // The survivor: its peer is released already, so no peer inode.
        host.cmd(&format!("close {}", ready.b));
        let (_, seen) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("close of b");
        assert_eq!((seen.fd, seen.inode), (ready.b, ready.b_ino));
        assert_eq!(seen.peer_inode, 0, "the peer was released first");
        assert!(seen.last_ref);

        // dup2(r, w) closes the write end implicitly (its last reference).
        host.cmd(&format!("dup2 {} {}", ready.r, ready.w));
        let (_, seen) = next_close(&mut rx, tgid, &mut others).await.expect("dup2");
        assert_eq!(
            seen,
            Seen {
                fd: ready.w,
                inode: ready.pipe_ino,
                peer_inode: 0,
                kind: CloseKind::Pipe {
                    write_end: true,
                    ends: 1
                },
                last_ref: true,
                via_dup: true,
            }
        );
        // w is now a second read end: closing it is not the last reference.
        host.cmd(&format!("close {}", ready.w));
        let (_, seen) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("close w");
        assert_eq!(
            (seen.kind, seen.last_ref),
            (
                CloseKind::Pipe {
                    write_end: false,
                    ends: 1
                },
                false
            )
        );
        host.cmd(&format!("close {}", ready.r));
        let (_, seen) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("close r");
        assert_eq!(
            (seen.fd, seen.inode, seen.last_ref),
            (ready.r, ready.pipe_ino, true)
        );

        // close_range is one record with the range; the CLOEXEC-only form
        // (which closes nothing) and regular files report nothing.
        let fds = host.cmd("socketpair");
        let (lo, hi) = (fds[0] as u32, fds[1] as u32);
        host.cmd(&format!("close_range {lo} {hi} 4"));
        host.cmd("devnull");
        host.cmd(&format!("close_range {lo} {hi} 0"));
        let (_, seen) = next_close(&mut rx, tgid, &mut others).await.expect("range");
        assert_eq!(
            (seen.fd, seen.kind),
            (
                lo.min(hi),
                CloseKind::Range {
                    last_fd: lo.max(hi)
                }
            )
        );

        // The unwatched bystander does the same; nothing arrives from it.
        let dup = bystander.cmd(&format!("dup {}", by_ready.a))[0];
        bystander.cmd(&format!("close {dup}"));
        bystander.cmd(&format!("close {}", by_ready.a));
        bystander.cmd(&format!("dup2 {} {}", by_ready.r, by_ready.w));
        others.extend(drain_closes(&mut rx, Duration::from_millis(300)).await);
        let from_host: Vec<_> = others.iter().filter(|e| e.key().tgid == tgid).collect();
        assert!(
            from_host.is_empty(),
            "unexpected host closes: {from_host:?}"
        );
        assert!(
            others.is_empty(),
            "closes from unwatched processes: {others:?}"
        );
        let c = counters.snapshot();
        assert_eq!(c.close, 7, "{c:?}");
        assert_eq!(c.decode_errors, 0);
        assert_eq!(c.kernel_read_errors, 0);
    });
}

#[test]
fn a_close_of_tracked_stdio_wakes_the_reader_at_once() {
    if !privileged("a_close_of_tracked_stdio_wakes_the_reader_at_once") {
        return;
    }
    runtime().block_on(async {
        // A drain timer that never fires within the test: records submitted
        // without a wake-up stay in the ring until something wakes it.
        let mut src = EbpfSource::load(&EbpfOptions {
            drain_interval: Duration::from_secs(3600),
            ..EbpfOptions::default()
        })
        .expect("eBPF loads");
        let (mut rx, _, _reader) = read_closes(&mut src);
        let (mut host, ready) = Host::start();
        src.watch_host(host.key()).unwrap();
        // The pipe is a tracked tree's stdio; the socketpair is not.
        src.sync_stdio_inodes(&[ready.pipe_ino].into_iter().collect());
        // Let the reader run its first (immediate) timer drain before the
        // closes: the runtime is single-threaded and `cmd` never yields.
        let _ = drain_closes(&mut rx, Duration::from_millis(300)).await;

        host.cmd(&format!("close {}", ready.a));
        let early = drain_closes(&mut rx, Duration::from_millis(1500)).await;
        assert!(
            early.is_empty(),
            "an untracked close must wait for the drain timer: {early:?}"
        );
        // Closing the tracked pipe's write end wakes the reader, which
        // drains both records in order.
        host.cmd(&format!("close {}", ready.w));
        let mut others = Vec::new();
        let tgid = host.key().tgid;
        let (_, first) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("the reader woke for the tracked close");
        let (_, second) = next_close(&mut rx, tgid, &mut others)
            .await
            .expect("the tracked close itself");
        assert_eq!(
            (first.inode, second.inode),
            (ready.a_ino, ready.pipe_ino),
            "{first:?} {second:?}"
        );

        // Untracked again: the pipe's read end no longer wakes anyone.
        src.sync_stdio_inodes(&std::collections::HashSet::new());
        host.cmd(&format!("close {}", ready.r));
        let late = drain_closes(&mut rx, Duration::from_millis(1500)).await;
        assert!(late.is_empty(), "untracked after the sync: {late:?}");
        assert!(others.is_empty(), "{others:?}");
    });
}

#[test]
fn the_release_hook_attaches_where_the_kernel_allows_and_falls_back_cleanly() {
    if !privileged("the_release_hook_attaches_where_the_kernel_allows_and_falls_back_cleanly") {
        return;
    }
    // What this kernel allows, as `doctor` finds it with its own probes.
    let report = mcp_reaper::doctor::diagnose();
    let allowed = |id: CheckId| {
        report
            .checks
            .iter()
            .any(|c| c.id == id && c.status == doctor::Status::Ok)
    };
    let expected = if allowed(CheckId::Fentry) {
        Some("fentry")
    } else if allowed(CheckId::Kprobe) {
        Some("kprobe")
    } else {
        None
    };
    runtime().block_on(async {
        let mut src = EbpfSource::load(&EbpfOptions::default()).expect("eBPF loads");
        assert_eq!(
            src.release_hook(),
            expected,
            "{:?}",
            src.release_hook_reason()
        );
        // Whatever the hook did, the close tier runs (checked by read_closes).
        let (mut rx, _, _reader) = read_closes(&mut src);
        let (mut host, ready) = Host::start();
        let tgid = host.key().tgid;
        let Some(how) = expected else {
            let reason = src.release_hook_reason().unwrap_or_default();
            assert!(
                reason.contains("fentry:") && reason.contains("kprobe:"),
                "the reason names both attempts: {reason}"
            );
            println!("release hook off on this kernel ({reason}); checked the fallback only");
            // The fallback: a watched host's close still arrives.
            src.watch_host(host.key()).unwrap();
            host.cmd(&format!("close {}", ready.a));
            let mut others = Vec::new();
            let (_, seen) = next_close(&mut rx, tgid, &mut others)
                .await
                .expect("the close tier reports the close");
            assert_eq!(seen.inode, ready.a_ino);
            return;
        };
        // The hook: the host is NOT watched, so the close tier stays
        // silent; its close of `a` releases a socket whose peer (`b`) is
        // tracked stdio, and `b`'s own socket is not reported.
        src.sync_stdio_inodes(&[ready.b_ino].into_iter().collect());
        let _ = drain_closes(&mut rx, Duration::from_millis(300)).await;
        host.cmd(&format!("close {}", ready.a));
        let closes = drain_closes(&mut rx, Duration::from_secs(3)).await;
        let released: Vec<_> = closes
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ProcessEvent::Close {
                        via_release: true,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(released.len(), 1, "{how}: {closes:?}");
        let ProcessEvent::Close {
            key,
            inode,
            peer_inode,
            last_ref,
            ..
        } = released[0]
        else {
            unreachable!()
        };
        assert_eq!(
            (key.tgid, *inode, *peer_inode, *last_ref),
            (tgid, ready.a_ino, ready.b_ino, true)
        );
        drop(host);
    });
}

#[test]
fn the_agent_counts_a_watched_hosts_closes() {
    if !privileged("the_agent_counts_a_watched_hosts_closes") {
        return;
    }
    runtime().block_on(async {
        let mut agent = Agent::start(AgentOptions {
            source: SourceChoice::Ebpf,
            ebpf: EbpfOptions {
                close_tier: CloseTier::On,
                ..EbpfOptions::default()
            },
            ..AgentOptions::default()
        })
        .expect("the eBPF source loads on this kernel");
        assert_eq!(agent.active_source(), ActiveSource::Ebpf);
        let src = agent.ebpf_mut().unwrap();
        assert!(src.close_tier(), "{:?}", src.close_tier_reason());
        let (mut host, ready) = Host::start();
        let before = agent.status().events.close;
        agent.ebpf_mut().unwrap().watch_host(host.key()).unwrap();
        host.cmd(&format!("close {}", ready.a));
        host.cmd(&format!("close {}", ready.w));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while agent.status().events.close < before + 2 {
            if tokio::time::timeout_at(deadline, agent.step())
                .await
                .is_err()
            {
                break;
            }
        }
        let status = agent.status();
        assert!(
            status.events.close >= before + 2,
            "close records not counted: {:?}",
            status.events
        );
        assert!(!status.degraded, "a Close must not disturb the tracker");
    });
}

#[test]
fn without_the_close_tier_the_source_says_why_and_still_loads() {
    if !privileged("without_the_close_tier_the_source_says_why_and_still_loads") {
        return;
    }
    let src = EbpfSource::load(&EbpfOptions {
        close_tier: CloseTier::Off,
        ..EbpfOptions::default()
    })
    .expect("process programs load without the close tier");
    assert!(!src.close_tier());
    assert_eq!(src.close_tier_reason(), Some("left out (--close-tier)"));
}

#[test]
fn auto_leaves_the_close_tier_out_where_stdin_watches_run_and_on_attaches_it() {
    if !privileged("auto_leaves_the_close_tier_out_where_stdin_watches_run_and_on_attaches_it") {
        return;
    }
    // Root here has CAP_SYS_PTRACE and no security module refusing
    // pidfd_getfd: the probe passes, so `auto` means stdin watches.
    assert_eq!(mcp_reaper::stdin_watch::probe(), Ok(()));
    runtime().block_on(async {
        for (choice, attached) in [
            (CloseTier::Auto, false),
            (CloseTier::On, true),
            (CloseTier::Off, false),
        ] {
            let mut agent = Agent::start(AgentOptions {
                source: SourceChoice::Ebpf,
                ebpf: EbpfOptions {
                    close_tier: choice,
                    ..EbpfOptions::default()
                },
                ..AgentOptions::default()
            })
            .expect("the eBPF source loads on this kernel");
            let src = agent.ebpf_mut().unwrap();
            assert_eq!(src.close_tier(), attached, "{choice:?}");
            assert_eq!(
                agent.watches_stdin(),
                !attached,
                "{choice:?}: stdin watches run exactly when the close tier does not"
            );
        }
    });
}
