//! The daemon in a container, run the way the shipped DaemonSet runs it:
//! the image `cargo xtask image` builds (FROM scratch, the static binary),
//! started by Podman with what deploy/kubernetes/daemonset.yaml gives its
//! container, read from that file (hostPID, its capabilities and nothing
//! else, its mounts: the host's /proc at /host/proc, BTF, tracefs, the run
//! and audit directories, the configuration; its arguments; its
//! environment), once in a network namespace of its own, as the DaemonSet
//! ships it, and once in the host's. Against a real leaky host on this
//! machine it must reach the verdicts and reaps the daemon run directly
//! reaches: released trees reaped (`peer-released`), the live one, the
//! host and everything else untouched. Without hostPID it must refuse to
//! start. Needs root, Podman and runc (`cargo xtask setup --tests`) and the
//! image (`cargo xtask image`; `cargo xtask test` builds it first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcp_reaper::control::{self, Request};
use mcp_reaper_tests::{
    host::{TestHost, Transport, host_config, is_alive, server_tree_pids},
    privileged, wait_until,
};
use serde_yaml::Value;

/// Grace + kill_after + slack: a behavioural deadline, not a benchmark.
const REAP_DEADLINE: Duration = Duration::from_secs(30);

/// The image to run: `MCP_REAPER_IMAGE`, else `cargo xtask image`'s tag.
fn image() -> String {
    std::env::var("MCP_REAPER_IMAGE")
        .unwrap_or_else(|_| format!("localhost/mcp-reaper:{}", env!("CARGO_PKG_VERSION")))
}

/// Whether the test can run: root (checked by `privileged`), podman and the
/// image. Missing either is a failure where privileged tests are required.
fn runnable(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    let exists = Command::new("podman")
        .args(["image", "exists", &image()])
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return true;
    }
    let reason = format!(
        "{test}: skipped: image {} is missing (or podman is): run `cargo xtask image`",
        image()
    );
    assert!(
        std::env::var_os("MCP_REAPER_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
        "{reason}, but MCP_REAPER_REQUIRE_PRIVILEGED=1"
    );
    eprintln!("{reason}");
    false
}

