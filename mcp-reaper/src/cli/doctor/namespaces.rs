//! The network namespaces MCP hosts run in, and whether the daemon could
//! judge stdio ownership in each: a socketpair's peer and shutdown state
//! are told only by the sock_diag of the socket's own namespace, which a
//! daemon outside it must join (setns, CAP_SYS_ADMIN).
//!
//! Owns: finding the running hosts (the configuration's host rules over
//! /proc), grouping them by network namespace, one trial per namespace
//! (`ownership::netns::probe`), and one check per namespace.
//! Must never: keep a namespace or socket open, change a namespace of any
//! thread but the probe's own short-lived one, or fail the report: a host
//! whose namespace cannot be read or entered is a warning, which is what
//! the daemon would make of its trees (`unknown`, never reaped).

use std::collections::BTreeMap;
use std::path::Path;

use super::report::{Check, CheckId, Status};
use crate::{
    config::{Config, ProcView},
    ownership::netns::{self, NetNs, NetNsError},
    procs::procscan,
};

/// Hosts listed by name in a check; the rest are counted.
const SHOWN_HOSTS: usize = 3;

/// What the trial in one namespace found.
#[derive(Debug)]
pub(super) enum Trial {
    /// The daemon's own namespace: asked directly.
    Own,
    /// Another namespace, entered.
    Entered,
    /// Another namespace (or an unreadable one) that could not be asked.
    Failed {
        reason: &'static str,
        detail: String,
    },
}

/// The hosts of one namespace (`None`: their namespace could not be read).
#[derive(Debug)]
pub(super) struct Group {
    pub ns: Option<NetNs>,
    /// (host rule name, PID), in PID order.
    pub hosts: Vec<(String, u32)>,
    pub trial: Trial,
}

fn hosts_text(hosts: &[(String, u32)]) -> String {
    let mut shown: Vec<String> = hosts
        .iter()
        .take(SHOWN_HOSTS)
        .map(|(name, pid)| format!("{name} {pid}"))
        .collect();
    if hosts.len() > SHOWN_HOSTS {
        shown.push(format!("{} more", hosts.len() - SHOWN_HOSTS));
    }
    let noun = if hosts.len() == 1 { "host" } else { "hosts" };
    format!("{} {noun} ({})", hosts.len(), shown.join(", "))
}

/// One check per namespace; one `ok` check when no host runs.
pub(super) fn render(groups: &[Group]) -> Vec<Check> {
    if groups.is_empty() {
        return vec![Check::new(
            CheckId::Netns,
            Status::Ok,
            "no MCP host running: no network namespace to judge in",
        )];
    }
    groups
        .iter()
        .map(|g| {
            let ns =
                g.ns.map_or_else(|| "namespace unreadable".to_owned(), |n| n.to_string());
            let hosts = hosts_text(&g.hosts);
            let (status, verdict) = match &g.trial {
                Trial::Own => (Status::Ok, "the daemon's own: judged directly".to_owned()),
                Trial::Entered => (Status::Ok, "judged from inside (setns)".to_owned()),
                Trial::Failed { reason, detail } => (
                    Status::Warn,
                    format!(
                        "cannot be judged ({reason}: {detail}); socket-stdio trees there stay \
                         unknown and are never reaped (joining needs CAP_SYS_ADMIN and setns)"
                    ),
                ),
            };
            Check::new(CheckId::Netns, status, format!("{ns}: {hosts}: {verdict}"))
        })
        .collect()
}

fn failed(e: &NetNsError) -> Trial {
    Trial::Failed {
        reason: e.reason(),
        detail: super::detail::error_chain(e),
    }
}

/// The running hosts by namespace, each namespace tried once.
pub(super) fn groups(config: &Config, proc_root: &Path) -> Vec<Group> {
    let snapshot = procscan::snapshot(proc_root);
    let mut by_ns: BTreeMap<Option<NetNs>, Vec<(String, u32)>> = BTreeMap::new();
    let mut first_error: Option<NetNsError> = None;
    for p in &snapshot.procs {
        let view = ProcView {
            comm: &p.comm,
            exe: p.exe.as_deref(),
            cmdline: &p.cmdline,
            uid: p.uid,
            cgroup: None,
        };
        let Some(rule) = config.classify_host(&view) else {
            continue;
        };
        let ns = match netns::of_process(p.key.tgid, proc_root) {
            Ok(ns) => Some(ns),
            Err(e) => {
                first_error.get_or_insert(e);
                None
            }
        };
        by_ns
            .entry(ns)
            .or_default()
            .push((rule.name.clone(), p.key.tgid));
    }
    by_ns
        .into_iter()
        .map(|(ns, hosts)| {
            let trial = match (ns, hosts.first()) {
                (Some(_), Some(&(_, pid))) => match netns::probe(pid, proc_root) {
                    Ok((_, true)) => Trial::Own,
                    Ok((_, false)) => Trial::Entered,
                    Err(e) => failed(&e),
                },
                _ => first_error.as_ref().map_or(
                    Trial::Failed {
                        reason: "netns-unreachable",
                        detail: "unreadable".into(),
                    },
                    failed,
                ),
            };
            Group { ns, hosts, trial }
        })
        .collect()
}

/// The checks for the configuration's hosts on this machine.
pub(super) fn netns_checks(config: Option<&Config>) -> Vec<Check> {
    match config {
        Some(c) => render(&groups(c, Path::new("/proc"))),
        None => vec![Check::new(
            CheckId::Netns,
            Status::Skipped,
            "no valid configuration: its host rules say which processes are hosts",
        )],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ns(ino: u64) -> Option<NetNs> {
        Some(NetNs { dev: 4, ino })
    }

    fn hosts(n: u32) -> Vec<(String, u32)> {
        (0..n).map(|i| ("openclaw".to_owned(), 100 + i)).collect()
    }

    #[test]
    fn one_check_per_namespace_and_what_it_means() {
        let failed = || Trial::Failed {
            reason: "netns-not-enterable",
            detail: "EPERM".into(),
        };
        // (group, status, words the detail must hold)
        let cases: Vec<(Group, Status, Vec<&str>)> = vec![
            (
                Group {
                    ns: ns(7),
                    hosts: hosts(1),
                    trial: Trial::Own,
                },
                Status::Ok,
                vec!["net:[7]", "1 host (openclaw 100)", "own"],
            ),
            (
                Group {
                    ns: ns(8),
                    hosts: hosts(5),
                    trial: Trial::Entered,
                },
                Status::Ok,
                vec![
                    "5 hosts (openclaw 100, openclaw 101, openclaw 102, 2 more)",
                    "setns",
                ],
            ),
            (
                Group {
                    ns: ns(9),
                    hosts: hosts(2),
                    trial: failed(),
                },
                Status::Warn,
                vec!["netns-not-enterable", "EPERM", "unknown", "CAP_SYS_ADMIN"],
            ),
            (
                Group {
                    ns: None,
                    hosts: hosts(1),
                    trial: failed(),
                },
                Status::Warn,
                vec!["namespace unreadable", "never reaped"],
            ),
        ];
        for (group, status, words) in cases {
            let checks = render(std::slice::from_ref(&group));
            assert_eq!(checks.len(), 1);
            assert_eq!(checks[0].status, status, "{group:?}");
            for w in words {
                assert!(
                    checks[0].detail.contains(w),
                    "{w:?} in {:?}",
                    checks[0].detail
                );
            }
        }
    }

    #[test]
    fn no_host_is_one_ok_check() {
        let checks = render(&[]);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, Status::Ok);
    }
}
