//! The monitoring files under deploy/ against what the daemon exports and
//! how it is scraped: alert rules and the dashboard work under any scrape
//! job (the example `mcp-reaper` job and the DaemonSet's annotation-based
//! discovery alike), and every closed-set label value they name is one the
//! metrics export; the DaemonSet's probes ask the endpoint's liveness and
//! readiness routes. Runs unprivileged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use mcp_reaper::metrics::{Metrics, Registry, TIERS};
use serde_yaml::Value;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `(alert name, expression)` of every shipped rule.
fn rule_exprs() -> Vec<(String, String)> {
    let rules: Value = serde_yaml::from_str(&read("prometheus/mcp-reaper-alerts.yml")).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana/mcp-reaper-dashboard.json")).unwrap()
}

/// `(panel title, expression)` of every dashboard query.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Whether `expr` holds a label matcher on `job` (`job=`, `job!=`,
/// `job=~`, `job!~`); `by (job, ...)` and `on (job, ...)` are not matchers.
fn matches_on_job(expr: &str) -> bool {
    expr.match_indices("job").any(|(at, _)| {
        let before = expr[..at].chars().next_back();
        let word_start = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let after = expr[at + 3..].trim_start();
        word_start && (after.starts_with('=') || after.starts_with('!'))
    })
}

