//! PID namespaces, with the real binary: a `release --owner PID` sent from
//! inside a host's PID namespace names the process the sender sees under
//! that number, never the daemon's process of the same number; and `run`
//! started outside the host's initial PID namespace refuses to start.
//! Needs root (`unshare`, `nsenter`, BPF).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::start_daemon;
use mcp_reaper_tests::{
    host::{TestHost, Transport, host_config, is_alive, ns_pid, server_tree_pids},
    privileged, wait_until,
};

/// Grace + kill_after + slack: a behavioural deadline, not a benchmark.
const REAP_DEADLINE: Duration = Duration::from_secs(20);

/// `mcp-reaper release ARGS` run inside the PID and mount namespaces of
/// `inside` (its /proc is the namespace's), as an operator in the
/// container would run it.
fn release_from(inside: u32, socket: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("nsenter")
        .arg(format!("--target={inside}"))
        .args(["--pid", "--mount", "--"])
        .arg(env!("CARGO_BIN_EXE_mcp-reaper"))
        .arg("release")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_release_from_inside_a_pid_namespace_names_the_senders_process() {
    if !privileged("a_release_from_inside_a_pid_namespace_names_the_senders_process") {
        return;
    }
    let _serial = common::serial();
    let (_dir, config) = common::config_dir(&host_config("1s", "1s"));
    let daemon = start_daemon(&config);
    let mut host = TestHost::start_in_namespaces();
    let mut bystander = TestHost::start();
    let a = host.spawn("a", Transport::Socket, &[]);
    let b = host.spawn("b", Transport::Socket, &[]);
    let c = bystander.spawn("c", Transport::Socket, &[]);
    let inner = ns_pid(host.pid()).unwrap();
    assert_ne!(inner, host.pid(), "the host has a PID namespace of its own");
    let (a_pids, b_pids, c_pids) = (
        server_tree_pids(a.pid),
        server_tree_pids(b.pid),
        server_tree_pids(c.pid),
    );

    // The sender's number for the host, with a's fd: a dry run matches a.
    let owner_a = format!("{inner}:{}", a.host_stdin_fd);
    let mut last = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(15), || {
            last = release_from(
                host.pid(),
                &daemon.socket,
                &["--owner", &owner_a, "--dry-run"],
            );
            last.0 == 0
        }),
        "owner {owner_a} from inside the namespace never matched: {last:?}"
    );
    assert!(last.1.contains(&a.pid.to_string()), "{last:?}");
    assert!(!last.1.contains(&b.pid.to_string()), "{last:?}");

    // What must NOT be released: the bystander's tree, named from inside
    // the namespace by the bystander's own PID, which means nothing there
    // (or another process). Refused or unmatched, never the bystander.
    let (code, out) = release_from(
        host.pid(),
        &daemon.socket,
        &["--owner", &bystander.pid().to_string()],
    );
    assert_ne!(code, 0, "the daemon's PID was taken as the sender's: {out}");
    assert!(!out.contains(&c.pid.to_string()), "{out}");

    let (code, out) = release_from(host.pid(), &daemon.socket, &["--owner", &owner_a]);
    assert_eq!(code, 0, "{out}");
    assert!(
        wait_until(REAP_DEADLINE, || a_pids.iter().all(|p| !is_alive(*p))),
        "the released tree survives: {:?}",
        a_pids.iter().filter(|p| is_alive(**p)).collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        b_pids.iter().chain(&c_pids).all(|p| is_alive(*p)),
        "a tree not named was reaped"
    );
    assert!(host.ping("b"), "the host's other session answers");
    assert!(bystander.ping("c"), "the bystander's session answers");
    assert!(is_alive(host.pid()) && is_alive(bystander.pid()));
}

#[test]
fn run_refuses_to_start_outside_the_initial_pid_namespace() {
    if !privileged("run_refuses_to_start_outside_the_initial_pid_namespace") {
        return;
    }
    let (_dir, config) = common::config_dir(&host_config("1s", "1s"));
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", "off", "--control-socket", "off"])
        .args(["--state-dir", "off", "--audit-log", "off"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        err.contains("PID namespace") && err.contains("hostPID"),
        "{err}"
    );

    // The same command in the host's namespace is not refused for it: it
    // gets past the check (and is stopped by a config error on purpose).
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(["run", "--config", "/nonexistent/mcp-reaper.toml"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("hostPID"), "{err}");
}
