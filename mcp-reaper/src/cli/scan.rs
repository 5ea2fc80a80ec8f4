//! `mcp-reaper scan`: a one-shot report of every MCP tree on the host.
//!
//! Owns: taking one /proc snapshot, building the trees, and rendering them
//! as a table grouped by host and session or as JSON (schema below, kept
//! stable: fields are only ever added). Works without the daemon and
//! without eBPF (/proc and sock_diag only).
//! Must never: signal or change anything.
//!
//! JSON schema (`schema_version` 1):
//! `{ schema_version, generated_at_unix, hosts_scanned_processes, trees: [
//!    { root: {tgid, start_ticks}, server, host: {pid, start_ticks, comm,
//!      rule, ns_pid?, net_ns?} | null, session_id | null, owner_fds: [{pid, fd}], state:
//!      "live"|"orphaned"|"suspect"|"unknown", judged_by: "scan"|"daemon",
//!      reason | null, age_seconds,
//!      rss_bytes, pss_bytes, members: [{pid, start_ticks, ppid, comm,
//!      ns_pid?, cmdline, rss_bytes, pss_bytes}], ownership: {...evidence} } ],
//!   totals: { trees, live, orphaned, suspect, unknown, orphaned_rss_bytes,
//!      orphaned_pss_bytes, total_rss_bytes, total_pss_bytes } }`

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{
    config::Config,
    judge::trees::{self, TreeState, TreeView},
    ownership::judge::SCAN_INCOMPLETE,
    procs::procscan,
};

/// Version of the JSON document; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// `scan --check`: an orphaned tree exists.
pub const EXIT_ORPHANED: u8 = 1;
/// /proc could not be read completely: no report at all, or (with
/// `--check`) a tree whose ownership is unknown because a process's fds
/// could not be read, so that "nothing orphaned" is not proved.
pub const EXIT_INCOMPLETE: u8 = 3;

/// `scan`'s exit codes, shown under its `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  report printed; with --check, no tree is orphaned and every tree's ownership was read
  1  with --check: some tree is orphaned
  2  usage or configuration error: nothing scanned
  3  /proc could not be read completely: no report when /proc could not be listed; with
     --check, also when no tree is orphaned but some tree's ownership is unknown because a
     process could not be read (reason scan-incomplete: scan as root)";

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub trees: usize,
    pub live: usize,
    pub orphaned: usize,
    pub suspect: usize,
    pub unknown: usize,
    pub orphaned_rss_bytes: u64,
    pub orphaned_pss_bytes: u64,
    pub total_rss_bytes: u64,
    pub total_pss_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    pub schema_version: u32,
    pub generated_at_unix: u64,
    pub processes_scanned: usize,
    pub processes_skipped: u64,
    pub trees: Vec<TreeView>,
    pub totals: Totals,
}

pub fn totals(trees: &[TreeView]) -> Totals {
    let mut t = Totals {
        trees: trees.len(),
        ..Totals::default()
    };
    for tree in trees {
        t.total_rss_bytes += tree.rss_bytes;
        t.total_pss_bytes += tree.pss_bytes;
        match tree.state {
            TreeState::Live => t.live += 1,
            TreeState::Orphaned => {
                t.orphaned += 1;
                t.orphaned_rss_bytes += tree.rss_bytes;
                t.orphaned_pss_bytes += tree.pss_bytes;
            }
            TreeState::Suspect => t.suspect += 1,
            TreeState::Unknown => t.unknown += 1,
        }
    }
    t
}

/// Takes the running daemon's verdicts where they need history the scan
/// lacks: a tree the daemon calls `suspect` (idle, superseded) or orphaned
/// by `session-ended`, and that the scan saw live, gets the daemon's state.
/// `daemon_trees` is the `trees` list of the control socket's status.
/// Returns how many trees changed.
pub fn merge_daemon_view(report: &mut ScanReport, daemon_trees: &[serde_json::Value]) -> usize {
    let mut changed = 0;
    for t in &mut report.trees {
        let Some(d) = daemon_trees.iter().find(|d| {
            d["root"]["tgid"].as_u64() == Some(u64::from(t.root.tgid))
                && d["root"]["start_ticks"].as_u64() == Some(t.root.start_ticks)
        }) else {
            continue;
        };
        let reason = d["reason"].as_str().map(str::to_string);
        let state = match d["state"].as_str() {
            Some("suspect") => TreeState::Suspect,
            Some("orphaned") if reason.as_deref() == Some("session-ended") => TreeState::Orphaned,
            _ => continue,
        };
        if t.state == TreeState::Live {
            t.state = state;
            t.reason = reason;
            t.judged_by = "daemon";
            changed += 1;
        }
    }
    report.totals = totals(&report.trees);
    changed
}

