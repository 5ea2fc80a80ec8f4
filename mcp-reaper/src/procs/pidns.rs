//! PID namespaces: the daemon's own, a process's PID as seen inside its
//! namespace (`NSpid`), and a caller's PID translated into ours.
//!
//! Everything the daemon records and signals is a PID of its own namespace,
//! which must be the initial one: the kernel programs report initial-
//! namespace tgids, and a pidfd is opened by a PID of the caller's
//! namespace. An operator inside a container sees other numbers; `scan`
//! and the audit log show those too (`ns_pid`), and a `release --owner
//! PID` from inside a container is translated here.
//!
//! Owns: telling whether this process is in the initial PID namespace
//! (nsfs gives it a fixed inode), parsing `NSpid`, and translating a PID
//! of a caller's namespace into ours.
//! Must never: guess. A translation that finds no process, or more than
//! one, or cannot read /proc completely, is an error with its reason;
//! a PID of another namespace is never used as if it were ours.

use std::{io, os::unix::fs::MetadataExt as _, path::Path};

/// Inode of the initial PID namespace's nsfs file (`PROC_PID_INIT_INO` in
/// the kernel's include/linux/proc_ns.h): fixed, the same on every boot.
pub const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// The PID namespace of process `pid` under `proc_root`, by inode.
pub fn ns_of(proc_root: &Path, pid: u32) -> io::Result<u64> {
    Ok(std::fs::metadata(proc_root.join(pid.to_string()).join("ns/pid"))?.ino())
}

/// This process's PID namespace, by inode (through the nsfs link, which
/// does not depend on which /proc is mounted).
pub fn own_ns() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/pid")?.ino())
}

/// Whether `proc_root` numbers processes as this process's PID namespace
/// does, so that a PID read there may be given to `pidfd_open`: the real
/// /proc, or another mount of the same namespace's procfs (the host's /proc
/// at /host/proc in a pod with hostPID). `<proc_root>/self` must name this
/// process by the PID it has here; a procfs of a namespace this process is
/// not in has no `self` for it. (A procfs of an ancestor namespace could
/// number this one process alike by chance; the daemon runs only in the
/// initial namespace, which has no ancestor.)
pub fn shows_our_pids(proc_root: &Path) -> bool {
    if proc_root == Path::new("/proc") {
        return true;
    }
    let Ok(link) = std::fs::read_link(proc_root.join("self")) else {
        return false;
    };
    let ours = std::process::id().to_string();
    let same_ns = match (std::fs::metadata(proc_root.join("self/ns/pid")), own_ns()) {
        (Ok(m), Ok(own)) => m.ino() == own,
        _ => false,
    };
    link.as_os_str() == ours.as_str() && same_ns
}

/// Why the daemon cannot run in the PID namespace it is in, if it cannot.
pub fn daemon_refusal(own: io::Result<u64>) -> Option<String> {
    match own {
        Ok(INIT_PID_NS_INO) => None,
        Ok(ino) => Some(format!(
            "mcp-reaper runs in PID namespace pid:[{ino}], not the host's initial one: the \
             kernel reports processes and pidfds are opened by the host's PIDs, so this \
             daemon would watch and signal the wrong processes. Run it in the host's PID \
             namespace (Kubernetes: hostPID: true; Podman or Docker: --pid=host)."
        )),
        Err(e) => Some(format!(
            "cannot tell which PID namespace mcp-reaper runs in (/proc/self/ns/pid: {e}); \
             it must be the host's initial one"
        )),
    }
}

/// The PID a process has inside its own (innermost) PID namespace, from
/// the value of its `NSpid:` status line, when that differs from the
/// outermost one; `None` for a process of the reader's own namespace or a
/// malformed line.
pub fn inner_pid(nspid_value: &str) -> Option<u32> {
    match nested(nspid_value)? {
        (outer, inner) if outer != inner => Some(inner),
        _ => None,
    }
}

/// (outermost, innermost) PID of a process in a namespace nested below the
/// reader's (two or more `NSpid` entries); `None` for one entry or a
/// malformed line.
fn nested(nspid_value: &str) -> Option<(u32, u32)> {
    let pids: Vec<u32> = nspid_value
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match pids.as_slice() {
        [outer, .., inner] => Some((*outer, *inner)),
        _ => None,
    }
}

/// One process seen during a translation: its PID (ours), its PID
/// namespace, and its innermost PID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub pid: u32,
    pub ns: u64,
    pub inner: u32,
}

/// The process of namespace `ns` whose PID there is `wanted`, among
/// `seen` (a complete walk): exactly one, or an error that says why.
pub fn pick(seen: &[Seen], ns: u64, wanted: u32) -> Result<u32, String> {
    let mut found = seen.iter().filter(|s| s.ns == ns && s.inner == wanted);
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one.pid),
        (None, _) => Err(format!(
            "owner {wanted}: no such process in the caller's PID namespace pid:[{ns}]"
        )),
        (Some(_), Some(_)) => Err(format!(
            "owner {wanted}: more than one process has that PID in pid:[{ns}]; refusing to guess"
        )),
    }
}

