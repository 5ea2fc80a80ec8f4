//! Reading one process: its files through one handle on `/proc/<pid>`,
//! and the cheap identity checks (`read_key`, `is_alive`) everything else
//! uses before trusting a PID.
//!
//! Owns: opening and reading the files of one process with a size bound
//! per file, and the PID-reuse rule: all files of one read go through one
//! directory handle, so a PID reused mid-read fails the read instead.
//! Must never: mix files of two processes in one `ProcInfo`, read a file
//! unbounded or block on one (a FIFO planted in a fake tree), or write
//! anything under /proc.
//!
//! Files are read here rather than through `procfs::process::Process`
//! because that type reads whole files unbounded, rejects a non-UTF-8
//! cmdline, drops empty arguments, and its `Status` parser fails the whole
//! process when any of about 25 lines is missing or odd (sandboxed kernels
//! differ), where this module needs two of them.

use std::{
    ffi::OsString,
    io::Read as _,
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
};

use procfs::process::Stat;
use rustix::{
    fd::OwnedFd,
    fs::{Mode, OFlags},
};

use super::{
    error::{ProcError, io_error},
    info::{MAX_CMDLINE_BYTES, ProcInfo, is_dead_state},
    parse::{check_stat, parse_cgroup, parse_cmdline, parse_status},
};
use crate::procs::identity::ProcKey;

/// Most bytes read from a `stat` file: 52 numbers and a 16-byte comm fit in
/// well under 1 KiB; anything longer is not a kernel's stat line.
const MAX_STAT_BYTES: usize = 4096;

/// Most bytes read from a `status` file (a `Groups:` line with thousands of
/// groups can be long; the lines needed here come before or after it).
const MAX_STATUS_BYTES: usize = 1 << 20;

/// Reads one process. `pid` must be a thread-group id: a thread's id is
/// refused with `ProcError::Thread`.
pub fn read_process(root: &Path, pid: u32) -> Result<ProcInfo, ProcError> {
    let dir = PidDir::open(root, pid)?;

    let stat = dir.stat()?;
    let key = ProcKey::new(pid, stat.starttime);
    let ppid = u32::try_from(stat.ppid).unwrap_or_default(); // checked by `check_stat`

    let status = dir.read("status", MAX_STATUS_BYTES)?;
    let status = parse_status(&status.bytes).map_err(|reason| dir.malformed("status", reason))?;
    if status.tgid != pid {
        return Err(ProcError::Thread {
            pid,
            tgid: status.tgid,
            path: dir.path.join("status"),
        });
    }

    let raw = dir.read("cmdline", MAX_CMDLINE_BYTES)?;
    let (cmdline, cmdline_truncated) = parse_cmdline(&raw.bytes, raw.truncated);

    Ok(ProcInfo {
        key,
        ppid,
        pgid: stat.pgrp,
        sid: stat.session,
        uid: status.uid,
        state: stat.state,
        comm: stat.comm,
        cmdline,
        cmdline_truncated,
        exe: dir.exe(),
        rss_bytes: status.rss_kib.saturating_mul(1024),
        ns_pid: status.ns_pid,
    })
}

/// Most bytes of /proc/PID/cgroup read (a line per v1 hierarchy).
const MAX_CGROUP_BYTES: usize = 16 * 1024;

/// The cgroup path of the process `key`: the v2 path (`0::PATH`), else the
/// v1 `name=systemd` hierarchy's (it mirrors the v2 layout on hybrid
/// hosts). `Ok(None)`: the file names neither. Read through the process's
/// own /proc directory and checked against `key`'s start time afterwards,
/// so a reused PID is `Vanished`, never another process's cgroup.
pub fn read_cgroup(root: &Path, key: ProcKey) -> Result<Option<String>, ProcError> {
    let dir = PidDir::open(root, key.tgid)?;
    let raw = dir.read("cgroup", MAX_CGROUP_BYTES)?;
    if dir.stat()?.starttime != key.start_ticks {
        return Err(ProcError::Vanished {
            pid: key.tgid,
            path: dir.path.join("cgroup"),
        });
    }
    Ok(parse_cgroup(&String::from_utf8_lossy(&raw.bytes)))
}

/// The identity of the process at `pid`, from its stat file alone (cheap).
/// `None` if there is none or its stat is unreadable. For a thread id this
/// is the thread's own (id, start), which names no process.
pub fn read_key(root: &Path, pid: u32) -> Option<ProcKey> {
    read_stat_at(root, pid)
        .ok()
        .map(|stat| ProcKey::new(pid, stat.starttime))
}

/// `key` still names a running process: same PID, same start time, and not
/// a zombie (a zombie has exited; only its parent has yet to reap it).
pub fn is_alive(root: &Path, key: ProcKey) -> bool {
    read_stat_at(root, key.tgid)
        .is_ok_and(|stat| stat.starttime == key.start_ticks && !is_dead_state(stat.state))
}

/// Reads and checks `/proc/<pid>/stat` without opening the directory first.
fn read_stat_at(root: &Path, pid: u32) -> Result<Stat, ProcError> {
    let dir = root.join(pid.to_string());
    let path = dir.join("stat");
    let fd = rustix::fs::open(&path, read_flags(), Mode::empty())
        .map_err(|e| io_error(pid, path.clone(), e.into()))?;
    let raw = read_bounded(fd, MAX_STAT_BYTES).map_err(|e| io_error(pid, path.clone(), e))?;
    check_stat(pid, &path, &raw.bytes)
}

