//! The shipped Prometheus configuration and alert rules against a real leak:
//! Debian's `/usr/bin/prometheus` scrapes the real daemon while real MCP
//! servers leak under the stand-in host, then the daemon is restarted in
//! enforce mode and the leak (and its alert) must end. Needs root and
//! Prometheus (`cargo xtask setup --tests` installs it).
//!
//! Time compression of the shipped rules (`deploy/prometheus/
//! mcp-reaper-alerts.yml`), applied to every rule by [`compress_rules`]:
//! - `for:` becomes `2s` (the shipped rules wait 5 to 15 minutes);
//! - in `expr`, range selectors `[Nm]` become `[Ns]` and `[Nh]` become
//!   `[Nm]`, and `offset Nm` becomes `offset Ns`: minutes become seconds.
//!   For MCPReaperLeakGrowth that is `offset 30m` -> `offset 30s`.
//! - Subqueries (`[1h:5m]`, LeakGrowth's memory branch) are left as
//!   shipped: their 6-hour prediction horizon is not a window, so a
//!   compressed `[1m:5s]` would extrapolate the first seconds of any
//!   orphan's memory by 6 hours and fire on it. As shipped, the subquery
//!   has at most one point in a run shorter than 5 minutes, so that branch
//!   stays empty and the growth branch alone is under test.
//!   Metric names, label matchers, aggregations and thresholds are the
//!   shipped ones; the test prints every expression it changed.
//!
//! LeakGrowth's growth branch needs more than 2 orphaned or suspect trees
//! (`> 2`, shipped), so the test leaks two trees first and asserts the
//! alert stays silent although the count rose, then leaks a third and
//! asserts pending, then firing.
//!
//! Other daemons running on the machine at the same time (another
//! privileged test run) see the same stand-in host trees and would skew
//! the counts: run this test alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_reaper_tests::{
    host::{TestHost, Transport, cmdline, is_alive, server_tree_pids},
    privileged,
};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const SHIPPED_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/prometheus.yml"
);
const SHIPPED_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/mcp-reaper-alerts.yml"
);
const LEAK_ALERT: &str = "MCPReaperLeakGrowth";
/// The compressed `for:` of every rule.
const FOR: &str = "2s";
/// Behavioural deadlines, not performance assertions.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(500);

/// The host rule of tests/tests/reap.rs, narrowed to this checkout's host
/// script (no presets), so stand-in hosts of other checkouts stay out.
fn host_rule() -> String {
    let script = regex::escape(&mcp_reaper_tests::host::host_script().to_string_lossy());
    format!(
        r#"
presets = []

[[host]]
name = "testhost"
cmdline = '(?:\S*/)?python3 {script}(?: .*)?'
session_env = ["MCP_TEST_SESSION"]

[policy]
grace = "1s"
kill_after = "1s"
"#
    )
}

const OBSERVE: &str = r#"
[policy.actions]
peer-released = "observe"
"#;

/// The growth branch of the shipped LeakGrowth expression, compressed.
const GROWTH: &str = r#"(
    sum by (job, instance) (mcp_reaper_trees{state=~"orphaned|suspect"})
  -
    sum by (job, instance) (mcp_reaper_trees{state=~"orphaned|suspect"} offset 30s)
) > 0"#;

// ---------------------------------------------------------------------------
// Rule compression

fn shrink_unit(unit: &str) -> &'static str {
    if unit == "h" { "m" } else { "s" }
}

/// Minutes become seconds (and hours minutes) in range selectors and
/// offsets; subqueries `[range:step]` are not matched.
fn compress_expr(expr: &str) -> String {
    let range = regex::Regex::new(r"\[(\d+)([mh])\]").unwrap();
    let offset = regex::Regex::new(r"\boffset(\s+)(\d+)([mh])\b").unwrap();
    let expr = range.replace_all(expr, |c: &regex::Captures<'_>| {
        format!("[{}{}]", &c[1], shrink_unit(&c[2]))
    });
    offset
        .replace_all(&expr, |c: &regex::Captures<'_>| {
            format!("offset{}{}{}", &c[1], &c[2], shrink_unit(&c[3]))
        })
        .into_owned()
}

