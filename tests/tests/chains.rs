//! Relay chains, remnants and escapees: a stand-in OpenClaw-shaped host
//! (`tests/hosts/chain_host.py`: host -> relay -> anchor (setsid) ->
//! server, socketpairs at every hop, a lineage socket as the server's fd 3)
//! driving real `server-everything` trees, and the in-process daemon. The
//! host side of a chain is never touched; the daemon reaps only what the
//! chain's own teardown leaves behind. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

mod common;

use common::Daemon;
use mcp_reaper::{config::Config, source::SourceChoice, trees::TreeState};
use mcp_reaper_tests::{
    host::{is_alive, npm_dir, server_tree_pids},
    kill_if_same, privileged, start_ticks, wait_until,
};
use serde_json::{Value, json};

/// Built-in server shapes are off: other hosts' `npm exec` trees on this
/// machine are none of this daemon's business. Every server here starts
/// as `chain_host.py server` (a wrapper that execs the real server).
const RULES: &str = r#"
builtin_servers = false

[[host]]
name = "chainhost"
cmdline = '(?:\S*/)?python3 \S*chain_host\.py host(?: .*)?'
relays = [ { cmdline = '(?:\S*/)?python3 \S*chain_host\.py (?:relay|anchor)(?: .*)?' } ]
lineage_fds = [3]

[[server]]
name = "chainfake"
cmdline = '(?:\S*/)?python3 \S*chain_host\.py server(?: .*)?'

[policy]
grace = "1s"
kill_after = "1s"
"#;

const GRACE: Duration = Duration::from_secs(1);
const EVERYTHING: [&str; 4] = [
    "npm",
    "exec",
    "--offline",
    "@modelcontextprotocol/server-everything",
];

fn config() -> Config {
    Config::from_toml_str(RULES, "chains-test").unwrap()
}

/// One chained session as the host reported it.
#[derive(Clone, Debug)]
struct Chain {
    id: String,
    relay: u32,
    anchor: u32,
    root: u32,
    marker: Option<String>,
}

impl Chain {
    fn escapee(&self) -> u32 {
        let m = self.marker.as_ref().expect("session has an escapee");
        assert!(
            wait_until(Duration::from_secs(15), || std::path::Path::new(m).exists()),
            "escapee of {} never started",
            self.id
        );
        std::fs::read_to_string(m).unwrap().trim().parse().unwrap()
    }
}

/// Drives `chain_host.py host`; dropping it SIGKILLs everything it started.
struct ChainHost {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    started: HashMap<u32, u64>,
    markers: Vec<String>,
}

fn script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/hosts/chain_host.py").to_string()
}

