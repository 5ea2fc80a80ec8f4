//! `mcp-reaper scan`: a one-shot report of every MCP tree on the host.
//!
//! Owns: taking one /proc snapshot, building the trees (the standalone
//! answer; `scan_source` decides when a daemon answers instead), and
//! rendering either answer as a table grouped by host and session or as
//! JSON (schema below, kept stable: fields are only ever added). The
//! standalone answer works without the daemon and without eBPF (/proc and
//! sock_diag only).
//! Must never: signal or change anything.
//!
//! JSON schema (`schema_version` 1):
//! `{ schema_version, source: "daemon"|"standalone", daemon?: {pid, tier,
//!    degraded, memory_max_age_seconds}, generated_at_unix,
//!    processes_scanned, processes_skipped, trees: [
//!    { root: {tgid, start_ticks}, server, host: {pid, start_ticks, comm,
//!      rule, ns_pid?, net_ns?} | null, session_id | null, owner_fds: [{pid, fd}], state:
//!      "live"|"orphaned"|"suspect"|"unknown", judged_by: "scan"|"daemon",
//!      reason | null, age_seconds,
//!      rss_bytes, pss_bytes, members: [{pid, start_ticks, ppid, comm,
//!      ns_pid?, cmdline, rss_bytes, pss_bytes}], ownership: {...evidence}
//!      | null (daemon), daemon?: {action, decision, orphaned_for_seconds,
//!      grace_left_seconds, idle_for_seconds, reaping, released_by} } ],
//!   totals: { trees, live, orphaned, suspect, unknown, orphaned_rss_bytes,
//!      orphaned_pss_bytes, total_rss_bytes, total_pss_bytes } }`

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use crate::{
    config::Config,
    judge::trees::{self, ReportRows, SOURCE_STANDALONE, TreeRow, TreeState},
    ownership::judge::SCAN_INCOMPLETE,
    procs::procscan,
};

pub use crate::judge::trees::{SCHEMA_VERSION, ScanReport, Totals, totals};

/// `scan --check`: an orphaned tree exists.
pub const EXIT_ORPHANED: u8 = 1;
/// /proc could not be read completely: no report at all, or (with
/// `--check`) a tree whose ownership is unknown because a process's fds
/// could not be read, so that "nothing orphaned" is not proved.
pub const EXIT_INCOMPLETE: u8 = 3;

/// `scan`'s exit codes and where its answer comes from, shown under its
/// `--help`.
pub const EXIT_CODES_HELP: &str = "\
Where the answer comes from:
  When a daemon answers on --daemon-socket, it answers from what it tracks (no walk of
  /proc), with what only it knows: orphan and idle clocks, the grace left before a reap,
  releases, reaps under way. The first line (JSON: \"source\") says \"daemon\" or
  \"standalone\". --standalone walks /proc itself. With no daemon (no socket, a stale one),
  a daemon that does not answer in 2 s, or one that refuses this user, scan walks /proc
  itself and says why on stderr; the exit codes below do not change.
  Who may ask the daemon: root, and the members of the group named by the daemon's
  `[control] read_group`, if set. Those members see every tree on the host, other users'
  included, with each member's full command line (which may carry tokens or paths); they
  may only scan: `release` stays root's.

Exit codes:
  0  report printed; with --check, no tree is orphaned and every tree's ownership was read
  1  with --check: some tree is orphaned
  2  usage or configuration error: nothing scanned
  3  /proc could not be read completely: no report when /proc could not be listed; with
     --check, also when no tree is orphaned but some tree's ownership is unknown because a
     process could not be read (reason scan-incomplete: scan as root)";

/// Scans `proc_root` once.
pub fn scan(config: &Config, proc_root: &Path) -> anyhow::Result<ScanReport> {
    let snapshot = procscan::snapshot(proc_root);
    if let Some(e) = snapshot.error {
        anyhow::bail!("cannot read the process table: {e}");
    }
    let trees = trees::build(&snapshot.procs, config, proc_root);
    Ok(ScanReport {
        schema_version: SCHEMA_VERSION,
        source: SOURCE_STANDALONE,
        daemon: None,
        generated_at_unix: trees::now_unix(),
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
pub fn exit_code(report: &ReportRows, check: bool) -> u8 {
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

/// The table: after `source_line` (who answered), trees grouped by host,
/// then by session (owner fds).
pub fn render_human(report: &ReportRows, source_line: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{source_line}");
    let mut groups: BTreeMap<String, Vec<&TreeRow>> = BTreeMap::new();
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
                reason_text(t),
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
        "{} trees: {} live, {} orphaned, {} suspect, {} unknown; orphans hold {} RSS, {} PSS ({} processes {})",
        tt.trees,
        tt.live,
        tt.orphaned,
        tt.suspect,
        tt.unknown,
        mib(tt.orphaned_rss_bytes),
        mib(tt.orphaned_pss_bytes),
        report.processes_scanned,
        if report.daemon.is_some() {
            "tracked"
        } else {
            "scanned"
        }
    );
    out
}

/// The reason, with the daemon's clock when it has one: the grace left
/// before a reap, a reap under way, or how long an observed reason has held.
fn reason_text(t: &TreeRow) -> String {
    let reason = t.reason.as_deref().unwrap_or("-");
    let Some(d) = &t.daemon else {
        return reason.to_owned();
    };
    if d.reaping {
        format!("{reason} (reaping)")
    } else if let Some(left) = d.grace_left_seconds {
        format!("{reason} (grace {} left)", age(left))
    } else if let Some(since) = d.orphaned_for_seconds {
        format!("{reason} (for {})", age(since))
    } else {
        reason.to_owned()
    }
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
