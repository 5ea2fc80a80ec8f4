//! The shipped service files' own command lines, run by the built binary:
//! the systemd unit's `ExecStart=` and the DaemonSet's container arguments
//! name the configuration file and an audit log in a directory the service
//! can write; the configuration each is shipped with (`config default`
//! for the unit, the ConfigMap for the DaemonSet) passes `config check`;
//! the binary accepts every argument of both command lines, and `run`
//! reads the configuration they name (a bad one is exit 2, which the unit
//! does not restart). Also the unit's service-manager settings
//! (`Type=notify`, the watchdog, reload) and its network lockdown against
//! the default listen address. No root needed, and no daemon starts: each
//! run stops at the argument parser or the configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_yaml::Value;

const CONFIG: &str = "/etc/mcp-reaper/config.toml";

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn unit() -> String {
    read("systemd/mcp-reaper.service")
}

/// The value of the one `key=` line of the unit.
fn unit_value(unit: &str, key: &str) -> String {
    let values: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect();
    assert_eq!(values.len(), 1, "{key}= should appear once: {values:?}");
    values[0].trim().to_string()
}

/// Every `key=` line's value.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

/// `ExecStart=` as the argument vector systemd builds. The line is kept
/// free of quoting, specifiers, variables and prefixes, so that splitting
/// on whitespace is exactly systemd's parsing.
fn unit_argv() -> Vec<String> {
    let line = unit_value(&unit(), "ExecStart");
    assert!(
        !line.contains(['"', '\'', '%', '$', '\\']),
        "ExecStart= must stay plain words: {line}"
    );
    let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    assert!(
        argv[0].starts_with('/'),
        "an absolute path, no prefix: {line}"
    );
    argv
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    read(rel)
        .split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

fn daemonset() -> Value {
    yaml_docs("kubernetes/daemonset.yaml")
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet")
}

/// The ConfigMap shipped beside the DaemonSet: (name, its config.toml).
fn shipped_configmap() -> (String, String) {
    let cm = yaml_docs("kubernetes/daemonset.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap with the configuration");
    let name = cm["metadata"]["name"].as_str().unwrap().to_string();
    let toml = cm["data"]["config.toml"]
        .as_str()
        .expect("config.toml in the ConfigMap")
        .to_string();
    (name, toml)
}

/// The container's command line: its `command` (the image's entry point,
/// `mcp-reaper`, when absent) and `args`.
fn daemonset_argv() -> Vec<String> {
    let ds = daemonset();
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let words = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|w| w.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut argv = words(&c["command"]);
    if argv.is_empty() {
        argv.push("mcp-reaper".to_string());
    }
    argv.extend(words(&c["args"]));
    argv
}

/// The value after `flag` in `argv` (given once, as its own word).
fn flag(argv: &[String], flag: &str) -> String {
    let at: Vec<usize> = (0..argv.len()).filter(|&i| argv[i] == flag).collect();
    assert_eq!(at.len(), 1, "{flag} once in {argv:?}");
    argv.get(at[0] + 1)
        .unwrap_or_else(|| panic!("{flag} without a value"))
        .clone()
}

#[test]
fn unit_runs_with_the_config_and_an_audit_log() {
    let unit = unit();
    let argv = unit_argv();
    assert!(argv[0].ends_with("/mcp-reaper"), "{argv:?}");
    assert_eq!(argv[1], "run");
    assert_eq!(flag(&argv, "--config"), CONFIG);
    let audit = PathBuf::from(flag(&argv, "--audit-log"));
    let dir = audit.parent().unwrap();
    // The directory systemd creates for the service, and lets it write.
    let logs = unit_value(&unit, "LogsDirectory");
    assert_eq!(dir, Path::new("/var/log").join(logs), "audit log directory");
    let writable: Vec<String> = unit_values(&unit, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(
        writable.iter().any(|w| Path::new(w) == dir),
        "{} not in ReadWritePaths={writable:?}",
        dir.display()
    );
}

#[test]
fn daemonset_runs_with_its_configmap_and_an_audit_log() {
    let ds = daemonset();
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let argv = daemonset_argv();
    assert_eq!(argv[1], "run");
    let config = PathBuf::from(flag(&argv, "--config"));
    assert_eq!(config, Path::new(CONFIG));
    let audit = PathBuf::from(flag(&argv, "--audit-log"));

    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let volume = |at: &Path| {
        let m = mounts
            .iter()
            .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == at)
            .unwrap_or_else(|| panic!("nothing mounted at {}", at.display()));
        let name = m["name"].as_str().unwrap();
        let v = spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone();
        (m.clone(), v)
    };
    // The configuration: the shipped ConfigMap, with a config.toml key,
    // and required (a pod without it waits rather than exiting 2).
    let (_, v) = volume(config.parent().unwrap());
    let (cm_name, _) = shipped_configmap();
    assert_eq!(v["configMap"]["name"].as_str(), Some(cm_name.as_str()));
    assert_ne!(v["configMap"]["optional"], Value::Bool(true));
    assert_eq!(config.file_name().unwrap(), "config.toml");
    // The audit log: a writable directory of its own (the root filesystem
    // is read-only), on the node so that it outlives the pod.
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    let (m, v) = volume(audit.parent().unwrap());
    assert_ne!(
        m["readOnly"],
        Value::Bool(true),
        "audit log mount read-only"
    );
    assert!(
        v["hostPath"]["path"].is_string() || v["emptyDir"].is_mapping(),
        "audit log volume: {v:?}"
    );
}

/// Runs the binary with `args`; kills it after 30 s (none of these runs
/// may get as far as starting a daemon).
fn reaper(args: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("MCP_REAPER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcp-reaper {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn config_check(toml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, toml).unwrap();
    reaper(&[
        "config".to_string(),
        "check".to_string(),
        file.display().to_string(),
    ])
}

#[test]
fn unit_config_is_what_config_default_prints() {
    // The unit's configuration is installed with `mcp-reaper config
    // default > /etc/mcp-reaper/config.toml` (the unit's comment says so).
    assert!(
        unit().contains(&format!("mcp-reaper config default > {CONFIG}")),
        "the unit says how to install its configuration"
    );
    let out = reaper(&["config".to_string(), "default".to_string()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        mcp_reaper::config::default_toml()
    );
}

/// `argv` with the binary dropped, the configuration file replaced by
/// `config` and the audit log put in `dir`.
fn local_args(argv: &[String], config: &Path, dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    let mut value: Option<String> = None;
    for a in &argv[1..] {
        if let Some(v) = value.take() {
            args.push(v);
            continue;
        }
        value = match a.as_str() {
            "--config" => Some(config.display().to_string()),
            "--audit-log" => Some(dir.join("audit.jsonl").display().to_string()),
            _ => None,
        };
        args.push(a.clone());
    }
    args
}

/// Runs a shipped command line, stopping before anything starts: the
/// configuration it is shipped with passes `config check`, and the command
/// line itself, with an unreadable file in place of that configuration,
/// is exit 2 naming that file. The arguments are parsed before the file
/// is read, so that error shows every shipped option and value was
/// accepted, and that `run` reads the file the command line names (a bad
/// one is exit 2, which the unit does not restart).
fn accepted_by_the_binary(what: &str, argv: &[String], shipped_config: &str) {
    let out = config_check(shipped_config);
    assert!(
        out.status.success(),
        "{what}: the shipped configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "this is not TOML\n").unwrap();
    let args = local_args(argv, &broken, dir.path());
    let out = reaper(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {args:?}: {err}");
    assert!(
        err.contains(&broken.display().to_string()) && !err.contains("Usage:"),
        "{what}: the error should be the configuration's, not the arguments': {err}"
    );
    assert!(
        !dir.path().join("audit.jsonl").exists(),
        "{what}: nothing started"
    );
}

#[test]
fn unit_command_line_is_accepted_by_the_binary() {
    accepted_by_the_binary(
        "ExecStart=",
        &unit_argv(),
        mcp_reaper::config::default_toml(),
    );
}

#[test]
fn daemonset_command_line_is_accepted_by_the_binary() {
    let (_, configmap) = shipped_configmap();
    accepted_by_the_binary("the DaemonSet", &daemonset_argv(), &configmap);
}

#[test]
fn unit_tells_systemd_when_it_is_ready_and_alive() {
    let unit = unit();
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit_value(&unit, key), want, "{key}=");
    }
    // A bad configuration (exit 2) is not restarted in a loop.
    let prevent = unit_value(&unit, "RestartPreventExitStatus");
    assert!(prevent.split_whitespace().any(|s| s == "2"), "{prevent}");
    // Keep-alives go out at half the timeout; the loop turns many times a
    // second, so anything from 10 s up is a loop that is stuck.
    let watchdog = unit_value(&unit, "WatchdogSec");
    let secs: u64 = watchdog
        .strip_suffix('s')
        .unwrap_or(&watchdog)
        .parse()
        .unwrap();
    assert!((10..=300).contains(&secs), "WatchdogSec={watchdog}");
}

#[test]
fn unit_network_lockdown_fits_the_listen_address() {
    let unit = unit();
    let listen = mcp_reaper::config::Config::default()
        .daemon
        .listen
        .expect("a default listen address");
    // The unit runs with the documented default: loopback only.
    assert!(listen.ip().is_loopback(), "{listen}");
    assert!(!unit_argv().iter().any(|a| a == "--listen"));
    assert_eq!(unit_value(&unit, "IPAddressDeny"), "any");
    assert_eq!(unit_value(&unit, "IPAddressAllow"), "localhost");
    assert_eq!(unit_value(&unit, "SocketBindDeny"), "any");
    assert_eq!(
        unit_value(&unit, "SocketBindAllow"),
        format!("tcp:{}", listen.port())
    );
    assert_eq!(unit_value(&unit, "PrivateMounts"), "yes");
    // The notification socket is AF_UNIX.
    let families = unit_value(&unit, "RestrictAddressFamilies");
    assert!(families.split_whitespace().any(|f| f == "AF_UNIX"));
}
