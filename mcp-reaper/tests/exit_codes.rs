//! Exit codes as scripts and service managers read them: each one a
//! command documents is the one it returns. No root needed: `scan` reads
//! a stand-in server this test starts itself, and `run` is only given
//! values it must refuse before starting (with, as a guard, a metrics
//! address in use, so that a value wrongly taken stops it right after
//! start, having signalled nothing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use mcp_reaper_tests::{fake_server, wait_until};

fn reaper(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(args)
        .env("MCP_REAPER_DEFAULT_CONFIG", dir.path().join("absent.toml"))
        .env_remove("MCP_REAPER_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A configuration in which the only servers are the stand-ins marked
/// `marker`, and any process that starts one is their host.
fn marker_config(dir: &Path, marker: &str) -> String {
    let path = dir.join("config.toml");
    let toml = format!(
        "presets = [\"generic\"]\nbuiltin_servers = false\n\
         [[server]]\nname = \"fake\"\ncmdline = 'bash -c # mcp-fake-server\\n# {marker}(?s:.*)'\n"
    );
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

fn scan_check(config: &str) -> Output {
    reaper(&[
        "scan",
        "--check",
        "--json",
        "--daemon-socket",
        "off",
        "--config",
        config,
    ])
}

#[test]
fn scan_check_is_0_while_the_host_holds_its_server_and_1_once_it_is_orphaned() {
    let dir = tempfile::tempdir().unwrap();
    let config = marker_config(dir.path(), "exit-codes-orphan");
    let (mut server, ours) = fake_server("# exit-codes-orphan\nwhile :; do sleep 0.2; done");
    let trees = |out: &Output| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["trees"].as_array().unwrap().clone()
    };
    let mut last = None;
    let live = wait_until(Duration::from_secs(10), || {
        let out = scan_check(&config);
        let found = trees(&out).len() == 1;
        last = Some(out);
        found
    });
    let out = last.take().unwrap();
    assert!(live, "the stand-in was never found: {out:?}");
    assert_eq!(trees(&out)[0]["state"], "live", "{out:?}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    drop(ours);
    let orphaned = wait_until(Duration::from_secs(10), || {
        let out = scan_check(&config);
        let done = trees(&out)
            .first()
            .is_some_and(|t| t["state"] == "orphaned");
        last = Some(out);
        done
    });
    let out = last.unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(orphaned, "never orphaned: {out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn scan_is_3_when_proc_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("no-proc-here");
    for check in [&["--check"][..], &[]] {
        let mut args = vec!["scan", "--daemon-socket", "off", "--proc-root"];
        args.push(proc_root.to_str().unwrap());
        args.extend_from_slice(check);
        let out = reaper(&args);
        assert_eq!(out.status.code(), Some(3), "{check:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no-proc-here"), "{err}");
        assert!(out.stdout.is_empty(), "no report: {out:?}");
    }
}

#[test]
fn run_refuses_bad_values_with_exit_2_before_starting() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let guard = [
        "--source",
        "poll",
        "--dry-run",
        "--control-socket",
        "off",
        "--state-dir",
        "off",
    ];
    for (bad, option) in [
        (
            &["--poll-interval", "0", "--listen", &busy][..],
            "--poll-interval",
        ),
        (
            &["--poll-interval", "5ms", "--listen", &busy],
            "--poll-interval",
        ),
        (
            &["--watch-capacity", "0", "--listen", &busy],
            "--watch-capacity",
        ),
        (&["--listen", "localhost"], "--listen"),
        (
            &["--audit-max-bytes", "lots", "--listen", &busy],
            "--audit-max-bytes",
        ),
    ] {
        let mut args = vec!["run"];
        args.extend_from_slice(&guard);
        args.extend_from_slice(bad);
        let out = reaper(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains(option), "{bad:?}: {err}");
        assert!(!err.contains("event source ready"), "{bad:?}: {err}");
    }
}

#[test]
fn every_command_documents_its_exit_codes_in_its_help() {
    for (command, codes) in [
        (&["run"][..], &["0", "1", "2"][..]),
        (&["scan"], &["0", "1", "2", "3"]),
        (&["doctor"], &["0", "1", "2", "3"]),
        (&["release"], &["0", "1", "2", "3"]),
        (&["config", "check"], &["0", "2"]),
        (&["config", "default"], &["0"]),
        (&["config", "presets"], &["0"]),
        (&["completions"], &["0", "2"]),
        (&["manpage"], &["0", "1", "2"]),
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = reaper(&args);
        assert_eq!(out.status.code(), Some(0), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let (_, codes_text) = help
            .split_once("Exit codes:")
            .unwrap_or_else(|| panic!("{command:?}: no exit codes in\n{help}"));
        for code in codes {
            assert!(
                codes_text
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "{command:?}: exit code {code} not described in\n{codes_text}"
            );
        }
    }
}

#[test]
fn manpage_is_1_when_a_page_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_a_file = file.join("man");
    let out = reaper(&["manpage", "--dir", under_a_file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot create"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn run_refuses_a_ring_buffer_size_the_kernel_would_refuse() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let run = |size: &str| {
        reaper(&[
            "run",
            "--source",
            "poll",
            "--dry-run",
            "--control-socket",
            "off",
            "--state-dir",
            "off",
            "--listen",
            &busy,
            "--ring-buffer-bytes",
            size,
        ])
    };
    for bad in ["3000000", "1000KiB", "2048", "0"] {
        let out = run(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("--ring-buffer-bytes") && err.contains("power of two"),
            "{bad}: {err}"
        );
    }
    // Taken: the daemon starts, and stops on the address in use.
    for good in ["4MiB", "1048576"] {
        let out = run(good);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{good}: {err}");
        assert!(err.contains("event source ready"), "{good}: {err}");
    }
}
