//! Who holds which socket and pipe, from /proc/PID/fd and /proc/PID/fdinfo.
//!
//! Owns: parsing fd link targets (`socket:[N]`, `pipe:[N]`, anon inodes,
//! paths) and fdinfo flags, and building the inode -> holders index for a
//! set of processes or for all of /proc, with an honest count of what it
//! could not read. Must never: panic on or trust what /proc returns, count
//! a process it could not read as one that holds nothing, or name a holder
//! by a bare PID: every holder carries its `ProcKey`, read before and
//! checked after its fds.
//!
//! Gone versus unreadable: a process is gone when its stat says so
//! (ENOENT, ESRCH) or names another start time; an fd is gone when its
//! link or fdinfo is ENOENT. Every other failure (EACCES, EPERM, EMFILE,
//! ENFILE, EIO, a malformed file, a listing that broke off, a thread-group
//! leader that exited while other threads run on with the fd table) makes
//! the process `unreadable`, and the scan incomplete.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::procs::identity::ProcKey;

/// A shared kernel object an fd can point at. Sockets and pipes live on
/// different pseudo filesystems, so their inode numbers are kept apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Inode {
    Socket(u64),
    Pipe(u64),
}

/// What an fd's link in /proc/PID/fd names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum FdTarget {
    Socket(u64),
    Pipe(u64),
    /// `anon_inode:[eventfd]`, `anon_inode:bpf-map`, ...: the name inside.
    AnonInode(String),
    /// A terminal: /dev/pts/N, /dev/ttyX, /dev/console.
    Tty(PathBuf),
    /// Any other path (a file, /dev/null, a FIFO opened by name).
    Path(PathBuf),
    /// Something else (`net:[N]`, `mnt:[N]`, ...).
    Other(String),
}

impl FdTarget {
    /// Parses a readlink result of /proc/PID/fd/N.
    pub fn parse(link: &str) -> Self {
        if let Some(n) = bracketed(link, "socket:") {
            return Self::Socket(n);
        }
        if let Some(n) = bracketed(link, "pipe:") {
            return Self::Pipe(n);
        }
        if let Some(rest) = link.strip_prefix("anon_inode:") {
            let name = rest.trim_start_matches('[').trim_end_matches(']');
            return Self::AnonInode(name.to_owned());
        }
        if link.starts_with('/') {
            let p = PathBuf::from(link);
            let tty = link.starts_with("/dev/pts/")
                || link.starts_with("/dev/tty")
                || link == "/dev/console";
            return if tty { Self::Tty(p) } else { Self::Path(p) };
        }
        Self::Other(link.to_owned())
    }

    pub fn inode(&self) -> Option<Inode> {
        match *self {
            Self::Socket(n) => Some(Inode::Socket(n)),
            Self::Pipe(n) => Some(Inode::Pipe(n)),
            _ => None,
        }
    }
}

/// `prefix[N]` -> N.
fn bracketed(link: &str, prefix: &str) -> Option<u64> {
    link.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The fd's access mode (`flags & O_ACCMODE` in fdinfo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FdMode {
    Read,
    Write,
    ReadWrite,
}

impl FdMode {
    pub fn can_read(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    pub fn can_write(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

/// The fields of /proc/PID/fdinfo/N that ownership needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdInfo {
    /// Open flags (octal in the file).
    pub flags: u32,
    pub pos: u64,
}

impl FdInfo {
    /// Parses the text of /proc/PID/fdinfo/N; `None` without a valid
    /// `flags:` line.
    pub fn parse(text: &str) -> Option<Self> {
        let mut flags = None;
        let mut pos = 0;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "flags" => flags = u32::from_str_radix(v.trim(), 8).ok(),
                "pos" => pos = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        Some(Self { flags: flags?, pos })
    }

    pub fn mode(&self) -> FdMode {
        match self.flags & (libc::O_ACCMODE as u32) {
            0 => FdMode::Read,
            1 => FdMode::Write,
            _ => FdMode::ReadWrite,
        }
    }
}

/// One process's fd on a shared object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct FdHolder {
    pub key: ProcKey,
    pub fd: u32,
    pub mode: FdMode,
}

/// The index a scan builds, with what it could not read.
#[derive(Clone, Debug, Default)]
pub struct FdScan {
    pub holders: HashMap<Inode, Vec<FdHolder>>,
    /// Processes whose fds were read to the end.
    pub processes: u32,
    /// Processes that exited (or were replaced by a new one with the same
    /// PID) during the scan: they hold nothing any more.
    pub vanished: u32,
    /// Live processes whose stat or fd table could not be read to the end
    /// (see the module header): a holder could hide there.
    pub unreadable: u32,
    /// Single fds skipped because they were closed between the listing and
    /// their readlink or fdinfo (ENOENT): they hold nothing any more.
    pub skipped_fds: u32,
}

impl FdScan {
    /// True when every live process was read: "no holder" then means none.
    pub fn complete(&self) -> bool {
        self.unreadable == 0
    }