fn read_flags() -> OFlags {
    // NONBLOCK: a FIFO planted in a fake tree must not hang the scan.
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

struct Bounded {
    bytes: Vec<u8>,
    /// The file had more than the limit.
    truncated: bool,
}

fn read_bounded(fd: OwnedFd, limit: usize) -> std::io::Result<Bounded> {
    let file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap).read_to_end(&mut bytes)?;
    let truncated = bytes.len() > limit;
    bytes.truncate(limit);
    Ok(Bounded { bytes, truncated })
}

/// A handle on `/proc/<pid>`. Files opened through it belong to that one
/// process: once it is reaped they fail with ENOENT/ESRCH, even if the PID
/// has been reused, so a read never mixes two processes.
struct PidDir {
    pid: u32,
    path: PathBuf,
    fd: OwnedFd,
}

impl PidDir {
    fn open(root: &Path, pid: u32) -> Result<Self, ProcError> {
        let path = root.join(pid.to_string());
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(pid, path.clone(), e.into()))?;
        Ok(Self { pid, path, fd })
    }

    fn read(&self, name: &str, limit: usize) -> Result<Bounded, ProcError> {
        let fd = rustix::fs::openat(&self.fd, name, read_flags(), Mode::empty())
            .map_err(|e| io_error(self.pid, self.path.join(name), e.into()))?;
        read_bounded(fd, limit).map_err(|e| io_error(self.pid, self.path.join(name), e))
    }

    fn stat(&self) -> Result<Stat, ProcError> {
        let raw = self.read("stat", MAX_STAT_BYTES)?;
        check_stat(self.pid, &self.path.join("stat"), &raw.bytes)
    }

    fn exe(&self) -> Option<PathBuf> {
        let target = rustix::fs::readlinkat(&self.fd, "exe", Vec::new()).ok()?;
        Some(PathBuf::from(OsString::from_vec(target.into_bytes())))
    }

    fn malformed(&self, name: &str, reason: String) -> ProcError {
        ProcError::Malformed {
            pid: self.pid,
            path: self.path.join(name),
            reason,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{ffi::OsString, fs, os::unix::ffi::OsStringExt as _};

    use super::*;
    use crate::procs::procscan::{
        display::display_cmdline,
        fake::{FakeProc, Fixture},
    };

    #[test]
    fn reads_a_plain_process() {
        let fake = FakeProc::new();
        fake.add(Fixture::default());
        std::os::unix::fs::symlink("/usr/bin/node", fake.root().join("100/exe")).unwrap();

        let p = read_process(fake.root(), 100).unwrap();
        assert_eq!(p.key, ProcKey::new(100, 5000));
        assert_eq!((p.ppid, p.pgid, p.sid, p.uid), (1, 100, 100, 1000));
        assert_eq!(p.state, 'S');
        assert_eq!(p.comm, "node");
        assert_eq!(p.cmdline, ["node", "server.js"]);
        assert!(!p.cmdline_truncated);
        assert_eq!(p.exe.as_deref(), Some(Path::new("/usr/bin/node")));
        assert_eq!(p.rss_bytes, 2048 * 1024);
        assert_eq!(display_cmdline(&p), "node server.js");
    }

    #[test]
    fn zombie_is_read_but_not_alive() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            state: 'Z',
            cmdline: b"",
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        assert!(p.is_zombie());
        assert_eq!(read_key(fake.root(), 100), Some(p.key));
        assert!(!is_alive(fake.root(), p.key));
    }

    #[test]
    fn liveness_needs_same_pid_and_start() {
        let fake = FakeProc::new();
        fake.add(Fixture::default());
        assert!(is_alive(fake.root(), ProcKey::new(100, 5000)));
        // PID reused: same PID, another start time.
        assert!(!is_alive(fake.root(), ProcKey::new(100, 4999)));
        assert!(!is_alive(fake.root(), ProcKey::new(999, 5000)));
        assert_eq!(read_key(fake.root(), 999), None);
    }

    #[test]
    fn errors_name_the_pid_and_the_file() {
        let fake = FakeProc::new();
        fake.add(Fixture::default());
        fake.write(100, "status", b"Name:\tnode\nUid:\tnobody\n");
        let err = read_process(fake.root(), 100).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("pid 100: malformed "), "{msg}");
        assert!(msg.contains("100/status"), "{msg}");
        assert_eq!(err.pid(), Some(100));

        let err = read_process(fake.root(), 4242).unwrap_err();
        assert!(err.is_vanished(), "{err}");
        assert!(err.to_string().contains("pid 4242"), "{err}");

        let fake = FakeProc::new();
        fake.add(Fixture::default());
        fs::remove_file(fake.root().join("100/cmdline")).unwrap();
        let err = read_process(fake.root(), 100).unwrap_err();
        assert!(err.is_vanished(), "{err}");
        assert!(err.to_string().contains("100/cmdline"), "{err}");
    }

    #[test]
    fn a_fifo_does_not_hang_the_read() {
        let fake = FakeProc::new();
        fake.add(Fixture::default());
        let cmdline = fake.root().join("100/cmdline");
        fs::remove_file(&cmdline).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &cmdline,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let p = read_process(fake.root(), 100).unwrap();
        assert!(p.cmdline.is_empty());
    }

    #[test]
    fn serializes_non_utf8_exe() {
        let fake = FakeProc::new();
        fake.add(Fixture::default());
        let target = OsString::from_vec(b"/tmp/\xffbin".to_vec());
        std::os::unix::fs::symlink(&target, fake.root().join("100/exe")).unwrap();
        let p = read_process(fake.root(), 100).unwrap();
        assert_eq!(p.exe.as_deref(), Some(Path::new(&target)));
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"exe\":\"/tmp/\u{fffd}bin\""), "{json}");
    }
}