impl ChainHost {
    fn start() -> Self {
        let npm = npm_dir();
        assert!(
            npm.join("node_modules").is_dir(),
            "{} lacks node_modules",
            npm.display()
        );
        let mut child = Command::new("python3")
            .args([script().as_str(), "host"])
            .env("MCP_REAPER_NPM_DIR", &npm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut h = ChainHost {
            child,
            stdin,
            lines,
            started: HashMap::new(),
            markers: vec![],
        };
        let ready = h.answer();
        assert_eq!(ready["ready"], json!(true));
        h
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn answer(&mut self) -> Value {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(120))
            .expect("host answers");
        serde_json::from_str(&l).unwrap()
    }

    fn request(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    fn remember(&mut self, pid: u32) {
        for p in server_tree_pids(pid) {
            if let Some(s) = start_ticks(p) {
                self.started.entry(p).or_insert(s);
            }
        }
    }

    /// Starts a chained session. `wrapper`: server-wrapper options (the
    /// real server-everything is exec'd or double-forked); `fake`: the
    /// light stand-in server instead of server-everything.
    fn spawn(&mut self, id: &str, wrapper: &[&str], fake: bool, stuck: bool) -> Chain {
        let marker = wrapper
            .contains(&"--escape")
            .then(|| format!("/tmp/mcp-reaper-chain-{}-{id}", std::process::id()));
        let _ = marker.as_ref().map(std::fs::remove_file);
        let mut argv: Vec<String> = vec!["python3".into(), script(), "server".into()];
        argv.extend(wrapper.iter().map(|s| s.to_string()));
        if let Some(m) = &marker {
            argv.extend(["--marker".to_string(), m.clone()]);
            self.markers.push(m.clone());
        }
        if !fake {
            argv.extend([
                "--delay".to_string(),
                "0.5".to_string(),
                "--exec".to_string(),
            ]);
            argv.extend(EVERYTHING.iter().map(|s| s.to_string()));
        }
        let a = self.request(json!({"cmd": "spawn", "id": id, "server": argv, "stuck": stuck}));
        assert_eq!(a["ok"], json!(true), "spawn {id}: {a}");
        let c = Chain {
            id: id.into(),
            relay: a["relay"].as_u64().unwrap() as u32,
            anchor: a["anchor"].as_u64().unwrap() as u32,
            root: a["pid"].as_u64().unwrap() as u32,
            marker,
        };
        self.remember(c.relay);
        c
    }

    fn ping(&mut self, id: &str) -> bool {
        self.request(json!({"cmd": "ping", "id": id}))["ok"] == json!(true)
    }

    fn end(&mut self, id: &str) {
        let a = self.request(json!({"cmd": "end", "id": id}));
        assert_eq!(a["ok"], json!(true), "{a}");
    }
}

impl Drop for ChainHost {
    fn drop(&mut self) {
        for m in self.markers.clone() {
            if let Some(p) = std::fs::read_to_string(&m)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                self.remember(p);
            }
            let _ = std::fs::remove_file(m);
        }
        for (p, s) in &self.started {
            kill_if_same(*p, *s);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pids: &[u32]) -> bool {
    pids.iter().all(|p| is_alive(*p))
}

fn gone(pids: &[u32]) -> bool {
    pids.iter().all(|p| !is_alive(*p))
}

fn wait_live(d: &Daemon, root: u32) -> mcp_reaper::supervisor::TreeRecord {
    let ok = wait_until(Duration::from_secs(20), || {
        d.tree(root)
            .is_some_and(|t| t.state == TreeState::Live && !t.chain.is_empty())
    });
    assert!(
        ok,
        "tree {root} never live through its chain: {:?}; trees: {:?}",
        d.tree(root),
        d.read(|s| s
            .trees
            .iter()
            .map(|t| (t.root, t.state, t.chain.len()))
            .collect::<Vec<_>>())
    );
    d.tree(root).unwrap()
}

/// Sessions end by closing the top-level socket: relay and anchor tear the
/// server down themselves and the daemon reaps nothing; an anchor left
/// behind with the server (stuck) is never reaped, only the server tree
/// under it. The chain is recorded host -> relay -> anchor.
#[test]
fn chain_teardown_and_a_stuck_anchor_leave_the_host_side_untouched() {
    if !privileged("chain_teardown_and_a_stuck_anchor_leave_the_host_side_untouched") {
        return;
    }
    let d = Daemon::start(SourceChoice::Ebpf, config());
    let mut h = ChainHost::start();
    let a = h.spawn("a", &[], false, false);
    let b = h.spawn("b", &[], false, false);
    let c = h.spawn("c", &[], false, true);
    for s in [&a, &b, &c] {
        let t = wait_live(&d, s.root);
        let chain: Vec<u32> = t.chain.iter().map(|k| k.tgid).collect();
        assert_eq!(chain, vec![h.pid(), s.relay, s.anchor], "chain of {}", s.id);
        assert_eq!(t.host.map(|k| k.tgid), Some(h.pid()));
    }
    let a_all = server_tree_pids(a.relay);
    let b_all = server_tree_pids(b.relay);
    let c_server = server_tree_pids(c.root);
    assert!(
        a_all.len() >= 5 && c_server.len() >= 3,
        "{a_all:?} {c_server:?}"
    );
    h.end("a");
    assert!(
        wait_until(Duration::from_secs(15), || gone(&a_all)),
        "chain a did not tear down"
    );
    h.end("c");
    assert!(
        wait_until(Duration::from_secs(15), || gone(&c_server)),
        "c's server tree survives"
    );
    // The members can be gone a moment before the reaper files its record.
    let reap_of_c = || d.read(|s| s.reaps.iter().find(|r| r.root.tgid == c.root).cloned());
    assert!(
        wait_until(Duration::from_secs(5), || reap_of_c().is_some()),
        "c's server tree went without a reap record"
    );
    let rec = reap_of_c().unwrap();
    assert_eq!(rec.reason.as_deref(), Some("peer-released (relay)"));
    assert!(
        is_alive(c.anchor),
        "the stuck anchor is host side: never reaped"
    );
    assert!(!is_alive(c.relay), "c's relay left by itself");
    std::thread::sleep(GRACE * 4);
    assert!(alive(&b_all), "session b's chain and tree are untouched");
    assert!(h.ping("b"));
    assert!(is_alive(h.pid()));
    let reaped = d.reaped_pids();
    assert!(
        !reaped.iter().any(|p| a_all.contains(p)),
        "a tore down by itself"
    );
    assert!(!reaped.contains(&c.anchor) && !reaped.contains(&c.relay));
    assert_eq!(
        d.read(|s| s.reaps.len()),
        1,
        "{:?} a={a:?} c={c:?}",
        d.read(|s| s.reaps.clone())
    );
}

/// A host inside a released tree (a server that is itself an agent host) is
/// on the never list: when its tree is reaped, it survives. Unlike the
/// stuck anchor above (which sits above the tree's root, where the member
/// walk never goes), this host is a member the reaper meets, so only the
/// never list keeps it alive.
#[test]
fn a_host_inside_a_reaped_tree_is_never_killed() {
    if !privileged("a_host_inside_a_reaped_tree_is_never_killed") {
        return;
    }
    let d = Daemon::start(SourceChoice::Ebpf, config());
    let mut h = ChainHost::start();
    let n = h.spawn("n", &["--nested-host"], true, true);
    wait_live(&d, n.root);
    let nested = || {
        server_tree_pids(n.root)
            .into_iter()
            .find(|&p| mcp_reaper_tests::host::cmdline(p).contains("chain_host.py host"))
    };
    assert!(
        wait_until(Duration::from_secs(10), || nested().is_some()),
        "the server never started its nested host: {:?}",
        server_tree_pids(n.root)
    );
    let inner = nested().unwrap();
    h.remember(inner);
    let inner_start = start_ticks(inner);
    let others: Vec<u32> = server_tree_pids(n.root)
        .into_iter()
        .filter(|&p| p != inner)
        .collect();
    // The daemon has seen the nested host as a host before the session ends.
    std::thread::sleep(GRACE);
    h.end("n");
    let reap_of_n = || d.read(|s| s.reaps.iter().find(|r| r.root.tgid == n.root).cloned());
    assert!(
        wait_until(Duration::from_secs(15), || reap_of_n().is_some()),
        "the released tree {} was never reaped: {:?}",
        n.root,
        d.tree(n.root)
    );
    assert!(
        wait_until(Duration::from_secs(5), || gone(&others)),
        "the rest of the tree survives: {others:?}"
    );
    assert!(
        is_alive(inner) && start_ticks(inner) == inner_start,
        "the nested host {inner} was killed with its tree: {:?}",
        reap_of_n()
    );
    assert!(!d.reaped_pids().contains(&inner));
    assert!(is_alive(n.anchor), "the stuck anchor is host side");
}

/// Setsid escapees of a wrapper (one keeping its inherited fds, lineage
/// socket included, one closing them all) are untouched during the session
/// and reaped as `remnant` within grace + 1 s of its end. A launcher that
/// double-forks the server and exits is not a remnant.
#[test]
fn escapees_are_remnants_and_a_double_forked_server_is_not() {
    if !privileged("escapees_are_remnants_and_a_double_forked_server_is_not") {
        return;
    }
    let d = Daemon::start(SourceChoice::Ebpf, config());
    let mut h = ChainHost::start();
    let keep = h.spawn("keep", &["--escape", "keep"], false, false);
    let closeall = h.spawn("closeall", &["--escape", "closeall"], false, false);
    let df = h.spawn("df", &["--double-fork"], false, false);
    for s in [&keep, &closeall, &df] {
        wait_live(&d, s.root);
    }
    let escapees = [keep.escapee(), closeall.escapee()];
    for e in escapees {
        h.remember(e);
    }
    // During the session: past every timeout, nothing is touched.
    std::thread::sleep(GRACE * 5);
    assert!(alive(&escapees), "escapees of live sessions are untouched");
    assert!(h.ping("keep") && h.ping("closeall") && h.ping("df"));
    assert!(
        d.read(|s| s.reaps.is_empty()),
        "{:?}",
        d.read(|s| s.reaps.clone())
    );
    assert!(!is_alive(df.root), "the launcher exited");
    let df_server = d.tree(df.root).expect("the launcher's tree is still known");
    assert_eq!(df_server.state, TreeState::Live);

    h.end("keep");
    h.end("closeall");
    let anchors = [keep.anchor, closeall.anchor];
    assert!(
        wait_until(Duration::from_secs(15), || gone(&anchors)),
        "anchors tear down"
    );
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || gone(&escapees)),
        "escapees survive the session end"
    );
    let took = t0.elapsed();
    eprintln!("escapees reaped {took:?} after their anchors exited");
    assert!(took <= GRACE + Duration::from_secs(1), "took {took:?}");
    let reasons: Vec<Option<String>> = d.wait_reaps(2).iter().map(|r| r.reason.clone()).collect();
    assert_eq!(reasons, vec![Some("remnant".to_string()); 2]);
    // The double-forked server keeps serving past every timeout.
    std::thread::sleep(GRACE * 4);
    assert!(h.ping("df"), "the double-forked server still answers");
    assert_eq!(d.read(|s| s.reaps.len()), 2);
}

/// 20 concurrent chained sessions (light stand-in servers, each with a
/// setsid escapee), half ended: exactly the ended half's escapees are
/// reaped; no chain member of a live session is touched.
#[test]
fn twenty_chained_sessions_half_ended() {
    if !privileged("twenty_chained_sessions_half_ended") {
        return;
    }
    let d = Daemon::start(SourceChoice::Ebpf, config());
    let mut h = ChainHost::start();
    let chains: Vec<Chain> = (0..20)
        .map(|i| h.spawn(&format!("s{i}"), &["--escape", "keep"], true, false))
        .collect();
    for c in &chains {
        wait_live(&d, c.root);
    }
    let esc: Vec<u32> = chains.iter().map(Chain::escapee).collect();
    for &e in &esc {
        h.remember(e);
    }
    let (ended, live): (Vec<usize>, Vec<usize>) = (0..20).partition(|i| i % 2 == 0);
    let live_pids: Vec<u32> = live
        .iter()
        .flat_map(|&i| {
            let c = &chains[i];
            vec![c.relay, c.anchor, c.root, esc[i]]
        })
        .collect();
    for &i in &ended {
        h.end(&chains[i].id);
    }
    let ended_esc: Vec<u32> = ended.iter().map(|&i| esc[i]).collect();
    assert!(
        wait_until(Duration::from_secs(20), || gone(&ended_esc)),
        "ended escapees survive"
    );
    std::thread::sleep(GRACE * 4);
    let lost: Vec<u32> = live_pids
        .iter()
        .copied()
        .filter(|p| !is_alive(*p))
        .collect();
    assert!(lost.is_empty(), "a live session lost processes {lost:?}");
    for &i in &live {
        assert!(h.ping(&chains[i].id), "live session {i} answers");
    }
    // A plan lists the tree's root too; the anchor had killed it already.
    let ended_roots: Vec<u32> = ended.iter().map(|&i| chains[i].root).collect();
    let all_reaped = d.reaped_pids();
    let hops: Vec<u32> = chains.iter().flat_map(|c| [c.relay, c.anchor]).collect();
    assert!(
        !all_reaped
            .iter()
            .any(|p| hops.contains(p) || live_pids.contains(p))
    );
    let mut reaped: Vec<u32> = all_reaped
        .into_iter()
        .filter(|p| !ended_roots.contains(p))
        .collect();
    reaped.sort_unstable();
    let mut want = ended_esc.clone();
    want.sort_unstable();
    assert_eq!(
        reaped,
        want,
        "exactly the ended half's leftovers: {:?} {chains:?}",
        d.read(|s| s.reaps.clone())
    );
    assert!(d.read(|s| {
        s.reaps
            .iter()
            .all(|r| r.reason.as_deref() == Some("remnant"))
    }));
}