#[test]
fn job_matcher_detection() {
    assert!(matches_on_job(r#"up{job="mcp-reaper"}"#));
    assert!(matches_on_job(r#"x{instance="a", job =~ "$job"}"#));
    assert!(matches_on_job(r#"x{job!="node"}"#));
    assert!(!matches_on_job("sum by (job, instance) (x)"));
    assert!(!matches_on_job(r#"x{cronjob="a"}"#));
}

#[test]
fn alert_rules_match_no_job() {
    let rules = rule_exprs();
    assert!(rules.len() >= 7, "{rules:?}");
    for (name, expr) in rules {
        assert!(
            !matches_on_job(&expr),
            "{name}: a job matcher breaks under annotation-based discovery:\n{expr}"
        );
    }
}

#[test]
fn dashboard_selects_the_job_through_a_variable() {
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let job = var("job");
    let job_query = job["query"].as_str().unwrap();
    assert!(job_query.contains("mcp_reaper_"), "{job_query}");
    assert!(!matches_on_job(job_query), "{job_query}");
    assert_eq!(job["includeAll"], true);
    let instance_query = var("instance")["query"].as_str().unwrap();
    assert!(
        instance_query.contains(r#"job=~"$job""#),
        "{instance_query}"
    );
    for (title, expr) in dashboard_exprs() {
        assert!(
            expr.contains(r#"job=~"$job""#) && expr.contains(r#"instance=~"$instance""#),
            "{title}: {expr}"
        );
        assert!(
            !expr.contains(r#"job=""#),
            "{title}: hard-coded job: {expr}"
        );
    }
    assert!(
        !read("grafana/mcp-reaper-dashboard.json").contains(r#"job=\"mcp-reaper\""#),
        "no hard-coded job anywhere in the dashboard"
    );
}

/// Closed-set label values the daemon exports, by label name.
fn exported_values() -> BTreeMap<String, BTreeSet<String>> {
    let registry = Registry::new();
    let m = Metrics::new(&registry, "test").unwrap();
    m.set_tier("ebpf");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for mf in registry.gather() {
        for metric in mf.get_metric() {
            for l in metric.get_label() {
                out.entry(l.name().to_string())
                    .or_default()
                    .insert(l.value().to_string());
            }
        }
    }
    // The info metric shows one tier at a time; every tier is valid.
    out.entry("tier".into())
        .or_default()
        .extend(TIERS.iter().map(|t| (*t).to_string()));
    out
}

const CLOSED: [&str; 6] = ["reason", "outcome", "state", "kind", "tier", "cause"];

/// Every `(label, value)` in `text` for a closed-set label, regex
/// alternatives (`a|b`) split.
fn closed_set_values(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for label in CLOSED {
        for (at, _) in text.match_indices(label) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = text[at + label.len()..].trim_start();
            let Some(rest) = rest
                .strip_prefix("=~")
                .or_else(|| rest.strip_prefix('='))
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('"'))
            else {
                continue;
            };
            let value = &rest[..rest.find('"').unwrap()];
            for v in value.split('|') {
                out.push((label.to_string(), v.to_string()));
            }
        }
    }
    out
}

#[test]
fn label_values_in_rules_tests_and_dashboard_are_exported() {
    let exported = exported_values();
    for label in ["reason", "outcome", "state", "kind", "cause"] {
        assert!(exported.contains_key(label), "no {label} exported");
    }
    let mut sources: Vec<(String, String)> = vec![
        (
            "alert rules".into(),
            read("prometheus/mcp-reaper-alerts.yml"),
        ),
        (
            "rule tests".into(),
            read("prometheus/mcp-reaper-alerts.test.yml"),
        ),
    ];
    sources.extend(dashboard_exprs());
    let mut checked = 0;
    for (what, text) in &sources {
        assert!(!text.contains("dry-run"), "{what}: spelled dry-run");
        for (label, value) in closed_set_values(text) {
            let known = &exported[&label];
            assert!(
                known.contains(&value),
                "{what}: {label}=\"{value}\" is not exported; the daemon exports {known:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} label values found");
    assert!(
        closed_set_values(&read("prometheus/mcp-reaper-alerts.yml"))
            .contains(&("outcome".into(), "dry_run".into())),
        "the rules name the observe-mode outcome"
    );
}

/// `path` and port name of a probe of the DaemonSet's container.
fn daemonset_probe(probe: &str) -> (String, String) {
    let text = read("kubernetes/daemonset.yaml");
    let ds: Value = text
        .split("\n---\n")
        .map(|d| serde_yaml::from_str::<Value>(d).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let get = &c[probe]["httpGet"];
    let port = get["port"].as_str().unwrap().to_string();
    assert!(
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"].as_str() == Some(port.as_str()) && p["containerPort"] == 9863),
        "{probe}: port {port} is the metrics port"
    );
    (get["path"].as_str().unwrap().to_string(), port)
}

/// Status of `GET path` on `addr`.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: pod\r\nUser-Agent: kube-probe/1.31\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The DaemonSet's liveness probe asks whether the main loop turns and its
/// readiness probe whether tracking works, on the daemon's real endpoint:
/// a degraded daemon is unready but alive (not restarted), a daemon whose
/// loop stopped is dead.
#[tokio::test]
async fn daemonset_probes_ask_the_endpoint_the_right_questions() {
    use mcp_reaper::outputs::http::{Health, HealthFn, Heartbeat, serve_on};
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let (live, _) = daemonset_probe("livenessProbe");
    let (ready, _) = daemonset_probe("readinessProbe");
    assert_eq!((live.as_str(), ready.as_str()), ("/livez", "/readyz"));

    let degraded = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&degraded);
    let health: HealthFn = Arc::new(move || Health {
        source_attached: true,
        degraded: d.load(Ordering::Relaxed),
        detail: None,
    });
    let heartbeat = Heartbeat::new(std::time::Duration::from_millis(300));
    let registry = Registry::new();
    let _metrics = Metrics::new(&registry, "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        listener,
        registry,
        health,
        heartbeat.clone(),
        stopped,
    ));

    heartbeat.beat();
    assert_eq!(
        (status_of(addr, &live).await, status_of(addr, &ready).await),
        (200, 200)
    );
    degraded.store(true, Ordering::Relaxed);
    assert_eq!(
        (status_of(addr, &live).await, status_of(addr, &ready).await),
        (200, 503),
        "degraded: taken out of service, not restarted"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        status_of(addr, &live).await,
        503,
        "the loop stopped beating: restarted"
    );
    stop.send(()).unwrap();
    server.await.unwrap();
}
