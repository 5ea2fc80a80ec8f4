//! Who holds which socket and pipe, from /proc/PID/fd and /proc/PID/fdinfo.
//!
//! Owns: parsing fd link targets (`socket:[N]`, `pipe:[N]`, anon inodes,
//! paths) and fdinfo flags, and building the inode -> holders index for a
//! set of processes or for all of /proc. Must never: panic on or trust what
//! /proc returns (processes and fds vanish mid-read; such fds are counted
//! and skipped), or name a holder by a bare PID: every holder carries its
//! `ProcKey`, read before and checked after its fds.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::identity::ProcKey;

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
    /// Processes whose fd table could not be listed although they live
    /// (permissions): a holder could hide there.
    pub unreadable: u32,
    /// Single fds skipped: closed between listing and readlink, or fdinfo
    /// unreadable.
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

/// The live `ProcKey` of `pid`, if it exists.
pub fn proc_key(proc_root: &Path, pid: u32) -> Option<ProcKey> {
    Some(ProcKey::new(pid, start_ticks(proc_root, pid)?))
}

/// Reads one fd's target and mode. `Ok(None)`: the fd is not open.
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
    let mode = std::fs::read_to_string(dir.join("fdinfo").join(fd.to_string()))
        .ok()
        .and_then(|t| FdInfo::parse(&t))
        .map(|i| i.mode());
    Ok(Some((target, mode)))
}

/// What to record: only these inodes (`None`: every socket and pipe).
pub type Want<'a> = Option<&'a HashSet<Inode>>;

/// Scans one process. Returns its holders or why it could not.
fn scan_one(proc_root: &Path, pid: u32, want: Want<'_>) -> FdScan {
    let mut out = FdScan::default();
    let Some(key) = proc_key(proc_root, pid) else {
        out.vanished = 1;
        return out;
    };
    let dir = proc_root.join(pid.to_string());
    let entries = match std::fs::read_dir(dir.join("fd")) {
        Ok(e) => e,
        Err(e) => {
            // A zombie or an exited process has no fd table to list.
            if e.kind() == std::io::ErrorKind::NotFound || proc_key(proc_root, pid) != Some(key) {
                out.vanished = 1;
            } else if zombie(proc_root, pid) {
                out.processes = 1;
            } else {
                out.unreadable = 1;
            }
            return out;
        }
    };
    let mut found = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else {
            out.skipped_fds += 1;
            continue;
        };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(link) = std::fs::read_link(entry.path()) else {
            out.skipped_fds += 1;
            continue;
        };
        let Some(inode) = FdTarget::parse(&link.to_string_lossy()).inode() else {
            continue;
        };
        if want.is_some_and(|w| !w.contains(&inode)) {
            continue;
        }
        let Some(info) = std::fs::read_to_string(dir.join("fdinfo").join(fd.to_string()))
            .ok()
            .and_then(|t| FdInfo::parse(&t))
        else {
            out.skipped_fds += 1;
            continue;
        };
        found.push((
            inode,
            FdHolder {
                key,
                fd,
                mode: info.mode(),
            },
        ));
    }
    // The PID may have been reused while we read: then what we read
    // belongs to a process we did not name.
    if proc_key(proc_root, pid) != Some(key) {
        out.vanished = 1;
        return out;
    }
    out.processes = 1;
    for (inode, h) in found {
        out.holders.entry(inode).or_default().push(h);
    }
    out
}

fn zombie(proc_root: &Path, pid: u32) -> bool {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
        .ok()
        .is_some_and(|s| matches!(stat_field(&s, 3), Some("Z" | "X")))
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

/// Every numeric entry of `proc_root` (thread-group leaders).
pub fn all_pids(proc_root: &Path) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(proc_root)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
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