/// Translates `pid`, as the process `caller` (a PID of ours, from the
/// socket's peer credentials) sees it, into a PID of ours. A caller in our
/// namespace needs no translation. A caller in another namespace names a
/// process of its own namespace (a process nested deeper is not matched:
/// its PID there is not in `NSpid`'s last place).
pub fn translate(proc_root: &Path, caller: u32, pid: u32) -> Result<u32, String> {
    let theirs = ns_of(proc_root, caller)
        .map_err(|e| format!("cannot read the caller's PID namespace: {e}"))?;
    let ours = own_ns().map_err(|e| format!("cannot read this daemon's PID namespace: {e}"))?;
    if theirs == ours {
        return Ok(pid);
    }
    let seen = walk_candidates(proc_root, pid)?;
    pick(&seen, theirs, pid)
}

/// Every process whose innermost PID is `wanted`, with its PID namespace.
/// A process of this namespace alone (one `NSpid` entry) or with another
/// innermost PID cannot be the one and is not asked for its namespace
/// (init's may be unreadable even to root). A process that exits during
/// the walk is skipped; any other read error fails the walk.
fn walk_candidates(proc_root: &Path, wanted: u32) -> Result<Vec<Seen>, String> {
    let entries = std::fs::read_dir(proc_root)
        .map_err(|e| format!("cannot list {}: {e}", proc_root.display()))?;
    let mut seen = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", proc_root.display()))?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let status = match std::fs::read_to_string(entry.path().join("status")) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {pid}/status: {e}")),
        };
        let nspid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .ok_or_else(|| format!("{pid}/status has no NSpid line"))?;
        if nested(nspid).is_none_or(|(_, inner)| inner != wanted) {
            continue;
        }
        match ns_of(proc_root, pid) {
            Ok(ns) => seen.push(Seen {
                pid,
                ns,
                inner: wanted,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {pid}/ns/pid: {e}")),
        }
    }
    Ok(seen)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn inner_pid_is_the_last_of_a_nested_line() {
        let cases = [
            ("\t1234", None),
            ("\t1234\t7", Some(7)),
            ("\t1234\t56\t7", Some(7)),
            ("\t1\t1", None),
            ("", None),
            ("\t12x\t7", None),
            ("\t-1\t7", None),
        ];
        for (value, want) in cases {
            assert_eq!(inner_pid(value), want, "{value:?}");
        }
    }

    #[test]
    fn a_nested_pid_may_equal_its_outer_one() {
        assert_eq!(nested("\t7\t7"), Some((7, 7)));
        assert_eq!(nested("\t7"), None);
        assert_eq!(inner_pid("\t7\t7"), None, "shown only where it differs");
    }

    #[test]
    fn pick_takes_exactly_one_process_of_the_callers_namespace() {
        let seen = [
            Seen {
                pid: 100,
                ns: 5,
                inner: 7,
            },
            Seen {
                pid: 101,
                ns: 6,
                inner: 7,
            },
            Seen {
                pid: 102,
                ns: 5,
                inner: 8,
            },
        ];
        assert_eq!(pick(&seen, 5, 7), Ok(100));
        assert_eq!(pick(&seen, 6, 7), Ok(101));
        // PID 100 is ours, not theirs: never matched by our number.
        assert!(pick(&seen, 5, 100).is_err());
        assert!(pick(&seen, 9, 7).unwrap_err().contains("no such process"));
        let twice = [
            seen[0],
            Seen {
                pid: 103,
                ns: 5,
                inner: 7,
            },
        ];
        assert!(
            pick(&twice, 5, 7)
                .unwrap_err()
                .contains("refusing to guess")
        );
    }

    #[test]
    fn the_daemon_runs_only_in_the_initial_namespace() {
        assert_eq!(daemon_refusal(Ok(INIT_PID_NS_INO)), None);
        let other = daemon_refusal(Ok(4_026_532_999)).unwrap();
        assert!(other.contains("hostPID"), "{other}");
        let unreadable = daemon_refusal(Err(io::Error::other("denied")));
        assert!(unreadable.is_some_and(|m| m.contains("denied")));
    }

    #[test]
    fn a_procfs_shows_our_pids_only_when_its_self_is_us() {
        assert!(shows_our_pids(Path::new("/proc")));
        // The same procfs under another path (as /host/proc in a pod).
        assert!(shows_our_pids(Path::new("/proc/self/root/proc")));
        // A directory that is no procfs, and one whose `self` is another PID.
        let dir = tempfile::tempdir().unwrap();
        assert!(!shows_our_pids(dir.path()));
        std::os::unix::fs::symlink("1", dir.path().join("self")).unwrap();
        assert!(!shows_our_pids(dir.path()));
    }

    #[test]
    fn a_caller_in_our_namespace_needs_no_translation() {
        let me = std::process::id();
        assert_eq!(translate(Path::new("/proc"), me, 4242), Ok(4242));
    }
}
