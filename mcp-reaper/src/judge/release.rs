//! A host's `release`: which trees its words name, exactly.
//!
//! Owns: resolving a release request against the live system at the moment
//! it is asked (the owner PID to a full (pid, start time) identity, a named
//! fd to the inode it holds now), and matching that against the trees'
//! recorded owners. A match names the processes whose hold on the tree the
//! release covers; the supervisor re-confirms it against fresh ownership
//! evidence before anything is reaped (`supervisor::judge_release`).
//! Must never: match by a bare PID or a bare fd number (a recycled host PID
//! or a reused fd number names another process or another tree), match a
//! request whose owner cannot be resolved now, or signal anything.

use std::path::Path;

use crate::{
    judge::supervisor::TreeRecord,
    outputs::control::ReleaseTarget,
    ownership::{FdTarget, Inode, fdtable},
    procs::identity::ProcKey,
};

/// A release request resolved against the live system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseQuery {
    /// Every tree this process holds (`fd: None`), or the tree whose far
    /// end its descriptor `fd` holds now (`Some((fd, inode))`).
    Owner {
        key: ProcKey,
        fd: Option<(u32, u64)>,
    },
    /// Every tree whose session id this is.
    Session(String),
}

impl ReleaseQuery {
    /// How the request reads in logs and replies.
    pub fn describe(&self) -> String {
        match self {
            Self::Owner { key, fd: None } => format!("owner {}", key.tgid),
            Self::Owner {
                key,
                fd: Some((fd, _)),
            } => format!("owner {}:{fd}", key.tgid),
            Self::Session(s) => format!("session {s}"),
        }
    }
}

/// Resolves `target` now. An owner that is no process, or a named fd that
/// is not an open socket or pipe, resolves to nothing (`Err` says why): a
/// closed host end is the kernel's to report, and a guess is never made.
pub fn resolve(target: &ReleaseTarget, proc_root: &Path) -> Result<ReleaseQuery, String> {
    match target {
        ReleaseTarget::Session(s) => Ok(ReleaseQuery::Session(s.clone())),
        ReleaseTarget::Owner(o) => {
            let key = fdtable::proc_key(proc_root, o.pid)
                .ok_or_else(|| format!("owner {}: no such process", o.pid))?;
            let Some(fd) = o.fd else {
                return Ok(ReleaseQuery::Owner { key, fd: None });
            };
            let inode = match fdtable::read_fd(proc_root, o.pid, fd) {
                Ok(Some((target, _))) => inode_of(&target),
                Ok(None) => None,
                Err(e) => {
                    return Err(format!("owner {}:{fd}: cannot read the fd: {e}", o.pid));
                }
            }
            .ok_or_else(|| format!("owner {}:{fd}: not an open socket or pipe", o.pid))?;
            // The PID was read before the fd: if it changed hands meanwhile,
            // the fd belongs to someone else.
            if fdtable::proc_key(proc_root, o.pid) != Some(key) {
                return Err(format!("owner {}: the process changed while read", o.pid));
            }
            Ok(ReleaseQuery::Owner {
                key,
                fd: Some((fd, inode)),
            })
        }
    }
}

fn inode_of(target: &FdTarget) -> Option<u64> {
    target.inode().map(|i| match i {
        Inode::Socket(n) | Inode::Pipe(n) => n,
    })
}

/// One tree a release names, and the processes whose hold on its far end
/// the release covers (the supervisor confirms that nobody else holds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    pub root: ProcKey,
    pub by: Vec<ProcKey>,
}

