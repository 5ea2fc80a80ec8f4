//! Which configuration the commands run with: the file named with
//! `--config`, else the one at the default path, else the built-in
//! defaults; and the `[daemon]` keys that choose the event source. The
//! default path is moved into a temporary directory (never /etc). No root
//! needed: `run` is always given a metrics address that is in use, so it
//! stops with exit 1 right after choosing its source, having signalled
//! nothing (`--dry-run`, no control socket, no state directory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The binary with its default configuration path at `default_config`
/// and no configuration named by the environment.
fn reaper(default_config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"));
    cmd.env("MCP_REAPER_DEFAULT_CONFIG", default_config)
        .env_remove("MCP_REAPER_CONFIG")
        .env_remove("MCP_REAPER_LOG")
        .stdin(Stdio::null());
    cmd
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn scan(default_config: &Path, args: &[&str]) -> Output {
    reaper(default_config)
        .args(["scan", "--daemon-socket", "off"])
        .args(args)
        .output()
        .unwrap()
}

/// Runs `run` as described in the header with `args`; returns its exit
/// code and its JSON log lines. Kills it if it is still up after 60 s.
fn run_until_it_stops(default_config: &Path, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut child = reaper(default_config)
        .args([
            "run",
            "--dry-run",
            "--log-format",
            "json",
            "--listen",
            &addr,
        ])
        .args(["--control-socket", "off", "--state-dir", "off"])
        .args(["--audit-log", "off"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_owned())))
        .collect();
    (out.status.code(), lines)
}

/// The log line whose message is `message`.
fn logged<'a>(lines: &'a [Value], message: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["message"] == message)
}

#[test]
fn scan_reads_the_file_at_the_default_path_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let default = write(dir.path(), "config.toml", "presets = [\"no-such-host\"]\n");
    let out = scan(&default, &[]);
    assert_eq!(out.status.code(), Some(2), "the default file is in force");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1:", default.display())), "{err}");

    let absent = dir.path().join("absent.toml");
    let out = scan(&absent, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no file there: the built-in defaults: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_named_config_overrides_the_default_one_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let default = write(dir.path(), "config.toml", "presets = [\"no-such-host\"]\n");
    let named = write(dir.path(), "named.toml", "[policy]\ngrace = \"3s\"\n");
    let out = scan(&default, &["--config", named.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = dir.path().join("missing.toml");
    let out = scan(&default, &["--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.toml") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn run_names_the_configuration_in_force_and_takes_its_source_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let default = write(
        dir.path(),
        "config.toml",
        "[daemon]\nsource = \"poll\"\npoll_interval = \"250ms\"\n",
    );
    let (code, lines) = run_until_it_stops(&default, &[]);
    assert_eq!(code, Some(1), "stops on the address in use: {lines:#?}");
    let config = logged(&lines, "configuration in force").expect("config logged");
    assert!(
        config["config"]
            .as_str()
            .unwrap()
            .contains(default.to_str().unwrap()),
        "{config}"
    );
    assert_eq!(config["poll_interval"], "250ms", "{config}");
    let ready = logged(&lines, "event source ready").expect("source ready");
    assert_eq!(ready["source"], "poll", "{lines:#?}");
}

#[test]
fn run_source_on_the_command_line_overrides_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let named = write(dir.path(), "named.toml", "[daemon]\nsource = \"pidfd\"\n");
    let absent = dir.path().join("absent.toml");
    let (code, lines) = run_until_it_stops(
        &absent,
        &["--config", named.to_str().unwrap(), "--source", "poll"],
    );
    assert_eq!(code, Some(1), "{lines:#?}");
    let ready = logged(&lines, "event source ready").expect("source ready");
    assert_eq!(ready["source"], "poll", "{lines:#?}");
}

#[test]
fn run_with_an_invalid_default_config_exits_2_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let default = write(
        dir.path(),
        "config.toml",
        "[daemon]\nsource = \"poll\"\npoll_interval = \"soon\"\n",
    );
    let (code, lines) = run_until_it_stops(&default, &[]);
    assert_eq!(code, Some(2), "{lines:#?}");
    assert!(logged(&lines, "event source ready").is_none(), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.as_str().is_some_and(|s| s.contains("config.toml:3:"))),
        "{lines:#?}"
    );
}
