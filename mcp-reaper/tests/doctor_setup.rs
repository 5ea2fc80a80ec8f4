//! `doctor` on what `run` would be given: the configuration in force, the
//! metrics address and the control socket; and a report that is not
//! broken into by log lines. As root, `doctor` also loads and unloads its
//! trial programs, as it always does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

fn doctor(default_config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .arg("doctor")
        .args(args)
        .env("MCP_REAPER_DEFAULT_CONFIG", default_config)
        .env_remove("MCP_REAPER_CONFIG")
        .env_remove("MCP_REAPER_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The check named `id` in a `doctor --json` report.
fn check(out: &Output, id: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id} check in {v}"))
}

#[test]
fn doctor_checks_the_configuration_run_would_read() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("config.toml");
    let quiet = ["--json", "--listen", "off", "--control-socket", "off"];

    let out = doctor(&default, &quiet);
    let config = check(&out, "config");
    assert_eq!(config["status"], "ok", "{config}");
    assert!(
        config["detail"]
            .as_str()
            .unwrap()
            .contains("built-in defaults"),
        "{config}"
    );
    assert_ne!(out.status.code(), Some(2), "{out:?}");

    std::fs::write(&default, "[daemon]\nsource = \"kernel\"\n").unwrap();
    let out = doctor(&default, &quiet);
    let config = check(&out, "config");
    assert_eq!(config["status"], "fail", "{config}");
    let detail = config["detail"].as_str().unwrap();
    assert!(detail.contains("config.toml:2:10"), "{detail}");
    assert_eq!(out.status.code(), Some(1), "run would stop at start");
}

#[test]
fn doctor_checks_the_metrics_address_and_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("absent.toml");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let not_a_socket = dir.path().join("file");
    std::fs::write(&not_a_socket, "").unwrap();
    let out = doctor(
        &default,
        &[
            "--json",
            "--listen",
            &busy,
            "--control-socket",
            not_a_socket.to_str().unwrap(),
        ],
    );
    assert_eq!(check(&out, "metrics")["status"], "warn", "{out:?}");
    assert_eq!(check(&out, "control_socket")["status"], "fail", "{out:?}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn doctor_report_is_not_broken_into_by_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("absent.toml");
    let out = doctor(&default, &["--listen", "off", "--control-socket", "off"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("mcp-reaper doctor"), "{report}");
    assert!(report.contains("verdict: tier"), "{report}");
    assert!(
        out.stderr.is_empty(),
        "log lines beside the report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