/// The shipped rules with every `for:` set to [`FOR`] and every expression
/// passed through [`compress_expr`]. Prints what changed.
fn compress_rules(shipped: &str) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(shipped).expect("shipped rules parse");
    let mut alerts = Vec::new();
    for group in doc["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?")
                .to_owned();
            if let Some(shipped_for) = rule.get("for").and_then(|v| v.as_str()) {
                eprintln!("rule {name}: for {shipped_for} -> {FOR}");
                rule["for"] = FOR.into();
            }
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            let compressed = compress_expr(&expr);
            if compressed != expr {
                eprintln!("rule {name}: expr compressed to:\n{compressed}");
            }
            rule["expr"] = compressed.into();
            alerts.push(name);
        }
    }
    assert!(
        alerts.iter().any(|a| a == LEAK_ALERT),
        "the shipped rules no longer define {LEAK_ALERT}: {alerts:?}"
    );
    serde_yaml::to_string(&doc).unwrap()
}

/// The shipped prometheus.yml, pointed at this test's daemon and rules,
/// scraping and evaluating every second.
fn prometheus_config(shipped: &str, target: &str, rules: &Path) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(shipped).expect("shipped config parses");
    doc["global"]["scrape_interval"] = "1s".into();
    doc["global"]["scrape_timeout"] = "1s".into();
    doc["global"]["evaluation_interval"] = "1s".into();
    doc["rule_files"] = serde_yaml::Value::Sequence(vec![rules.to_string_lossy().as_ref().into()]);
    let jobs = doc["scrape_configs"]
        .as_sequence_mut()
        .expect("scrape_configs");
    assert_eq!(jobs.len(), 1, "one shipped scrape job");
    assert_eq!(jobs[0]["job_name"].as_str(), Some("mcp-reaper"));
    jobs[0]["static_configs"] =
        serde_yaml::from_str(&format!("- targets: [\"{target}\"]")).unwrap();
    serde_yaml::to_string(&doc).unwrap()
}

#[test]
fn compression_keeps_expressions_but_minutes() {
    assert_eq!(compress_expr("x[15m] offset 30m"), "x[15s] offset 30s");
    assert_eq!(compress_expr("increase(x[1h])"), "increase(x[1m])");
    assert_eq!(
        compress_expr("f(x[1h:5m], 6 * 3600)"),
        "f(x[1h:5m], 6 * 3600)"
    );
    let rules = compress_rules(&std::fs::read_to_string(SHIPPED_RULES).unwrap());
    assert!(rules.contains("offset 30s"), "{rules}");
    assert!(!rules.contains("for: 15m"), "{rules}");
}

// ---------------------------------------------------------------------------
// Plain HTTP/1.1 client

fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body).ok_or("bad chunked body")?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        let data = b.get(eol + 2..eol + 2 + size)?;
        out.extend_from_slice(data);
        b = b.get(eol + 4 + size..)?;
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Polls `f` every [`POLL`] until it returns Ok or [`DEADLINE`] passes;
/// panics with the last error then.
fn poll<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => {
                eprintln!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
                return v;
            }
            Err(e) if start.elapsed() >= DEADLINE => {
                panic!("{what}: not within {DEADLINE:?}; last seen: {e}")
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// SIGTERM, up to 10 s for a clean exit, then SIGKILL; always reaped.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: kill(2) of our own unreaped child: its PID cannot be reused.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// Prometheus

struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &Path) -> Prometheus {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("prometheus.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {PROMETHEUS}: {e}"));
        let mut p = Prometheus { child, addr, log };
        poll("prometheus ready", || {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", tail(&p.log, 30));
            }
            match http_get(&p.addr, "/-/ready")? {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}")),
            }
        });
        p
    }

    fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) = http_get(&self.addr, path)?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{path}: {code} {body}"));
        }
        Ok(v["data"].clone())
    }

    /// The result of an instant query.
    fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(q)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query that yields at most one sample.
    fn value(&self, q: &str) -> Result<Option<f64>, String> {
        let r = self.query(q)?;
        match r.as_slice() {
            [] => Ok(None),
            [one] => one["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("{q}: bad sample {one}")),
            _ => Err(format!("{q}: more than one series: {r:?}")),
        }
    }

    /// Waits until `q` yields exactly `want`.
    fn wait_value(&self, q: &str, want: f64) {
        poll(&format!("{q} == {want}"), || match self.value(q)? {
            Some(v) if v == want => Ok(()),
            other => Err(format!("{other:?}")),
        });
    }

    /// States (`pending`, `firing`) of the active alerts named `name`.
    fn alert_states(&self, name: &str) -> Result<Vec<String>, String> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name)
            .map(|a| a["state"].as_str().unwrap_or("?").to_owned())
            .collect())
    }

    /// Every active alert as `name=state`, for the log.
    fn all_alerts(&self) -> String {
        match self.api("/api/v1/alerts") {
            Ok(d) => d["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| format!("{}={}", a["labels"]["alertname"], a["state"]))
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => e,
        }
    }

    /// Earliest sample time of `ALERTS{alertname, alertstate}` in the last
    /// 10 minutes of the TSDB.
    fn first_seen(&self, name: &str, state: &str) -> Option<f64> {
        let q = format!("ALERTS{{alertname=\"{name}\",alertstate=\"{state}\"}}[10m]");
        self.query(&q)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v[0].as_f64())
            .reduce(f64::min)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus log tail:\n{}", tail(&self.log, 10));
        }
        stop(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// The daemon binary

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, phase: &str, config: &Path, listen: &str) -> Daemon {
        let log = dir.join(format!("daemon-{phase}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
            .args([
                "run",
                "--source",
                "ebpf",
                "--log-format",
                "json",
                "--config",
            ])
            .arg(config)
            .args(["--listen", listen, "--control-socket"])
            .arg(dir.join("c.sock"))
            .arg("--audit-log")
            .arg(dir.join(format!("audit-{phase}.jsonl")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, log };
        poll(&format!("daemon ({phase}) ready"), || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("daemon exited ({status}):\n{}", tail(&d.log, 30));
            }
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            if text.lines().any(|l| l.contains("\"ready\"")) {
                Ok(())
            } else {
                Err("no ready line yet".into())
            }
        });
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon log tail:\n{}", tail(&self.log, 40));
        }
        stop(&mut self.child);
    }
}

/// Records the other stand-in hosts that run on the machine during the
/// test: their trees are counted by this daemon too (the counters have no
/// host label), and their daemons may act on this test's trees. Printed if
/// the test fails.
struct Neighbours {
    seen: Arc<Mutex<BTreeMap<u32, String>>>,
    stop: Arc<AtomicBool>,
    own_host: Option<u32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Neighbours {
    fn watch() -> Neighbours {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    let cmd = cmdline(pid);
                    if cmd.contains("stdio_host.py") || cmd.contains("mcp-reaper run") {
                        seen2.lock().unwrap().entry(pid).or_insert(cmd);
                    }
                }
                std::thread::sleep(POLL);
            }
        });
        Neighbours {
            seen,
            stop,
            own_host: None,
            thread: Some(thread),
        }
    }
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::thread::panicking() {
            let own = std::process::id();
            let others: Vec<String> = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(pid, cmd)| {
                    Some(**pid) != self.own_host
                        && !(cmd.contains("mcp-reaper run") && parent_of(**pid) == Some(own))
                })
                .map(|(pid, cmd)| format!("{pid} {cmd}"))
                .collect();
            if !others.is_empty() {
                eprintln!(
                    "--- other stand-in hosts or daemons ran during this test; their trees \
                     skew the counts and their daemons may act on this test's trees, so \
                     run it alone:\n{}",
                    others.join("\n")
                );
            }
        }
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn prometheus_available(test: &str) -> bool {
    if Path::new(PROMETHEUS).is_file() {
        return true;
    }
    let reason = format!(
        "{test}: skipped: {PROMETHEUS} is missing (`cargo xtask setup --tests` installs it)"
    );
    if std::env::var_os("MCP_REAPER_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{reason}, but MCP_REAPER_REQUIRE_PRIVILEGED=1");
    }
    eprintln!("{reason}");
    false
}

