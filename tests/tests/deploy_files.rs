//! Structural checks of the files under deploy/: the systemd unit's
//! capabilities, the DaemonSet's host access, the alert rules' metadata and
//! the Grafana dashboard's queries (every metric it names is one `Metrics`
//! registers). Runs unprivileged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use mcp_reaper::metrics::{Metrics, Registry};
use serde_yaml::Value;

/// What the daemon needs, and nothing more: the last two let it ask the
/// sock_diag of a container's network namespace (README, "Hosts in
/// containers").
const CAPS: [&str; 7] = [
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_KILL",
    "CAP_SYS_PTRACE",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_ADMIN",
    "CAP_NET_ADMIN",
];

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    read(rel)
        .split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

/// Values of `key=` in a unit file, words of every occurrence.
fn unit_words(unit: &str, key: &str) -> BTreeSet<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn systemd_unit_has_exactly_the_needed_capabilities() {
    let unit = read("systemd/mcp-reaper.service");
    let ambient = unit_words(&unit, "AmbientCapabilities");
    let bounding = unit_words(&unit, "CapabilityBoundingSet");
    let want: BTreeSet<String> = CAPS.iter().map(|c| (*c).to_string()).collect();
    assert_eq!(ambient, want, "AmbientCapabilities");
    assert_eq!(bounding, want, "CapabilityBoundingSet");
    // The rest of the command line (configuration, audit log) is checked
    // and run in mcp-reaper/tests/service_files.rs.
    let exec: Vec<String> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .take(2)
        .collect();
    assert_eq!(exec, ["/usr/local/bin/mcp-reaper", "run"]);
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
        "ReadWritePaths=/run/mcp-reaper /var/log/mcp-reaper",
        "RuntimeDirectory=mcp-reaper",
        "LogsDirectory=mcp-reaper",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == setting),
            "missing {setting}"
        );
    }

    // systemd's own parser, when present. The binary is not installed here,
    // so its absence is the one complaint allowed.
    let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(deploy("systemd/mcp-reaper.service"))
        .output()
    else {
        eprintln!("systemd-analyze not available: parsed checks only");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("/usr/local/bin/mcp-reaper"))
        .collect();
    assert!(complaints.is_empty(), "systemd-analyze verify:\n{text}");
}

#[test]
fn daemonset_sees_the_host() {
    let docs = yaml_docs("kubernetes/daemonset.yaml");
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let tpl = &ds["spec"]["template"];
    let ann = &tpl["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9863");
    let spec = &tpl["spec"];
    assert_eq!(spec["hostPID"], Value::Bool(true));
    assert_eq!(spec["tolerations"][0]["operator"], "Exists");
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--proc-root")
        .expect("--proc-root");
    assert_eq!(args.get(at + 1), Some(&"/host/proc"));
    let add: BTreeSet<String> = c["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| format!("CAP_{}", v.as_str().unwrap()))
        .collect();
    let want: BTreeSet<String> = CAPS.iter().map(|c| (*c).to_string()).collect();
    assert_eq!(add, want);
    assert_eq!(c["securityContext"]["privileged"], Value::Bool(false));
    assert!(c["resources"]["requests"].is_mapping() && c["resources"]["limits"].is_mapping());

    let host_path = |name: &str| {
        spec["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .map(str::to_string)
    };
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("no mount at {path}"))
    };
    for (at, host, read_only) in [
        ("/sys/kernel/btf", "/sys/kernel/btf", true),
        ("/sys/kernel/tracing", "/sys/kernel/tracing", false),
        ("/host/proc", "/proc", true),
        ("/run/mcp-reaper", "/run/mcp-reaper", false),
    ] {
        let m = mount(at);
        assert_eq!(
            host_path(m["name"].as_str().unwrap()).as_deref(),
            Some(host),
            "{at}"
        );
        if read_only {
            assert_eq!(m["readOnly"], Value::Bool(true), "{at} read-only");
        }
    }
}

#[test]
fn alert_rules_carry_severity_and_runbooks() {
    let readme = read("README.md").to_lowercase();
    let rules = &yaml_docs("prometheus/mcp-reaper-alerts.yml")[0];
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            names.insert(name.to_string());
            assert!(
                name.starts_with("MCPReaper") && !name.contains(['_', '-']),
                "{name}: CamelCase"
            );
            let sev = rule["labels"]["severity"].as_str().unwrap();
            assert!(["warning", "critical"].contains(&sev), "{name}: {sev}");
            let a = &rule["annotations"];
            assert!(
                a["summary"].is_string() && a["description"].is_string(),
                "{name}"
            );
            assert!(a.get("runbook").is_none(), "{name}: the key is runbook_url");
            let runbook = a["runbook_url"].as_str().unwrap();
            let anchor = runbook.split_once("README.md#").unwrap().1;
            assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
            assert!(
                readme.contains(&format!("### {anchor}\n")),
                "{name}: README section"
            );
        }
    }
    for want in [
        "MCPReaperLeakGrowth",
        "MCPReaperReapingFailing",
        "MCPReaperEventsLost",
        "MCPReaperDegraded",
        "MCPReaperDown",
        "MCPReaperRespawnLoop",
        "MCPReaperAuditRecordsLost",
    ] {
        assert!(names.contains(want), "{want} missing");
    }
}

/// Metric names `Metrics` registers, from a fresh registry.
fn registered() -> BTreeSet<String> {
    let registry = Registry::new();
    let m = Metrics::new(&registry, "test").unwrap();
    // The families without pre-exported series: respawns (its labels are
    // host/server pairs, known only when they respawn) and the tier info
    // (no series before a source runs).
    m.respawn("host", "server");
    m.set_tier("ebpf");
    registry
        .gather()
        .iter()
        .map(|mf| mf.name().to_string())
        .collect()
}

fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("mcp_reaper_") || t.starts_with("process_"))
        .collect()
}

#[test]
fn dashboard_queries_only_registered_metrics() {
    let known = registered();
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/mcp-reaper-dashboard.json")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    let mut exprs = Vec::new();
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}: no targets", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{}: {expr}", p["title"]);
            exprs.push(expr.to_string());
            for n in names {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s).filter(|b| known.contains(*b)))
                    .unwrap_or(n);
                assert!(
                    known.contains(base),
                    "{}: {n} is not registered",
                    p["title"]
                );
            }
        }
    }
    // The panels the dashboard promises.
    for want in [
        "mcp_reaper_trees{",
        "mcp_reaper_tree_proportional_memory_bytes",
        "mcp_reaper_trees_reaped_total",
        "mcp_reaper_detection_latency_seconds_bucket",
        "mcp_reaper_lost_events_total",
        "mcp_reaper_degraded",
        "mcp_reaper_event_source_info",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(want)),
            "no panel uses {want}"
        );
    }
    let instance_query = dash["templating"]["list"][1]["query"].as_str().unwrap();
    for n in metric_names(instance_query) {
        assert!(known.contains(n), "template variable: {n}");
    }
}

#[test]
fn alert_expressions_use_registered_metrics() {
    let known = registered();
    let rules = read("prometheus/mcp-reaper-alerts.yml");
    let rules: Value = serde_yaml::from_str(&rules).unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            for n in metric_names(expr) {
                assert!(
                    known.contains(n),
                    "{}: {n}",
                    rule["alert"].as_str().unwrap()
                );
            }
        }
    }
}