    fn merge(&mut self, other: FdScan) {
        for (k, v) in other.holders {
            self.holders.entry(k).or_default().extend(v);
        }
        self.processes += other.processes;
        self.vanished += other.vanished;
        self.unreadable += other.unreadable;
        self.skipped_fds += other.skipped_fds;
    }
}

/// An I/O error that means the process (or the fd) is simply gone, as
/// opposed to one that means it could not be read.
pub fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// What ownership needs from /proc/PID/stat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatBits {
    pub key: ProcKey,
    /// The state letter (field 3) of the thread-group leader.
    pub state: char,
    /// Threads of the group (field 20).
    pub threads: u32,
}

impl StatBits {
    /// The leader exited (zombie) while other threads of the group run
    /// on: the fd table they hold is not the one /proc/PID/fd shows.
    pub fn leader_gone_threads_live(&self) -> bool {
        matches!(self.state, 'Z' | 'X') && self.threads > 1
    }
}

/// Reads `pid`'s stat. `Ok(None)`: the process is gone. `Err`: it could
/// not be read, or the line is not a kernel's.
pub fn read_stat(proc_root: &Path, pid: u32) -> std::io::Result<Option<StatBits>> {
    let stat = match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(s) => s,
        Err(e) if is_gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let field = |n| stat_field(&stat, n);
    let parsed = (|| {
        let state = field(3)?.chars().next()?;
        let threads = field(20)?.parse().ok()?;
        let start = field(22)?.parse().ok()?;
        Some(StatBits {
            key: ProcKey::new(pid, start),
            state,
            threads,
        })
    })();
    parsed
        .map(Some)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed stat line"))
}

/// Start time in ticks (field 22 of /proc/PID/stat), parsed after the last
/// ')' so a hostile comm cannot shift the fields.
pub fn start_ticks(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    stat_field(&stat, 22)?.parse().ok()
}

/// Field `n` (1-based, as in proc(5)) of a /proc/PID/stat line, n >= 3.
pub(crate) fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_ascii_whitespace().nth(n.checked_sub(3)?)
}

/// The live `ProcKey` of `pid`, if it exists and its stat can be read.
/// Callers that must tell "gone" from "unreadable" use [`read_stat`].
pub fn proc_key(proc_root: &Path, pid: u32) -> Option<ProcKey> {
    Some(ProcKey::new(pid, start_ticks(proc_root, pid)?))
}

