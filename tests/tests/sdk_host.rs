//! The most common real host shape: the official TypeScript SDK
//! (`@modelcontextprotocol/sdk`, `StdioClientTransport`) spawning
//! `npm exec --offline` servers and ending them with `client.close()`,
//! which ends stdin, then SIGTERMs and SIGKILLs `npm exec` only, so `sh -c`
//! and `node` below it survive (HOSTS.md). Real host, real servers, real
//! kernel and signals. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::Daemon;
use mcp_reaper::{config::Config, source::SourceChoice};
use mcp_reaper_tests::{
    host::{SERVER_EVERYTHING, is_alive, server_tree_pids},
    privileged,
    sdk::{SDK_HOST_RULE, SdkHost},
    start_ticks, wait_until,
};

/// Longer than the SDK's 2 s wait between ending stdin and its SIGTERM,
/// so the host always kills each tree's root before the daemon acts: the
/// survivors must be reaped as the remnant they are.
const GRACE: Duration = Duration::from_secs(3);
const KILL_AFTER: Duration = Duration::from_secs(1);
/// Slack on top of grace + kill_after: a behavioural deadline.
const MARGIN: Duration = Duration::from_secs(10);

/// No built-in host presets: the SDK host is named by its own rule, and
/// the project's built-in server shapes (`npm exec`, `node .../.bin/...`)
/// find the trees. The `generic` preset's path is covered by
/// `classify`'s unit tests.
fn config() -> Config {
    let text = format!(
        "presets = []\n{SDK_HOST_RULE}\n[policy]\ngrace = \"{}s\"\nkill_after = \"{}s\"\n",
        GRACE.as_secs(),
        KILL_AFTER.as_secs()
    );
    Config::from_toml_str(&text, "sdk-test").unwrap()
}

fn identity(pids: &[u32]) -> Vec<(u32, Option<u64>)> {
    pids.iter().map(|&p| (p, start_ticks(p))).collect()
}

/// Nine SDK sessions of server-everything@2025.4.8 (it ignores stdin EOF):
/// the first eight, the host's first session included, closed with
/// `client.close()`; the ninth kept open and in use. Each tree is rooted
/// at the `npm exec` the SDK spawned, owned by the SDK host; every closed
/// session's whole tree (`npm exec`, `sh`, `node`) is gone within grace +
/// kill_after + margin of the close; the open session still answers with
/// the same processes, and the host lives.
///
/// On the code before launchers were placed in their server's tree and
/// remnants were judged by stdin, this failed: the closed trees rooted at
/// `npm exec` were judged live once the SDK killed their root (the host
/// still reads the survivors' stdout), and `node` lived on.
#[test]
fn sdk_closed_sessions_are_reaped_whole_and_the_open_one_lives() {
    if !privileged("sdk_closed_sessions_are_reaped_whole_and_the_open_one_lives") {
        return;
    }
    let daemon = Daemon::start(SourceChoice::Ebpf, config());
    let mut host = SdkHost::start();
    let ids: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
    let roots: Vec<u32> = ids
        .iter()
        .map(|id| host.spawn(id, SERVER_EVERYTHING))
        .collect();
    for &root in &roots {
        daemon.wait_tracked_live(root);
        let rec = daemon.tree(root).expect("tracked");
        assert_eq!(
            rec.host.map(|h| h.tgid),
            Some(host.pid()),
            "tree {root}: the SDK host owns it, not a launcher: {rec:?}"
        );
    }
    let (open_id, open_root) = (ids[8].clone(), roots[8]);
    let open_before = identity(&server_tree_pids(open_root));
    assert!(
        open_before.len() >= 3,
        "npm exec -> sh -> node: {open_before:?}"
    );
    let closed: Vec<Vec<u32>> = roots[..8].iter().map(|&r| server_tree_pids(r)).collect();
    for t in &closed {
        assert!(t.len() >= 3, "npm exec -> sh -> node: {t:?}");
    }
    let doomed: Vec<u32> = closed.concat();

    host.close(&ids[..8]);
    let closed_at = Instant::now();
    assert!(
        host.ping(&open_id),
        "the open session answers while the others close"
    );
    let deadline = GRACE + KILL_AFTER + MARGIN;
    let gone = wait_until(deadline, || doomed.iter().all(|&p| !is_alive(p)));
    let survivors: Vec<(u32, String)> = doomed
        .iter()
        .filter(|&&p| is_alive(p))
        .map(|&p| (p, mcp_reaper_tests::host::cmdline(p)))
        .collect();
    assert!(
        gone,
        "closed sessions' processes alive {:?} after their close returned: {survivors:?}; \
         daemon's trees: {:?}",
        closed_at.elapsed(),
        daemon.read(|s| s
            .trees
            .iter()
            .map(|t| (t.root, t.host, t.state, t.reason.clone()))
            .collect::<Vec<_>>())
    );
    eprintln!(
        "closed trees gone {:?} after close returned",
        closed_at.elapsed()
    );

    // The open session: same processes, still answering; the host lives.
    assert!(host.ping(&open_id), "the open session still answers");
    assert_eq!(
        identity(&server_tree_pids(open_root)),
        open_before,
        "the open session's processes are the same ones"
    );
    assert!(is_alive(host.pid()), "the host is never touched");
    // A reap's members are gone a moment before its record is filed.
    let reaps = daemon.wait_reaps(closed.len());
    let reaped = daemon.reaped_pids();
    let spared: Vec<u32> = open_before
        .iter()
        .map(|(p, _)| *p)
        .chain([host.pid()])
        .collect();
    assert!(
        !reaped.iter().any(|p| spared.contains(p)),
        "the daemon reaped part of the open session or the host: {reaped:?}"
    );
    // This daemon did it: each closed session's server is in its reaps. (A
    // reaper running elsewhere on the machine would also end these trees.)
    for t in &closed {
        let server = *t.last().expect("a tree has members");
        assert!(
            reaped.contains(&server),
            "node {server} of closed tree {t:?} was not reaped by this daemon: {reaps:?}"
        );
    }
}
