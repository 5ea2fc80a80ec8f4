//! What the walk could not read is never "nobody holds it": a fake /proc
//! (a tempdir) with one process made unreadable at a time, by each cause
//! a real /proc can give (the errno differs; what matters is that it is
//! not ENOENT/ESRCH). Root cannot be refused by file modes, so the causes
//! are built from file kinds: a directory where a file belongs (EISDIR),
//! a file where a directory or link belongs (ENOTDIR, EINVAL).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, path::Path};

use super::{OwnerState, PEER_RELEASED, fdtable, stdio_owner};
use crate::procs::identity::ProcKey;

/// The tree root: stdin is the read end of pipe 700.
const ROOT: u32 = 20;
/// The root's parent, read first as a candidate.
const PARENT: u32 = 21;
/// Some other process, read by the walk of all of /proc.
const OTHER: u32 = 22;

fn stat(pid: u32, ppid: u32, state: char, threads: u32) -> String {
    format!(
        "{pid} (x) {state} {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 {threads} 0 {} 0",
        1000 + pid
    )
}

fn process(p: &Path, pid: u32, ppid: u32, fds: &[(u32, &str, &str)]) {
    let d = p.join(pid.to_string());
    std::fs::create_dir_all(d.join("fd")).unwrap();
    std::fs::create_dir_all(d.join("fdinfo")).unwrap();
    std::fs::write(d.join("stat"), stat(pid, ppid, 'S', 1)).unwrap();
    for (fd, link, flags) in fds {
        std::os::unix::fs::symlink(link, d.join("fd").join(fd.to_string())).unwrap();
        std::fs::write(
            d.join("fdinfo").join(fd.to_string()),
            format!("pos:\t0\nflags:\t{flags}\n"),
        )
        .unwrap();
    }
}

/// Ways a live process's files can fail to read.
#[derive(Clone, Copy, Debug)]
enum Cause {
    /// stat fails with an error other than ENOENT/ESRCH.
    StatUnreadable,
    /// stat reads but is no kernel's line.
    StatMalformed,
    /// /proc/PID/fd cannot be listed (EACCES on a real /proc).
    FdDirUnreadable,
    /// A wanted fd's link cannot be read (EACCES from the ptrace check).
    LinkUnreadable,
    /// A wanted fd's fdinfo cannot be opened (EMFILE in the daemon).
    FdinfoUnreadable,
    /// A wanted fd's fdinfo lacks its flags line.
    FdinfoMalformed,
    /// The leader exited while other threads live on with the fd table.
    LeaderExitedThreadsLive,
}

const CAUSES: [Cause; 7] = [
    Cause::StatUnreadable,
    Cause::StatMalformed,
    Cause::FdDirUnreadable,
    Cause::LinkUnreadable,
    Cause::FdinfoUnreadable,
    Cause::FdinfoMalformed,
    Cause::LeaderExitedThreadsLive,
];

/// Makes `pid` (which holds its wanted fd as fd 5) unreadable by `cause`.
fn break_it(p: &Path, pid: u32, ppid: u32, cause: Cause) {
    let d = p.join(pid.to_string());
    let replace_with_dir = |f: &Path| {
        if f.is_dir() {
            std::fs::remove_dir_all(f).unwrap();
        } else {
            std::fs::remove_file(f).unwrap();
        }
        std::fs::create_dir(f).unwrap();
    };
    match cause {
        Cause::StatUnreadable => replace_with_dir(&d.join("stat")),
        Cause::StatMalformed => std::fs::write(d.join("stat"), "20 (x").unwrap(),
        Cause::FdDirUnreadable => {
            std::fs::remove_dir_all(d.join("fd")).unwrap();
            std::fs::write(d.join("fd"), "").unwrap();
        }
        Cause::LinkUnreadable => {
            std::fs::remove_file(d.join("fd/5")).unwrap();
            std::fs::write(d.join("fd/5"), "").unwrap();
        }
        Cause::FdinfoUnreadable => replace_with_dir(&d.join("fdinfo/5")),
        Cause::FdinfoMalformed => std::fs::write(d.join("fdinfo/5"), "pos:\t0\n").unwrap(),
        Cause::LeaderExitedThreadsLive => {
            std::fs::write(d.join("stat"), stat(pid, ppid, 'Z', 3)).unwrap();
            std::fs::remove_dir_all(d.join("fd")).unwrap();
            std::fs::create_dir(d.join("fd")).unwrap();
        }
    }
}

/// A fake /proc: the root reads pipe 700; `holder` (if any) holds its
/// write end as fd 5, and `broken` is made unreadable by `cause`.
fn fake_proc(holder: Option<u32>, broken: Option<(u32, Cause)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    process(
        p,
        ROOT,
        PARENT,
        &[(0, "pipe:[700]", "00"), (1, "/dev/null", "01")],
    );
    for pid in [PARENT, OTHER] {
        // Both hold some other pipe's write end as fd 5, so a cause that
        // breaks fd 5 hits a wanted fd only where it is the pipe 700.
        let link = if holder == Some(pid) {
            "pipe:[700]"
        } else {
            "pipe:[701]"
        };
        process(p, pid, 1, &[(5, link, "01")]);
    }
    if let Some((pid, cause)) = broken {
        if holder != Some(pid) && matches!(cause, Cause::FdinfoUnreadable | Cause::FdinfoMalformed)
        {
            // fdinfo is read for wanted fds only: make fd 5 a wanted one.
            std::fs::remove_file(p.join(pid.to_string()).join("fd/5")).unwrap();
            std::os::unix::fs::symlink("pipe:[700]", p.join(pid.to_string()).join("fd/5")).unwrap();
        }
        break_it(p, pid, 1, cause);
    }
    dir
}