/// Scans `proc_root` once.
pub fn scan(config: &Config, proc_root: &Path) -> anyhow::Result<ScanReport> {
    let snapshot = procscan::snapshot(proc_root);
    if let Some(e) = snapshot.error {
        anyhow::bail!("cannot read the process table: {e}");
    }
    let trees = trees::build(&snapshot.procs, config, proc_root);
    Ok(ScanReport {
        schema_version: SCHEMA_VERSION,
        generated_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        processes_scanned: snapshot.procs.len(),
        processes_skipped: snapshot.skipped,
        totals: totals(&trees),
        trees,
    })
}

/// The exit code of `scan --check` for trees in these states (with their
/// reasons): [`EXIT_ORPHANED`] when any is orphaned, else
/// [`EXIT_INCOMPLETE`] when any could not be judged for want of a complete
/// read, else 0.
pub fn check_exit_code<'a>(trees: impl IntoIterator<Item = (TreeState, Option<&'a str>)>) -> u8 {
    let mut incomplete = false;
    for (state, reason) in trees {
        match state {
            TreeState::Orphaned => return EXIT_ORPHANED,
            TreeState::Unknown => {
                incomplete |= reason.is_some_and(|r| r.contains(SCAN_INCOMPLETE));
            }
            TreeState::Live | TreeState::Suspect => {}
        }
    }
    if incomplete { EXIT_INCOMPLETE } else { 0 }
}

/// `scan`'s exit code once `report` is printed: 0, or with `check` as
/// [`check_exit_code`] says.
#[must_use]
pub fn exit_code(report: &ScanReport, check: bool) -> u8 {
    if check {
        check_exit_code(report.trees.iter().map(|t| (t.state, t.reason.as_deref())))
    } else {
        0
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / (1024.0 * 1024.0))
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The table: trees grouped by host, then by session (owner fds).
pub fn render_human(report: &ScanReport) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<String, Vec<&TreeView>> = BTreeMap::new();
    for t in &report.trees {
        let host = t.host.as_ref().map_or_else(
            || "(no host: adopted by init)".to_string(),
            |h| {
                let inside = h.ns_pid.map(|p| format!(", {p} in its PID namespace"));
                let net = h.net_ns.as_deref().map(|n| format!(", network {n}"));
                format!(
                    "{} pid {} ({}{}{})",
                    h.rule,
                    h.pid,
                    h.comm,
                    inside.unwrap_or_default(),
                    net.unwrap_or_default()
                )
            },
        );
        groups.entry(host).or_default().push(t);
    }
    for (host, trees) in &groups {
        let _ = writeln!(out, "host {host}");
        let _ = writeln!(
            out,
            "  {:<10} {:<24} {:<9} {:<22} {:>4} {:>6} {:>8} {:>8}  SESSION / OWNER",
            "ROOT", "SERVER", "STATE", "REASON", "PROC", "AGE", "RSS", "PSS"
        );
        for t in trees {
            let owner = if t.owner_fds.is_empty() {
                "-".to_string()
            } else {
                t.owner_fds
                    .iter()
                    .map(|o| format!("{}:{}", o.pid, o.fd))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let session = t
                .session_id
                .as_deref()
                .map_or(owner.clone(), |s| format!("{s} [{owner}]"));
            let _ = writeln!(
                out,
                "  {:<10} {:<24} {:<9} {:<22} {:>4} {:>6} {:>8} {:>8}  {}",
                t.root.tgid,
                t.server,
                t.state.as_str(),
                t.reason.as_deref().unwrap_or("-"),
                t.members.len(),
                age(t.age_seconds),
                mib(t.rss_bytes),
                mib(t.pss_bytes),
                session
            );
        }
    }
    let tt = &report.totals;
    let _ = writeln!(
        out,
        "{} trees: {} live, {} orphaned, {} suspect, {} unknown; orphans hold {} RSS, {} PSS ({} processes scanned)",
        tt.trees,
        tt.live,
        tt.orphaned,
        tt.suspect,
        tt.unknown,
        mib(tt.orphaned_rss_bytes),
        mib(tt.orphaned_pss_bytes),
        report.processes_scanned
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_exit_codes_orphaned_first_then_incomplete() {
        use TreeState::{Live, Orphaned, Suspect, Unknown};
        let incomplete = Some("scan-incomplete");
        for (trees, want) in [
            (vec![], 0),
            (vec![(Live, None), (Suspect, Some("idle"))], 0),
            (vec![(Unknown, Some("peer-unseen"))], 0),
            (vec![(Live, None), (Unknown, incomplete)], EXIT_INCOMPLETE),
            (
                vec![(Unknown, Some("session-ended-unconfirmed: scan-incomplete"))],
                EXIT_INCOMPLETE,
            ),
            (
                vec![(Unknown, incomplete), (Orphaned, Some("peer-released"))],
                EXIT_ORPHANED,
            ),
            (
                vec![(Orphaned, Some("host-exited")), (Live, None)],
                EXIT_ORPHANED,
            ),
        ] {
            assert_eq!(check_exit_code(trees.clone()), want, "{trees:?}");
        }
    }
}