/// What the DaemonSet gives its container.
struct PodSpec {
    host_pid: bool,
    host_network: bool,
    args: Vec<String>,
    env: Vec<(String, String)>,
    caps: Vec<String>,
    read_only_root: bool,
    seccomp_unconfined: bool,
    /// (volume name, host path or `None` for a ConfigMap, mount path, ro)
    mounts: Vec<(String, Option<String>, String, bool)>,
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn daemonset() -> PodSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let ds: Value = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    let volumes = pod["volumes"].as_sequence().unwrap();
    let mounts = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap().to_owned();
            let vol = volumes.iter().find(|v| v["name"] == name.as_str()).unwrap();
            let host = vol["hostPath"]["path"].as_str().map(str::to_owned);
            let ro = m["readOnly"].as_bool().unwrap_or(false);
            (name, host, m["mountPath"].as_str().unwrap().to_owned(), ro)
        })
        .collect();
    PodSpec {
        host_pid: pod["hostPID"].as_bool().unwrap_or(false),
        host_network: pod["hostNetwork"].as_bool().unwrap_or(false),
        args: str_list(&c["args"]),
        env: c["env"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|e| {
                        let v = e["value"].as_str().unwrap_or_default();
                        (e["name"].as_str().unwrap().to_owned(), v.to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
        caps: str_list(&sc["capabilities"]["add"]),
        read_only_root: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        seccomp_unconfined: sc["seccompProfile"]["type"] == "Unconfined",
        mounts,
    }
}

/// Podman as TOOLCHAIN.md says it works here: runc, and no default ulimits
/// (root lacks CAP_SYS_RESOURCE).
fn podman(dir: &Path) -> Command {
    let conf = dir.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", conf).args(["--runtime", "runc"]);
    cmd
}

/// A container started from the DaemonSet's spec, removed on drop.
struct Pod {
    name: String,
    dir: PathBuf,
    socket: PathBuf,
    audit: PathBuf,
}

impl Pod {
    /// `podman run` of the DaemonSet's container. `host_pid` and
    /// `host_network` are the spec's unless overridden; the run and audit
    /// directories and the ConfigMap become directories under `dir`.
    fn start(dir: &Path, spec: &PodSpec, host_pid: bool, host_network: bool) -> Pod {
        let name = format!(
            "mcp-reaper-test-{}-pid{}-net{}",
            std::process::id(),
            u8::from(host_pid),
            u8::from(host_network)
        );
        let mut cmd = podman(dir);
        cmd.args(["run", "--detach", "--name", &name, "--user", "0"]);
        cmd.args(["--cap-drop", "all"]);
        for cap in &spec.caps {
            cmd.args(["--cap-add", cap]);
        }
        if host_pid {
            cmd.arg("--pid=host");
        }
        cmd.arg(if host_network {
            "--network=host"
        } else {
            "--network=none"
        });
        if spec.read_only_root {
            cmd.arg("--read-only");
        }
        if spec.seccomp_unconfined {
            cmd.args(["--security-opt", "seccomp=unconfined"]);
        }
        for (k, v) in &spec.env {
            cmd.args(["--env", &format!("{k}={v}")]);
        }
        // To see more of the daemon when this test fails, e.g.
        // MCP_REAPER_CONTAINER_LOG=info,mcp_reaper::ownership=debug.
        if let Ok(level) = std::env::var("MCP_REAPER_CONTAINER_LOG") {
            cmd.args(["--env", &format!("MCP_REAPER_LOG={level}")]);
        }
        for (vol, host, target, ro) in &spec.mounts {
            let source = match host.as_deref() {
                // Kept off the machine's own paths: a test writes only
                // under its directory.
                Some("/run/mcp-reaper") | Some("/var/log/mcp-reaper") | None => {
                    let d = dir.join(vol);
                    std::fs::create_dir_all(&d).unwrap();
                    d.display().to_string()
                }
                Some(h) => h.to_owned(),
            };
            let mode = if *ro { ":ro" } else { "" };
            cmd.args(["--volume", &format!("{source}:{target}{mode}")]);
        }
        cmd.arg(image());
        cmd.args(&spec.args);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "podman run failed: {out:?}");
        Pod {
            name,
            dir: dir.to_owned(),
            socket: dir.join("run/control.sock"),
            audit: dir.join("audit/audit.jsonl"),
        }
    }

    fn logs(&self) -> String {
        let out = podman(&self.dir)
            .args(["logs", &self.name])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The daemon's trees as its control socket shows them.
    fn status_trees(&self) -> Vec<serde_json::Value> {
        control::request(&self.socket, &Request::Status, Duration::from_secs(2))
            .ok()
            .and_then(|resp| resp.status?["trees"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The daemon's trees as (root pid, state).
    fn trees(&self) -> Vec<(u32, String)> {
        self.status_trees()
            .iter()
            .filter_map(|t| {
                let pid = u32::try_from(t["root"]["tgid"].as_u64()?).ok()?;
                Some((pid, t["state"].as_str()?.to_owned()))
            })
            .collect()
    }

    fn wait_live(&self, root: u32) {
        assert!(
            wait_until(Duration::from_secs(30), || self
                .trees()
                .contains(&(root, "live".to_owned()))),
            "tree {root} never live in the container's daemon: {:?}\n{}",
            self.trees(),
            self.logs()
        );
    }

    fn reaps(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["event"] == "reap")
            .collect()
    }

    /// Exit status once the container has stopped.
    fn wait_exit(&self) -> Option<i32> {
        let out = podman(&self.dir)
            .args(["wait", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = podman(&self.dir)
            .args(["rm", "--force", "--time", "10", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Writes the test's configuration where the DaemonSet mounts its ConfigMap.
fn write_config(dir: &Path) {
    let config = dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), host_config("1s", "1s")).unwrap();
}

/// One run of the shipped container against a leaky host: two released
/// trees (socket and pipe stdio) go, the live one and the host stay.
fn reaps_like_the_daemon_run_directly(host_network: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = daemonset();
    assert!(spec.host_pid, "the DaemonSet must run with hostPID");
    if host_network {
        // The host's network: a free port, not the default one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let i = spec.args.iter().position(|a| a == "--listen").unwrap();
        spec.args[i + 1] = format!("127.0.0.1:{port}");
    }
    write_config(dir.path());
    let pod = Pod::start(dir.path(), &spec, true, host_network);
    let mut host = TestHost::start();
    let leak = host.spawn("leak", Transport::Socket, &[]);
    let pipe = host.spawn("pipe", Transport::Pipe, &[]);
    let live = host.spawn("live", Transport::Socket, &[]);
    for s in [&leak, &pipe, &live] {
        pod.wait_live(s.pid);
    }
    let mut doomed = server_tree_pids(leak.pid);
    doomed.extend(server_tree_pids(pipe.pid));
    let kept = server_tree_pids(live.pid);
    host.close_stdin("leak");
    host.close_stdin("pipe");
    assert!(
        wait_until(REAP_DEADLINE, || doomed.iter().all(|p| !is_alive(*p))),
        "released trees survive the container's daemon: {:?}\n{:#?}\n{}",
        doomed.iter().filter(|p| is_alive(**p)).collect::<Vec<_>>(),
        pod.status_trees(),
        pod.logs()
    );
    // What must NOT be killed: the live tree, its host.
    assert!(
        kept.iter().all(|p| is_alive(*p)),
        "the live tree lost members"
    );
    assert!(host.ping("live"), "the live session must still answer");
    assert!(is_alive(host.pid()), "the host is never touched");
    assert!(
        wait_until(Duration::from_secs(10), || pod.reaps().len() >= 2),
        "{:?}",
        pod.reaps()
    );
    let reaps = pod.reaps();
    assert_eq!(reaps.len(), 2, "{reaps:?}");
    for r in &reaps {
        assert_eq!(r["reason"], "peer-released", "{r}");
    }
    assert!(
        pod.trees().contains(&(live.pid, "live".to_owned())),
        "{:?}",
        pod.trees()
    );
}

#[test]
fn the_shipped_container_reaps_released_trees_and_keeps_live_ones() {
    if !runnable("the_shipped_container_reaps_released_trees_and_keeps_live_ones") {
        return;
    }
    // As shipped: the pod's own network namespace (no hostNetwork); the
    // host's sockets are asked in the host's namespace through setns.
    assert!(!daemonset().host_network);
    reaps_like_the_daemon_run_directly(false);
    // And in the host's network namespace.
    reaps_like_the_daemon_run_directly(true);
}

#[test]
fn the_container_refuses_to_run_without_the_hosts_pid_namespace() {
    if !runnable("the_container_refuses_to_run_without_the_hosts_pid_namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let pod = Pod::start(dir.path(), &daemonset(), false, false);
    let code = pod.wait_exit();
    let logs = pod.logs();
    assert_eq!(code, Some(2), "{logs}");
    assert!(logs.contains("hostPID"), "{logs}");
}
