//! The stand-in MCP host against real servers (no root needed): the tree
//! shape hosts produce, both stdio transports, the leak after the host
//! closes its ends, and a clean tear-down by the harness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use mcp_reaper_tests::{
    host::{Session, TestHost, Transport, cmdline, comm, fd_target, is_alive, server_tree_pids},
    wait_until,
};

/// Asserts `npm exec <pkg>` -> `sh -c <bin>` -> `node <bin>` and returns
/// the node PID.
fn assert_npm_tree(s: &Session) -> u32 {
    let tree = server_tree_pids(s.pid);
    let root = cmdline(s.pid);
    assert!(root.starts_with("npm exec"), "root {} is {root:?}", s.pid);
    let shells: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|&p| p != s.pid && comm(p) == "sh" && cmdline(p).starts_with("sh -c"))
        .collect();
    assert_eq!(shells.len(), 1, "one `sh -c` under {}: {tree:?}", s.pid);
    let nodes: Vec<u32> = server_tree_pids(shells[0])
        .into_iter()
        .filter(|&p| p != shells[0] && comm(p) == "node")
        .collect();
    assert_eq!(nodes.len(), 1, "one node under sh {}: {tree:?}", shells[0]);
    let node = nodes[0];
    assert!(
        cmdline(node).contains("mcp-server-everything"),
        "node {node}: {:?}",
        cmdline(node)
    );
    assert_eq!(tree.len(), 3, "tree of {}: {tree:?}", s.pid);
    node
}

fn stdio_kind(pid: u32, fd: i32) -> String {
    let target = fd_target(pid, fd).unwrap_or_else(|| panic!("/proc/{pid}/fd/{fd} missing"));
    target.split(':').next().unwrap().to_owned()
}

#[test]
fn host_spawns_real_servers_and_leaks_on_close() {
    let mut host = TestHost::start();
    let t = Instant::now();
    let sock = host.spawn("sock", Transport::Socket, &[("MY_SESSION_ID", "sock-1")]);
    let sock_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let pipe = host.spawn("pipe", Transport::Pipe, &[]);
    let pipe_s = t.elapsed().as_secs_f64();
    eprintln!(
        "spawn+handshake: socket {sock_s:.2} s (host says {:.2}), pipe {pipe_s:.2} s (host says {:.2})",
        sock.handshake_s, pipe.handshake_s
    );

    let sock_node = assert_npm_tree(&sock);
    let pipe_node = assert_npm_tree(&pipe);

    // Stdio wiring: the server's fds 0/1 and the host's ends.
    for fd in [0, 1] {
        assert_eq!(stdio_kind(sock_node, fd), "socket");
        assert_eq!(stdio_kind(pipe_node, fd), "pipe");
    }
    assert_eq!(stdio_kind(host.pid(), sock.host_stdin_fd), "socket");
    assert_eq!(stdio_kind(host.pid(), sock.host_stdout_fd), "socket");
    assert_ne!(
        sock.host_stdin_fd, sock.host_stdout_fd,
        "one socketpair per stream"
    );
    assert_ne!(fd_target(sock_node, 0), fd_target(sock_node, 1));
    assert_eq!(stdio_kind(host.pid(), pipe.host_stdin_fd), "pipe");
    assert_eq!(stdio_kind(host.pid(), pipe.host_stdout_fd), "pipe");
    // The server's fd 0 is the one the root inherited.
    assert_eq!(fd_target(sock_node, 0), fd_target(sock.pid, 0));
    let environ = std::fs::read(format!("/proc/{sock_node}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|kv| kv == b"MY_SESSION_ID=sock-1"),
        "session env reaches the server"
    );

    assert!(host.ping("sock"));
    assert!(host.ping("pipe"));

    // Close the socket session's host ends: nobody is signalled and the
    // server ignores EOF, so the whole tree lives on (the leak).
    let sock_tree = server_tree_pids(sock.pid);
    let pipe_tree = server_tree_pids(pipe.pid);
    host.close("sock");
    assert_eq!(
        fd_target(host.pid(), sock.host_stdin_fd),
        None,
        "host fd closed"
    );
    assert_eq!(
        fd_target(host.pid(), sock.host_stdout_fd),
        None,
        "host fd closed"
    );
    std::thread::sleep(Duration::from_secs(2));
    for &p in &sock_tree {
        assert!(is_alive(p), "closed session's member {p} still runs (leak)");
    }
    assert!(!host.ping("sock"), "a closed session does not answer");
    assert!(host.ping("pipe"), "the other session still answers");

    let listed = host.list();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|s| s["id"] == "sock" && s["state"] == "closed")
    );

    // Host killed: its trees are orphaned but keep running.
    host.kill();
    std::thread::sleep(Duration::from_millis(500));
    for &p in sock_tree.iter().chain(&pipe_tree) {
        assert!(is_alive(p), "member {p} outlives its host");
    }

    drop(host);
    let survivors: Vec<u32> = sock_tree
        .iter()
        .chain(&pipe_tree)
        .copied()
        .filter(|&p| is_alive(p))
        .collect();
    assert!(
        survivors.is_empty(),
        "drop left server processes: {survivors:?}"
    );
}

#[test]
fn host_shutdown_keeps_fds_and_drop_reaps_live_host() {
    let mut host = TestHost::start();
    let s = host.spawn("s", Transport::Socket, &[]);
    let tree = server_tree_pids(s.pid);
    assert!(host.ping("s"));
    host.shutdown("s");
    // shutdown() leaves the host's fds in place.
    assert_eq!(stdio_kind(host.pid(), s.host_stdin_fd), "socket");
    assert!(!host.ping("s"), "a shut-down session does not answer");
    host.silence("s");
    let host_pid = host.pid();
    drop(host);
    assert!(!is_alive(host_pid), "host killed by drop");
    let survivors: Vec<u32> = tree.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(
        survivors.is_empty(),
        "drop left server processes: {survivors:?}"
    );
}

/// The durable leak is stdin EOF alone: server-everything@2025.4.8 ignores
/// it, but with its stdout peer also closed its next log notification (every
/// 15 s) dies on EPIPE.
#[test]
fn stdin_close_leak_outlives_log_notifications() {
    let mut host = TestHost::start();
    let half = host.spawn("half", Transport::Socket, &[]);
    let full = host.spawn("full", Transport::Pipe, &[]);
    let half_tree = server_tree_pids(half.pid);
    let full_tree = server_tree_pids(full.pid);
    host.close_stdin("half");
    host.close("full");
    assert_eq!(fd_target(host.pid(), half.host_stdin_fd), None);
    assert!(fd_target(host.pid(), half.host_stdout_fd).is_some());
    let full_gone = wait_until(Duration::from_secs(25), || {
        full_tree.iter().all(|&p| !is_alive(p))
    });
    assert!(full_gone, "fully closed server exits on its first EPIPE");
    std::thread::sleep(Duration::from_secs(1));
    for &p in &half_tree {
        assert!(is_alive(p), "stdin-closed member {p} runs on (leak)");
    }
}