#[test]
fn prometheus_sees_a_real_leak_alerts_on_it_and_sees_it_reaped() {
    const TEST: &str = "prometheus_sees_a_real_leak_alerts_on_it_and_sees_it_reaped";
    if !privileged(TEST) || !prometheus_available(TEST) {
        return;
    }
    let started = Instant::now();
    let mut neighbours = Neighbours::watch();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // Observe mode for peer-released; the enforce config is the same file
    // without the override.
    let observe_config = dir.join("observe.toml");
    let enforce_config = dir.join("enforce.toml");
    write_file(&observe_config, &format!("{}{OBSERVE}", host_rule()));
    write_file(&enforce_config, &host_rule());
    let listen = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon::start(dir, "observe", &observe_config, &listen);

    let rules = dir.join("mcp-reaper-alerts.yml");
    write_file(
        &rules,
        &compress_rules(&std::fs::read_to_string(SHIPPED_RULES).unwrap()),
    );
    let prom_config = dir.join("prometheus.yml");
    write_file(
        &prom_config,
        &prometheus_config(
            &std::fs::read_to_string(SHIPPED_CONFIG).unwrap(),
            &listen,
            &rules,
        ),
    );
    let prom = Prometheus::start(dir, &prom_config);
    prom.wait_value(r#"up{job="mcp-reaper"}"#, 1.0);

    // Four real sessions; three will leak, one stays live.
    let mut host = TestHost::start();
    neighbours.own_host = Some(host.pid());
    let plan = [
        ("leak0", Transport::Socket),
        ("leak1", Transport::Pipe),
        ("leak2", Transport::Socket),
        ("live", Transport::Pipe),
    ];
    let mut roots = Vec::new();
    for (id, transport) in plan {
        let sid = format!("prom-e2e-{id}");
        let s = host.spawn(id, transport, &[("MCP_TEST_SESSION", sid.as_str())]);
        roots.push(s.pid);
    }
    let trees = |state: &str| {
        format!(r#"sum(mcp_reaper_trees{{job="mcp-reaper",host="testhost",state="{state}"}})"#)
    };
    let detected =
        r#"sum(mcp_reaper_orphans_detected_total{job="mcp-reaper",reason="peer_released"})"#;
    prom.wait_value(&trees("live"), 4.0);
    // The growth branch compares with 30 s ago: wait for that much history,
    // so the silence asserted below is the threshold's, not missing data.
    poll("30 s of history for the offset", || {
        match prom.value(
            r#"sum by (job, instance) (mcp_reaper_trees{state=~"orphaned|suspect"} offset 30s)"#,
        )? {
            Some(_) => Ok(()),
            None => Err("no sample 30 s ago yet".into()),
        }
    });
    let leak_pids: Vec<u32> = roots[..3]
        .iter()
        .flat_map(|&r| server_tree_pids(r))
        .collect();
    let live_pids = server_tree_pids(roots[3]);
    assert!(
        leak_pids.len() >= 9,
        "npm exec -> sh -> node each: {leak_pids:?}"
    );

    // Two leaks: seen, counted, but not above the shipped threshold (> 2).
    host.close_stdin("leak0");
    host.close_stdin("leak1");
    prom.wait_value(&trees("orphaned"), 2.0);
    prom.wait_value(&trees("live"), 2.0);
    prom.wait_value(detected, 2.0);
    let growth = prom.query(GROWTH).unwrap();
    assert!(
        !growth.is_empty(),
        "the orphan count rose within 30 s, so the growth term must hold"
    );
    std::thread::sleep(Duration::from_secs(3)); // > `for` + evaluation interval
    assert_eq!(
        prom.alert_states(LEAK_ALERT).unwrap(),
        Vec::<String>::new(),
        "2 orphans are not above the shipped threshold of 2"
    );
    assert_eq!(prom.first_seen(LEAK_ALERT, "pending"), None);

    // The third leak crosses it: pending, then firing.
    host.close_stdin("leak2");
    prom.wait_value(&trees("orphaned"), 3.0);
    prom.wait_value(&trees("live"), 1.0);
    prom.wait_value(detected, 3.0);
    let mut seen_live = Vec::new();
    poll(&format!("{LEAK_ALERT} firing"), || {
        let states = prom.alert_states(LEAK_ALERT)?;
        seen_live.extend(states.iter().cloned());
        if states.iter().any(|s| s == "firing") {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    });
    let pending = prom.first_seen(LEAK_ALERT, "pending");
    let firing = prom.first_seen(LEAK_ALERT, "firing");
    eprintln!(
        "{LEAK_ALERT}: states polled {seen_live:?}; ALERTS pending from {pending:?}, firing from {firing:?}"
    );
    let (Some(pending), Some(firing)) = (pending, firing) else {
        panic!("ALERTS must record pending and firing: {pending:?} {firing:?}")
    };
    assert!(
        pending < firing,
        "pending ({pending}) before firing ({firing})"
    );
    prom.wait_value(r#"up{job="mcp-reaper"}"#, 1.0);
    assert!(
        leak_pids.iter().all(|p| is_alive(*p)),
        "observe mode must signal nothing"
    );
    eprintln!("alerts at the end of observe mode: {}", prom.all_alerts());

    // Enforce: the same configuration without the observe override.
    stop(&mut daemon.child);
    drop(daemon);
    let restarted = Instant::now();
    let _daemon = Daemon::start(dir, "enforce", &enforce_config, &listen);
    poll("the three leaked trees reaped", || {
        let alive: Vec<u32> = leak_pids.iter().copied().filter(|p| is_alive(*p)).collect();
        if alive.is_empty() {
            Ok(())
        } else {
            Err(format!("alive: {alive:?}"))
        }
    });
    assert!(
        live_pids.iter().all(|p| is_alive(*p)),
        "the live tree is never touched: {live_pids:?}"
    );
    assert!(host.ping("live"), "the live session must still answer");
    assert!(is_alive(host.pid()), "the host is never touched");
    prom.wait_value(
        r#"sum(mcp_reaper_trees_reaped_total{job="mcp-reaper",reason="peer_released"})"#,
        3.0,
    );
    assert_eq!(
        prom.value(
            r#"sum(mcp_reaper_trees_reaped_total{job="mcp-reaper",reason="peer_released",outcome=~"terminated|killed"})"#
        )
        .unwrap(),
        Some(3.0),
        "every reap ended by a signal of the reaper"
    );
    // testhost's orphaned series goes away with its last tree.
    prom.wait_value(&format!("{} or on() vector(0)", trees("orphaned")), 0.0);
    prom.wait_value(&trees("live"), 1.0);
    poll(&format!("{LEAK_ALERT} resolved"), || {
        let states = prom.alert_states(LEAK_ALERT)?;
        if states.is_empty() {
            Ok(())
        } else {
            Err(format!("{states:?}"))
        }
    });
    prom.wait_value(r#"up{job="mcp-reaper"}"#, 1.0);
    eprintln!(
        "alerts at the end: [{}]; enforce phase {:.1}s, whole test {:.1}s",
        prom.all_alerts(),
        restarted.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(prom);
    assert!(host.ping("live"));
}