fn owner(p: &Path) -> OwnerState {
    let root = ProcKey::new(ROOT, 1000 + u64::from(ROOT));
    stdio_owner(root, &[ROOT].into(), &[], p).state
}

#[test]
fn readable_walk_without_a_writer_is_a_release() {
    // The control case: with every process read, the rule releases.
    let p = fake_proc(None, None);
    assert_eq!(
        owner(p.path()),
        OwnerState::Released {
            reason: PEER_RELEASED
        }
    );
    let p = fake_proc(Some(OTHER), None);
    assert!(matches!(owner(p.path()), OwnerState::Held { .. }));
}

#[test]
fn an_unreadable_candidate_makes_the_verdict_unknown() {
    for cause in CAUSES {
        let p = fake_proc(None, Some((PARENT, cause)));
        assert_eq!(
            owner(p.path()),
            OwnerState::Unknown {
                reason: "scan-incomplete"
            },
            "parent unreadable by {cause:?}"
        );
    }
}

#[test]
fn an_unreadable_candidate_does_not_hide_an_owner_the_walk_finds() {
    // The parent (a reparented root's PID 1, say) cannot be read, the real
    // owner is elsewhere: the walk still runs and finds it.
    for cause in CAUSES {
        let p = fake_proc(Some(OTHER), Some((PARENT, cause)));
        assert!(
            matches!(owner(p.path()), OwnerState::Held { .. }),
            "parent unreadable by {cause:?}: {:?}",
            owner(p.path())
        );
    }
}

#[test]
fn an_unreadable_process_in_the_walk_makes_the_verdict_unknown() {
    for cause in CAUSES {
        let p = fake_proc(None, Some((OTHER, cause)));
        assert_eq!(
            owner(p.path()),
            OwnerState::Unknown {
                reason: "scan-incomplete"
            },
            "other process unreadable by {cause:?}"
        );
    }
}

#[test]
fn an_unreadable_holder_is_never_a_release() {
    // The writer itself is the unreadable one: the walk must not conclude
    // that nobody writes.
    for cause in CAUSES {
        let p = fake_proc(Some(OTHER), Some((OTHER, cause)));
        let state = owner(p.path());
        assert_eq!(
            state,
            OwnerState::Unknown {
                reason: "scan-incomplete"
            },
            "writer unreadable by {cause:?}"
        );
    }
}

#[test]
fn each_cause_counts_unreadable_not_vanished() {
    let want: HashSet<_> = [fdtable::Inode::Pipe(700)].into();
    for cause in CAUSES {
        let p = fake_proc(Some(OTHER), Some((OTHER, cause)));
        let scan = fdtable::scan_pids(p.path(), [OTHER], &HashSet::new(), Some(&want));
        assert_eq!(
            (scan.unreadable, scan.vanished, scan.processes),
            (1, 0, 0),
            "{cause:?}"
        );
        assert!(!scan.complete(), "{cause:?}");
    }
}

#[test]
fn gone_is_not_unreadable() {
    let p = fake_proc(None, None);
    let want: HashSet<_> = [fdtable::Inode::Pipe(700)].into();
    // No such process: gone.
    let scan = fdtable::scan_pids(p.path(), [99], &HashSet::new(), Some(&want));
    assert_eq!((scan.vanished, scan.unreadable), (1, 0));
    // An fd closed between the listing and its fdinfo: skipped, not a
    // failure of the process.
    std::fs::remove_file(p.path().join("22/fdinfo/5")).unwrap();
    std::fs::remove_file(p.path().join("22/fd/5")).unwrap();
    std::os::unix::fs::symlink("pipe:[700]", p.path().join("22/fd/5")).unwrap();
    let scan = fdtable::scan_pids(p.path(), [OTHER], &HashSet::new(), Some(&want));
    assert_eq!(
        (scan.processes, scan.unreadable, scan.skipped_fds),
        (1, 0, 1)
    );
    assert!(scan.complete());
    // A zombie whose whole group exited holds nothing and is no failure.
    std::fs::write(p.path().join("22/stat"), stat(OTHER, 1, 'Z', 1)).unwrap();
    std::fs::remove_dir_all(p.path().join("22/fd")).unwrap();
    let scan = fdtable::scan_pids(p.path(), [OTHER], &HashSet::new(), Some(&want));
    assert_eq!((scan.processes, scan.unreadable), (1, 0));
}

#[test]
fn unreadable_stat_is_an_error_and_a_missing_one_is_gone() {
    let p = fake_proc(None, Some((OTHER, Cause::StatUnreadable)));
    assert!(fdtable::read_stat(p.path(), OTHER).is_err());
    assert!(fdtable::read_stat(p.path(), 99).unwrap().is_none());
    let s = fdtable::read_stat(p.path(), PARENT).unwrap().unwrap();
    assert_eq!(
        (s.key, s.state, s.threads),
        (ProcKey::new(21, 1021), 'S', 1)
    );
}

#[test]
fn an_unlistable_proc_is_an_error() {
    let p = tempfile::tempdir().unwrap();
    std::fs::write(p.path().join("proc"), "").unwrap();
    assert!(fdtable::all_pids(&p.path().join("proc")).is_err());
    assert!(fdtable::scan_all(&p.path().join("proc"), &HashSet::new(), None).is_err());
}