/// Reads one fd's target and mode. `Ok(None)`: the fd is not open. `Err`:
/// its link or its fdinfo could not be read (other than "it was closed").
pub fn read_fd(
    proc_root: &Path,
    pid: u32,
    fd: u32,
) -> std::io::Result<Option<(FdTarget, Option<FdMode>)>> {
    let dir = proc_root.join(pid.to_string());
    let link = match std::fs::read_link(dir.join("fd").join(fd.to_string())) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let target = FdTarget::parse(&link.to_string_lossy());
    let mode = match std::fs::read_to_string(dir.join("fdinfo").join(fd.to_string())) {
        Ok(t) => FdInfo::parse(&t).map(|i| i.mode()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some((target, mode)))
}

/// What to record: only these inodes (`None`: every socket and pipe).
pub type Want<'a> = Option<&'a HashSet<Inode>>;

/// Scans one process. Returns its holders or why it could not.
fn scan_one(proc_root: &Path, pid: u32, want: Want<'_>) -> FdScan {
    let mut out = FdScan::default();
    let before = match read_stat(proc_root, pid) {
        Ok(Some(s)) => s,
        Ok(None) => {
            out.vanished = 1;
            return out;
        }
        Err(e) => {
            tracing::debug!(pid, error = %e, "fd walk: stat unreadable; the walk is incomplete");
            out.unreadable = 1;
            return out;
        }
    };
    let read = read_table(&proc_root.join(pid.to_string()), before.key, want);
    // The PID may have exited or been reused while we read: then what we
    // read belongs to a process we did not name, and a failure was its exit.
    let after = match read_stat(proc_root, pid) {
        Ok(Some(s)) if s.key == before.key => s,
        Ok(_) => {
            out.vanished = 1;
            return out;
        }
        Err(e) => {
            tracing::debug!(pid, error = %e, "fd walk: stat unreadable; the walk is incomplete");
            out.unreadable = 1;
            return out;
        }
    };
    if after.leader_gone_threads_live() {
        // /proc/PID/fd shows the exited leader's (empty) table.
        tracing::debug!(
            pid,
            "fd walk: leader exited, threads live; the walk is incomplete"
        );
        out.unreadable = 1;
        return out;
    }
    match read {
        Ok((found, skipped)) => {
            out.processes = 1;
            out.skipped_fds = skipped;
            for (inode, h) in found {
                out.holders.entry(inode).or_default().push(h);
            }
        }
        // A zombie whose whole group exited holds no fd at all.
        Err(_) if matches!(after.state, 'Z' | 'X') => out.processes = 1,
        Err(e) => {
            tracing::debug!(pid, error = %e, "fd walk: fd table unreadable; the walk is incomplete");
            out.unreadable = 1;
        }
    }
    out
}

/// One process's fd table: the wanted holders and the fds skipped because
/// they were closed while we read. `Err` when the table could not be read
/// to the end, or a wanted fd's link or fdinfo could not be read.
fn read_table(
    dir: &Path,
    key: ProcKey,
    want: Want<'_>,
) -> std::io::Result<(Vec<(Inode, FdHolder)>, u32)> {
    let closed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut found = Vec::new();
    let mut skipped = 0;
    for entry in std::fs::read_dir(dir.join("fd"))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let link = match std::fs::read_link(entry.path()) {
            Ok(l) => l,
            Err(e) if closed(&e) => {
                skipped += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(inode) = FdTarget::parse(&link.to_string_lossy()).inode() else {
            continue;
        };
        if want.is_some_and(|w| !w.contains(&inode)) {
            continue;
        }
        let text = match std::fs::read_to_string(dir.join("fdinfo").join(fd.to_string())) {
            Ok(t) => t,
            Err(e) if closed(&e) => {
                skipped += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let info = FdInfo::parse(&text).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "fdinfo without flags")
        })?;
        let mode = info.mode();
        found.push((inode, FdHolder { key, fd, mode }));
    }
    Ok((found, skipped))
}

/// Scans the given PIDs, skipping those in `exclude`.
pub fn scan_pids(
    proc_root: &Path,
    pids: impl IntoIterator<Item = u32>,
    exclude: &HashSet<u32>,
    want: Want<'_>,
) -> FdScan {
    let mut out = FdScan::default();
    let mut seen = HashSet::new();
    for pid in pids {
        if exclude.contains(&pid) || !seen.insert(pid) {
            continue;
        }
        out.merge(scan_one(proc_root, pid, want));
    }
    out
}

/// Every numeric entry of `proc_root` (thread-group leaders). A listing
/// that breaks off is an error: the processes after the break are unknown.
pub fn all_pids(proc_root: &Path) -> std::io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc_root)? {
        if let Some(pid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Scans every process of `proc_root`, skipping those in `exclude`.
pub fn scan_all(
    proc_root: &Path,
    exclude: &HashSet<u32>,
    want: Want<'_>,
) -> std::io::Result<FdScan> {
    Ok(scan_pids(proc_root, all_pids(proc_root)?, exclude, want))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_targets() {
        assert_eq!(
            FdTarget::parse("socket:[123456]"),
            FdTarget::Socket(123_456)
        );
        assert_eq!(FdTarget::parse("pipe:[4026532]"), FdTarget::Pipe(4_026_532));
        assert_eq!(
            FdTarget::parse("anon_inode:[eventfd]"),
            FdTarget::AnonInode("eventfd".into())
        );
        assert_eq!(
            FdTarget::parse("anon_inode:bpf-map"),
            FdTarget::AnonInode("bpf-map".into())
        );
        assert_eq!(
            FdTarget::parse("/dev/pts/3"),
            FdTarget::Tty("/dev/pts/3".into())
        );
        assert_eq!(
            FdTarget::parse("/dev/console"),
            FdTarget::Tty("/dev/console".into())
        );
        assert_eq!(
            FdTarget::parse("/dev/null"),
            FdTarget::Path("/dev/null".into())
        );
        assert_eq!(
            FdTarget::parse("/tmp/log (deleted)"),
            FdTarget::Path("/tmp/log (deleted)".into())
        );
        assert_eq!(
            FdTarget::parse("net:[4026531840]"),
            FdTarget::Other("net:[4026531840]".into())
        );
        // Malformed: never a socket.
        assert_eq!(
            FdTarget::parse("socket:[12"),
            FdTarget::Other("socket:[12".into())
        );
        assert_eq!(
            FdTarget::parse("socket:[x]"),
            FdTarget::Other("socket:[x]".into())
        );
        assert_eq!(
            FdTarget::parse("socket:[1]").inode(),
            Some(Inode::Socket(1))
        );
        assert_eq!(FdTarget::parse("pipe:[1]").inode(), Some(Inode::Pipe(1)));
        assert_eq!(FdTarget::parse("/dev/null").inode(), None);
    }

    #[test]
    fn parses_fdinfo_modes() {
        let read_end = "pos:\t0\nflags:\t00\nmnt_id:\t15\nino:\t4242\n";
        let write_end = "pos:\t0\nflags:\t01\nmnt_id:\t15\nino:\t4242\n";
        let socket = "pos:\t0\nflags:\t02000002\nmnt_id:\t8\nino:\t77\n";
        let file = "pos:\t4096\nflags:\t0100001\nmnt_id:\t30\nino:\t9\n";
        let r = FdInfo::parse(read_end).expect("read end");
        assert_eq!(r.mode(), FdMode::Read);
        assert!(r.mode().can_read() && !r.mode().can_write());
        assert_eq!(FdInfo::parse(write_end).expect("w").mode(), FdMode::Write);
        let s = FdInfo::parse(socket).expect("socket");
        assert_eq!(s.mode(), FdMode::ReadWrite);
        assert_eq!(s.flags, 0o2_000_002);
        let f = FdInfo::parse(file).expect("file");
        assert_eq!((f.pos, f.mode()), (4096, FdMode::Write));
        assert_eq!(FdInfo::parse("pos:\t0\n"), None);
        assert_eq!(FdInfo::parse("flags:\t9z\n"), None);
        assert_eq!(FdInfo::parse(""), None);
    }

    #[test]
    fn stat_fields_survive_hostile_comm() {
        let stat = "42 (a) b ) c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("1"));
        assert_eq!(stat_field(stat, 22), Some("987654"));
    }

    #[test]
    fn scans_fixture_proc_tree() {
        let root = tempfile::tempdir().expect("tempdir");
        let p = root.path();
        let mk = |pid: u32, fds: &[(u32, &str, &str)]| {
            let d = p.join(pid.to_string());
            std::fs::create_dir_all(d.join("fd")).expect("fd dir");
            std::fs::create_dir_all(d.join("fdinfo")).expect("fdinfo dir");
            let stat = format!(
                "{pid} (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {} 0",
                1000 + pid
            );
            std::fs::write(d.join("stat"), stat).expect("stat");
            for (fd, link, flags) in fds {
                std::os::unix::fs::symlink(link, d.join("fd").join(fd.to_string())).expect("link");
                std::fs::write(
                    d.join("fdinfo").join(fd.to_string()),
                    format!("pos:\t0\nflags:\t{flags}\n"),
                )
                .expect("fdinfo");
            }
        };
        mk(
            10,
            &[
                (0, "pipe:[500]", "00"),
                (1, "socket:[600]", "02"),
                (2, "/dev/null", "01"),
            ],
        );
        mk(
            11,
            &[(7, "pipe:[500]", "01"), (8, "anon_inode:[eventfd]", "02")],
        );
        // fdinfo missing for fd 9: counted, skipped.
        mk(12, &[(4, "pipe:[500]", "01")]);
        std::fs::remove_file(p.join("12/fdinfo/4")).expect("rm");
        std::fs::create_dir_all(p.join("self")).expect("non-numeric entry");

        let all = scan_all(p, &HashSet::new(), None).expect("scan");
        assert_eq!(all.processes, 3);
        assert_eq!(all.skipped_fds, 1);
        let mut pipe = all.holders[&Inode::Pipe(500)].clone();
        pipe.sort();
        assert_eq!(
            pipe,
            vec![
                FdHolder {
                    key: ProcKey::new(10, 1010),
                    fd: 0,
                    mode: FdMode::Read
                },
                FdHolder {
                    key: ProcKey::new(11, 1011),
                    fd: 7,
                    mode: FdMode::Write
                },
            ]
        );
        assert_eq!(all.holders[&Inode::Socket(600)].len(), 1);

        let want: HashSet<_> = [Inode::Socket(600)].into();
        let excl: HashSet<_> = [11].into();
        let some = scan_pids(p, [11, 10, 10, 99], &excl, Some(&want));
        assert_eq!(some.holders.len(), 1);
        assert_eq!(some.processes, 1);
        assert_eq!(some.vanished, 1, "pid 99 does not exist");
    }
}