/// The trees `query` names among `trees`.
///
/// - Owner with an fd: a tree one of whose recorded owner fds is that
///   process (pid and start time), that fd number and that inode.
/// - Owner without an fd: a tree with an owner fd of that process, or whose
///   host is that process.
/// - Session: a tree with that session id; the release covers its recorded
///   owners and host.
pub fn match_trees<'a>(
    trees: impl Iterator<Item = &'a TreeRecord>,
    query: &ReleaseQuery,
) -> Vec<Released> {
    trees
        .filter_map(|t| {
            let by = match query {
                ReleaseQuery::Owner {
                    key,
                    fd: Some((fd, inode)),
                } => t
                    .owner_fds
                    .iter()
                    .any(|o| o.key() == *key && o.fd == *fd && o.inode == *inode && *inode != 0)
                    .then(|| vec![*key]),
                ReleaseQuery::Owner { key, fd: None } => {
                    (t.owner_fds.iter().any(|o| o.key() == *key) || t.host == Some(*key))
                        .then(|| vec![*key])
                }
                ReleaseQuery::Session(s) => {
                    (t.session_id.as_deref() == Some(s.as_str())).then(|| {
                        let mut by: Vec<ProcKey> = t.owner_fds.iter().map(|o| o.key()).collect();
                        by.extend(t.host);
                        by.sort();
                        by.dedup();
                        by
                    })
                }
            }?;
            Some(Released { root: t.root, by })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{
        judge::trees::{OwnerFd, TreeState},
        outputs::control::OwnerRef,
    };

    fn owner(pid: u32, start: u64, fd: u32, inode: u64) -> OwnerFd {
        OwnerFd {
            pid,
            start_ticks: start,
            fd,
            inode,
        }
    }

    fn tree(root: u32, owners: Vec<OwnerFd>, session: Option<&str>) -> TreeRecord {
        TreeRecord {
            root: ProcKey::new(root, 1),
            server: "s".into(),
            host: owners.first().map(OwnerFd::key),
            host_rule: "h".into(),
            session_id: session.map(str::to_string),
            owner_fds: owners,
            chain: vec![],
            released_link: None,
            released_by: vec![],
            state: TreeState::Live,
            reason: None,
            orphan_since: None,
            owners_seen: vec![],
            stdio_inodes: vec![],
            reaping: false,
            last_decision: None,
        }
    }

    fn roots(m: &[Released]) -> Vec<u32> {
        let mut r: Vec<u32> = m.iter().map(|x| x.root.tgid).collect();
        r.sort_unstable();
        r
    }

    #[test]
    fn matches_need_the_owners_identity_fd_and_inode() {
        let host = ProcKey::new(7, 100);
        let trees = [
            // x: its end was handed to a helper; the record still names
            // fd 5 of the host with x's inode.
            tree(10, vec![owner(7, 100, 5, 501)], Some("a")),
            // y: the host's fd 5 now, reused for y's end.
            tree(11, vec![owner(7, 100, 5, 502)], Some("b")),
            // z: another fd of the same host.
            tree(12, vec![owner(7, 100, 8, 503)], None),
            // w: an older process that had PID 7 (recycled).
            tree(13, vec![owner(7, 40, 5, 502)], None),
            // v: an owner fd that could not be read when recorded.
            tree(14, vec![owner(7, 100, 9, 0)], None),
        ];
        let q = |fd: Option<(u32, u64)>| ReleaseQuery::Owner { key: host, fd };
        let cases: Vec<(ReleaseQuery, Vec<u32>)> = vec![
            (q(Some((5, 502))), vec![11]),
            (q(Some((5, 501))), vec![10]),
            (q(Some((8, 503))), vec![12]),
            (q(Some((8, 502))), vec![]),
            (q(Some((9, 0))), vec![]),
            (q(None), vec![10, 11, 12, 14]),
            (
                ReleaseQuery::Owner {
                    key: ProcKey::new(7, 40),
                    fd: None,
                },
                vec![13],
            ),
            (
                ReleaseQuery::Owner {
                    key: ProcKey::new(7, 999),
                    fd: None,
                },
                vec![],
            ),
            (ReleaseQuery::Session("b".into()), vec![11]),
            (ReleaseQuery::Session("zzz".into()), vec![]),
        ];
        for (query, want) in cases {
            assert_eq!(roots(&match_trees(trees.iter(), &query)), want, "{query:?}");
        }
        let by_session = match_trees(trees.iter(), &ReleaseQuery::Session("a".into()));
        assert_eq!(by_session[0].by, vec![host]);
    }

    fn fake_proc(dir: &Path, pid: u32, start: u64, fds: &[(u32, &str)]) {
        let p = dir.join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).unwrap();
        std::fs::create_dir_all(p.join("fdinfo")).unwrap();
        let stat = format!("{pid} (h) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0");
        std::fs::write(p.join("stat"), stat).unwrap();
        for (fd, link) in fds {
            std::os::unix::fs::symlink(link, p.join("fd").join(fd.to_string())).unwrap();
            std::fs::write(
                p.join("fdinfo").join(fd.to_string()),
                "pos:\t0\nflags:\t02\n",
            )
            .unwrap();
        }
    }

    #[test]
    fn resolve_reads_the_owner_and_its_fd_now_and_refuses_what_it_cannot_name() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(
            dir.path(),
            7,
            100,
            &[(5, "socket:[502]"), (6, "pipe:[77]"), (9, "/dev/null")],
        );
        let own = |pid, fd| ReleaseTarget::Owner(OwnerRef { pid, fd });
        let key = ProcKey::new(7, 100);
        assert_eq!(
            resolve(&own(7, Some(5)), dir.path()),
            Ok(ReleaseQuery::Owner {
                key,
                fd: Some((5, 502))
            })
        );
        assert_eq!(
            resolve(&own(7, Some(6)), dir.path()),
            Ok(ReleaseQuery::Owner {
                key,
                fd: Some((6, 77))
            })
        );
        assert_eq!(
            resolve(&own(7, None), dir.path()),
            Ok(ReleaseQuery::Owner { key, fd: None })
        );
        for (target, why) in [
            (own(8, None), "no such process"),
            (own(7, Some(4)), "not an open socket or pipe"),
            (own(7, Some(9)), "not an open socket or pipe"),
        ] {
            let err = resolve(&target, dir.path()).unwrap_err();
            assert!(err.contains(why), "{target:?}: {err}");
        }
        assert_eq!(
            resolve(&ReleaseTarget::Session("s".into()), dir.path()),
            Ok(ReleaseQuery::Session("s".into()))
        );
    }
}
