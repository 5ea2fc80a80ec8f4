//! The whole of /proc: every process listed and read, in PID order.
//!
//! Owns: listing `root`, skipping what is not a process (other entries,
//! threads bind-mounted into view), counting the processes it could not
//! read, and saying when the listing itself failed.
//! Must never: panic or abandon a whole scan because one process is odd
//! (it is counted in `Snapshot::skipped`), or present a listing that broke
//! off as complete: nothing may be concluded from a process missing then.

use std::path::Path;

use super::{error::ProcError, info::ProcInfo, parse::parse_pid, read::read_process};

/// The result of listing /proc.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every process read successfully, in PID order.
    pub procs: Vec<ProcInfo>,
    /// Processes listed but not read: vanished mid-read, unreadable, or
    /// with malformed files.
    pub skipped: u64,
    /// Set when /proc itself could not be listed, or the listing broke off:
    /// `procs` is then not the set of live processes, and nothing may be
    /// concluded from a process missing from it.
    pub error: Option<ProcError>,
}

impl Snapshot {
    /// The listing ran to the end (individual processes may still have been
    /// skipped).
    pub fn is_complete(&self) -> bool {
        self.error.is_none()
    }
}

/// Lists every process under `root` (normally `/proc`). Never fails as a
/// whole: processes that cannot be read are counted in `skipped`, and a
/// listing failure is reported in `Snapshot::error`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut snap = Snapshot::default();
    // Listing with std: procfs's `all_processes_with_root` yields `Process`
    // handles this module does not read through (see the header).
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(source) => {
            snap.error = Some(ProcError::List {
                path: root.to_path_buf(),
                source,
            });
            return snap;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(source) => {
                snap.error = Some(ProcError::List {
                    path: root.to_path_buf(),
                    source,
                });
                break;
            }
        };
        let Some(pid) = entry.file_name().to_str().and_then(parse_pid) else {
            continue; // "self", "sys", "meminfo", ...
        };
        match read_process(root, pid) {
            Ok(info) => snap.procs.push(info),
            // /proc lists thread-group ids only; a thread here is a fixture
            // or a bind mount, not a process to count.
            Err(ProcError::Thread { .. }) => {}
            Err(err) => {
                if !err.is_vanished() {
                    tracing::debug!(error = %err, "skipping process");
                }
                snap.skipped += 1;
            }
        }
    }
    snap.procs.sort_by_key(|p| p.key.tgid);
    snap
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{
        procs::identity::ProcKey,
        procs::procscan::{
            fake::{FakeProc, Fixture, stat_line, status_text},
            read::{is_alive, read_key},
        },
    };

    #[test]
    fn snapshot_counts_the_unreadable_and_skips_threads() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            pid: 1,
            comm: b"init",
            ppid: 0,
            start: 1,
            ..Fixture::default()
        });
        fake.add(Fixture {
            pid: 200,
            ppid: 1,
            start: 7000,
            ..Fixture::default()
        });
        // A thread of 200, as /proc/<tid> would show it.
        fake.write(201, "stat", &stat_line(201, b"node", 'S', 1, 7001));
        fake.write(201, "status", &status_text(b"node", 200, 201, 1000, 2048));
        fake.write(201, "cmdline", b"node\0");
        // Vanished between listing and reading: a directory with nothing in it.
        fs::create_dir(fake.root().join("300")).unwrap();
        // Garbage stat.
        fake.add(Fixture {
            pid: 400,
            ..Fixture::default()
        });
        fake.write(400, "stat", b"400 (cut");
        // Garbage status.
        fake.add(Fixture {
            pid: 500,
            ..Fixture::default()
        });
        fake.write(500, "status", b"\0\0\0");
        // Names that are not PIDs.
        fs::create_dir(fake.root().join("007")).unwrap();
        fs::create_dir(fake.root().join("+8")).unwrap();
        fs::create_dir(fake.root().join("0")).unwrap();

        let err = read_process(fake.root(), 201).unwrap_err();
        assert!(
            matches!(
                err,
                ProcError::Thread {
                    pid: 201,
                    tgid: 200,
                    ..
                }
            ),
            "{err}"
        );

        let snap = snapshot(fake.root());
        assert!(snap.is_complete());
        let pids: Vec<u32> = snap.procs.iter().map(|p| p.key.tgid).collect();
        assert_eq!(pids, [1, 200]);
        assert_eq!(snap.skipped, 3);
    }

    #[test]
    fn snapshot_of_a_missing_root_reports_the_error() {
        let fake = FakeProc::new();
        let snap = snapshot(&fake.root().join("nope"));
        assert!(!snap.is_complete());
        assert!(snap.procs.is_empty());
        let msg = snap.error.unwrap().to_string();
        assert!(msg.starts_with("cannot list "), "{msg}");
    }

    #[test]
    fn real_proc_self_and_parent() {
        let root = Path::new("/proc");
        let me = std::process::id();
        let p = read_process(root, me).unwrap();
        assert_eq!(p.key.tgid, me);
        assert!(p.key.start_ticks > 0);
        assert!(matches!(p.state, 'R' | 'S' | 'D'), "{}", p.state);
        assert_eq!(p.uid, rustix::process::getuid().as_raw());
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert!(!p.cmdline.is_empty());
        assert!(p.rss_bytes > 0);
        assert!(p.exe.is_some());
        assert_eq!(read_key(root, me), Some(p.key));
        assert!(is_alive(root, p.key));
        assert!(!is_alive(root, ProcKey::new(me, p.key.start_ticks + 1)));

        let parent = read_process(root, p.ppid).unwrap();
        assert!(parent.key.start_ticks <= p.key.start_ticks);
        assert!(is_alive(root, parent.key));

        // A thread of this process is not a process.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            // "/proc/thread-self" links to "<tgid>/task/<tid>".
            let link = fs::read_link("/proc/thread-self").unwrap();
            let tid: u32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
            tx.send(tid).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        let err = read_process(root, tid).unwrap_err();
        assert!(
            matches!(err, ProcError::Thread { tgid, .. } if tgid == me),
            "{err}"
        );
        done_tx.send(()).unwrap();
        handle.join().unwrap();

        let snap = snapshot(root);
        assert!(snap.is_complete());
        assert!(snap.procs.iter().any(|q| q.key == p.key));
        assert!(snap.procs.iter().any(|q| q.key == parent.key));
        assert!(!snap.procs.iter().any(|q| q.key.tgid == tid));
    }
}
