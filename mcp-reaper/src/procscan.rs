//! Reading /proc.
//!
//! Owns: every read of /proc the agent makes: listing processes, reading one
//! process (stat, status, cmdline, exe), and the cheap identity checks
//! (`read_key`, `is_alive`) everything else uses before trusting a PID. Also
//! owns the hardening against what a process controls in those files: its
//! comm and command line may be any bytes, of any length, with fake `)` and
//! newlines in them.
//!
//! Must never: panic or abandon a whole scan because one process is odd
//! (it is counted in `Snapshot::skipped`); mix files of two processes in one
//! `ProcInfo` (all files of one read go through one handle on
//! `/proc/<pid>`, so a PID reused mid-read fails the read instead);
//! keep an unbounded command line; write anything under /proc.
//!
//! Parsing of `stat` is procfs's (`procfs::process::Stat`), behind a guard:
//! its parser slices the line by the positions of `(` and the last `)` and
//! panics on lines where those slices fall outside the text (a truncated
//! `1 (x)`, or a `)` before the `(`). Files are read here rather than through
//! `procfs::process::Process` because that type reads whole files unbounded,
//! rejects a non-UTF-8 cmdline, drops empty arguments, and its `Status`
//! parser fails the whole process when any of about 25 lines is missing or
//! odd (sandboxed kernels differ), where this module needs two of them.

use std::{
    ffi::OsString,
    fmt::Write as _,
    io::Read as _,
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
};

use procfs::{FromRead as _, process::Stat};
use rustix::{
    fd::OwnedFd,
    fs::{Mode, OFlags},
    io::Errno,
};
use serde::{Serialize, Serializer};

use crate::identity::ProcKey;

/// Most bytes of a command line kept (arguments plus their NUL separators).
/// A command line can be 2 MiB; beyond this the rest is dropped and
/// `ProcInfo::cmdline_truncated` is set.
pub const MAX_CMDLINE_BYTES: usize = 4096;

/// Most bytes read from a `stat` file: 52 numbers and a 16-byte comm fit in
/// well under 1 KiB; anything longer is not a kernel's stat line.
const MAX_STAT_BYTES: usize = 4096;

/// Most bytes read from a `status` file (a `Groups:` line with thousands of
/// groups can be long; the lines needed here come before or after it).
const MAX_STATUS_BYTES: usize = 1 << 20;

/// One process as /proc showed it.
#[derive(Clone, Debug, Serialize)]
pub struct ProcInfo {
    /// (tgid, start time): field 1 and field 22 (`starttime`) of stat.
    pub key: ProcKey,
    /// Current parent (after any reparenting); 0 for PID 1 and kthreadd.
    pub ppid: u32,
    pub pgid: i32,
    pub sid: i32,
    /// Real uid (first field of `Uid:` in status).
    pub uid: u32,
    /// Stat state letter: R, S, D, Z (zombie: exited, not yet reaped), ...
    pub state: char,
    /// The kernel's comm, as the process set it (may hold any character).
    pub comm: String,
    /// Arguments, lossily converted to UTF-8, at most `MAX_CMDLINE_BYTES`
    /// in total. Empty for kernel threads and zombies. May hold control
    /// characters: log it through `display_cmdline`.
    pub cmdline: Vec<String>,
    /// The command line was longer than `MAX_CMDLINE_BYTES`.
    pub cmdline_truncated: bool,
    /// Target of the `exe` link; `None` when unreadable (another user's
    /// process without privileges, kernel threads, zombies).
    #[serde(serialize_with = "serialize_lossy_path")]
    pub exe: Option<PathBuf>,
    /// Resident set size (`VmRSS`); 0 when the kernel reports none.
    pub rss_bytes: u64,
}

impl ProcInfo {
    /// Exited but not yet reaped by its parent (or being torn down).
    pub fn is_zombie(&self) -> bool {
        is_dead_state(self.state)
    }
}

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

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (and was reaped) before or during the read.
    #[error("pid {pid}: process vanished while reading {}", path.display())]
    Vanished { pid: u32, path: PathBuf },
    /// Any other I/O failure (permissions, hidepid mounts, ...).
    #[error("pid {pid}: cannot read {}: {source}", path.display())]
    Io {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's contents are not what a kernel writes.
    #[error("pid {pid}: malformed {}: {reason}", path.display())]
    Malformed {
        pid: u32,
        path: PathBuf,
        reason: String,
    },
    /// The PID is a thread (task) id, not a thread-group id.
    #[error("pid {pid}: {} belongs to thread {pid} of process {tgid}, not to a process", path.display())]
    Thread { pid: u32, tgid: u32, path: PathBuf },
    /// The /proc directory itself could not be listed.
    #[error("cannot list {}: {source}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ProcError {
    /// The PID the error is about (`None` for a listing failure).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Vanished { pid, .. }
            | Self::Io { pid, .. }
            | Self::Malformed { pid, .. }
            | Self::Thread { pid, .. } => Some(*pid),
            Self::List { .. } => None,
        }
    }

    /// The process is simply gone: the ordinary outcome of a race with its
    /// exit, not a sign of trouble.
    pub fn is_vanished(&self) -> bool {
        matches!(self, Self::Vanished { .. })
    }
}

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

/// The cgroup path in the text of /proc/PID/cgroup (see [`read_cgroup`]).
pub fn parse_cgroup(text: &str) -> Option<String> {
    let mut systemd = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            return Some(path.to_owned());
        }
        if controllers == "name=systemd" {
            systemd = Some(path.to_owned());
        }
    }
    systemd
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

/// The command line for a log line or a terminal: arguments separated by
/// spaces, quoted when empty or holding whitespace or quotes, with control,
/// line-separator and bidirectional-override characters escaped, so a
/// process cannot forge log lines or hide text. A kernel thread (no command
/// line) shows as `[comm]`.
pub fn display_cmdline(info: &ProcInfo) -> String {
    let mut out = String::new();
    if info.cmdline.is_empty() {
        out.push('[');
        escape_into(&mut out, &info.comm, false);
        out.push(']');
        return out;
    }
    for (i, arg) in info.cmdline.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let quote = arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c == '"');
        if quote {
            out.push('"');
        }
        escape_into(&mut out, arg, quote);
        if quote {
            out.push('"');
        }
    }
    if info.cmdline_truncated {
        out.push_str(" [truncated]");
    }
    out
}

fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// A canonical decimal PID ("0", "+5" and "007" are not directory names the
/// kernel uses, and would not round-trip through `root.join(pid)`).
fn parse_pid(name: &str) -> Option<u32> {
    let pid: u32 = name.parse().ok()?;
    (pid != 0 && pid.to_string() == name).then_some(pid)
}

fn serialize_lossy_path<S: Serializer>(path: &Option<PathBuf>, ser: S) -> Result<S::Ok, S::Error> {
    // serde's own PathBuf impl fails on non-UTF-8 paths, which a process
    // can choose for its executable.
    match path {
        Some(p) => ser.serialize_some(&p.to_string_lossy()),
        None => ser.serialize_none(),
    }
}

fn escape_into(out: &mut String, s: &str, in_quotes: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if in_quotes => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Control characters (C0, DEL, C1), Unicode line and paragraph separators,
/// and the invisible direction marks and overrides that can reorder text.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Splits a raw cmdline into arguments. `truncated` says the file had more
/// than `raw` holds. The last NUL terminates the last argument; empty
/// arguments in between are real (`prog "" x`) and kept.
fn parse_cmdline(raw: &[u8], mut truncated: bool) -> (Vec<String>, bool) {
    if raw.is_empty() {
        return (Vec::new(), truncated);
    }
    let body = match raw.split_last() {
        Some((0, rest)) => rest,
        _ => raw,
    };
    let mut args = Vec::new();
    // Lossy conversion turns each invalid byte into a 3-byte U+FFFD, so the
    // budget is enforced again on the converted text.
    let mut budget = MAX_CMDLINE_BYTES;
    for part in body.split(|&b| b == 0) {
        let arg = String::from_utf8_lossy(part);
        let cost = arg.len() + 1; // the argument and its NUL
        if cost <= budget {
            budget -= cost;
            args.push(arg.into_owned());
            continue;
        }
        truncated = true;
        let mut cut = budget.saturating_sub(1).min(arg.len());
        while !arg.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut > 0 {
            args.push(arg[..cut].to_owned());
        }
        break;
    }
    (args, truncated)
}

/// The two status lines this module needs, plus Tgid to tell threads apart.
struct StatusFields {
    tgid: u32,
    uid: u32,
    rss_kib: u64,
}

fn parse_status(bytes: &[u8]) -> Result<StatusFields, String> {
    let mut tgid = None;
    let mut uid = None;
    let mut rss_kib = 0;
    // The Name line is escaped by the kernel, but may still hold bytes that
    // are not UTF-8: work on bytes, convert only the lines used.
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = String::from_utf8_lossy(value);
        let first = value.split_whitespace().next();
        match name {
            b"Tgid" => {
                tgid = Some(parse_field(first, "Tgid")?);
            }
            b"Uid" => uid = Some(parse_field(first, "Uid")?),
            b"VmRSS" => rss_kib = parse_field(first, "VmRSS")?,
            _ => {}
        }
    }
    Ok(StatusFields {
        tgid: tgid.ok_or("no Tgid line")?,
        uid: uid.ok_or("no Uid line")?,
        rss_kib,
    })
}

fn parse_field<T: std::str::FromStr>(value: Option<&str>, name: &str) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("empty {name} line"))?;
    value
        .parse()
        .map_err(|_| format!("{name} value {value:?} is not a number"))
}

/// Checks the shape procfs's stat parser slices by, then parses with it.
fn parse_stat(bytes: &[u8]) -> Result<Stat, String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim();
    let b = line.as_bytes();
    let open = line.find('(');
    let close = line.rfind(')');
    match (open, close) {
        // "<pid> (<comm>) <state> ...": a space before the first '(' and
        // after the last ')'. ASCII bytes there make every slice the parser
        // takes land on a character boundary inside the line.
        (Some(open), Some(close))
            if open >= 1
                && b[open - 1] == b' '
                && close > open
                && b.get(close + 1) == Some(&b' ') => {}
        _ => return Err("not of the form \"pid (comm) state ...\"".to_owned()),
    }
    Stat::from_read(b).map_err(|e| match e {
        procfs::ProcError::InternalError(e) => e.msg,
        other => other.to_string(),
    })
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

fn check_stat(pid: u32, path: &Path, bytes: &[u8]) -> Result<Stat, ProcError> {
    let malformed = |reason| ProcError::Malformed {
        pid,
        path: path.to_path_buf(),
        reason,
    };
    let stat = parse_stat(bytes).map_err(malformed)?;
    if u32::try_from(stat.pid).ok() != Some(pid) {
        return Err(malformed(format!("names pid {}", stat.pid)));
    }
    if stat.ppid < 0 {
        return Err(malformed(format!("negative ppid {}", stat.ppid)));
    }
    Ok(stat)
}

fn read_flags() -> OFlags {
    // NONBLOCK: a FIFO planted in a fake tree must not hang the scan.
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

/// ENOENT and ESRCH mean the process is gone; anything else is an error.
fn io_error(pid: u32, path: PathBuf, source: std::io::Error) -> ProcError {
    let errno = source.raw_os_error().map(Errno::from_raw_os_error);
    if errno == Some(Errno::NOENT) || errno == Some(Errno::SRCH) {
        ProcError::Vanished { pid, path }
    } else {
        ProcError::Io { pid, path, source }
    }
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
    use super::*;
    use std::fs;

    /// A fake /proc in a temporary directory.
    struct FakeProc {
        dir: tempfile::TempDir,
    }

    /// What a fixture process looks like; `..Fixture::default()` fills in a
    /// plain sleeping process.
    struct Fixture<'a> {
        pid: u32,
        comm: &'a [u8],
        state: char,
        ppid: i64,
        start: u64,
        uid: u32,
        rss_kib: u64,
        cmdline: &'a [u8],
    }

    impl Default for Fixture<'_> {
        fn default() -> Self {
            Self {
                pid: 100,
                comm: b"node",
                state: 'S',
                ppid: 1,
                start: 5000,
                uid: 1000,
                rss_kib: 2048,
                cmdline: b"node\0server.js\0",
            }
        }
    }

    fn stat_line(pid: u32, comm: &[u8], state: char, ppid: i64, start: u64) -> Vec<u8> {
        let mut line = format!("{pid} (").into_bytes();
        line.extend_from_slice(comm);
        line.extend_from_slice(
            format!(
                ") {state} {ppid} {pid} {pid} 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 {start} \
                 3133440 385 18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 \
                 7 8 8 9 0\n"
            )
            .as_bytes(),
        );
        line
    }

    fn status_text(name: &[u8], tgid: u32, pid: u32, uid: u32, rss_kib: u64) -> Vec<u8> {
        let mut s = b"Name:\t".to_vec();
        s.extend_from_slice(name);
        s.extend_from_slice(
            format!(
                "\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{tgid}\nNgid:\t0\nPid:\t{pid}\n\
                 PPid:\t1\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
                 Gid:\t100\t100\t100\t100\nFDSize:\t64\nGroups:\t100 \n\
                 VmRSS:\t    {rss_kib} kB\nThreads:\t1\n"
            )
            .as_bytes(),
        );
        s
    }

    impl FakeProc {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            // Non-process entries a real /proc has.
            fs::write(dir.path().join("meminfo"), "MemTotal: 1 kB\n").unwrap();
            fs::create_dir(dir.path().join("sys")).unwrap();
            Self { dir }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn add(&self, f: Fixture<'_>) {
            self.write(
                f.pid,
                "stat",
                &stat_line(f.pid, f.comm, f.state, f.ppid, f.start),
            );
            self.write(
                f.pid,
                "status",
                &status_text(f.comm, f.pid, f.pid, f.uid, f.rss_kib),
            );
            self.write(f.pid, "cmdline", f.cmdline);
        }

        fn write(&self, pid: u32, file: &str, contents: &[u8]) {
            let dir = self.root().join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), contents).unwrap();
        }
    }

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
    fn comm_with_parens_and_spaces_uses_the_last_paren() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            comm: b"a) b (c",
            ..Fixture::default()
        });
        // A comm that imitates the fields after it: state Z, ppid 1.
        fake.add(Fixture {
            pid: 101,
            comm: b"x) Z 1 1 1 0 (",
            ppid: 100,
            start: 6000,
            ..Fixture::default()
        });

        let p = read_process(fake.root(), 100).unwrap();
        assert_eq!(p.comm, "a) b (c");
        assert_eq!((p.state, p.ppid, p.key.start_ticks), ('S', 1, 5000));

        let q = read_process(fake.root(), 101).unwrap();
        assert_eq!(q.comm, "x) Z 1 1 1 0 (");
        assert_eq!((q.state, q.ppid, q.key.start_ticks), ('S', 100, 6000));
        assert!(is_alive(fake.root(), q.key));
    }

    #[test]
    fn comm_with_newline_and_non_utf8() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            comm: b"ev\nil\xff",
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        assert_eq!(p.comm, "ev\nil\u{fffd}");
        assert_eq!(p.key, ProcKey::new(100, 5000));
    }

    #[test]
    fn non_utf8_cmdline_is_converted_lossily() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            cmdline: b"py\xfe\xffthon\0-c\0\xc3\0",
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        assert_eq!(p.cmdline, ["py\u{fffd}\u{fffd}thon", "-c", "\u{fffd}"]);
        assert!(!p.cmdline_truncated);
    }

    #[test]
    fn long_cmdline_is_bounded_and_marked() {
        let fake = FakeProc::new();
        let mut long = Vec::new();
        for i in 0..(128 * 1024 / 8) {
            long.extend_from_slice(format!("arg{i:04}").as_bytes());
            long.push(0);
        }
        assert!(long.len() >= 128 * 1024);
        fake.add(Fixture {
            cmdline: &long,
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        assert!(p.cmdline_truncated);
        let stored: usize = p.cmdline.iter().map(|a| a.len() + 1).sum();
        assert!(stored <= MAX_CMDLINE_BYTES, "{stored}");
        assert!(stored > MAX_CMDLINE_BYTES - 16, "{stored}");
        assert_eq!(p.cmdline[0], "arg0000");
        assert!(display_cmdline(&p).ends_with(" [truncated]"));
    }

    #[test]
    fn long_invalid_cmdline_stays_within_budget_after_conversion() {
        let fake = FakeProc::new();
        let junk = vec![0xffu8; 3 * MAX_CMDLINE_BYTES];
        fake.add(Fixture {
            cmdline: &junk,
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        assert!(p.cmdline_truncated);
        assert_eq!(p.cmdline.len(), 1);
        assert!(p.cmdline[0].len() < MAX_CMDLINE_BYTES);
        assert!(p.cmdline[0].chars().all(|c| c == '\u{fffd}'));
    }

    #[test]
    fn cmdline_exactly_at_the_limit_is_not_truncated() {
        let fake = FakeProc::new();
        let mut exact = vec![b'a'; MAX_CMDLINE_BYTES - 1];
        exact.push(0);
        fake.add(Fixture {
            cmdline: &exact,
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        assert!(!p.cmdline_truncated);
        assert_eq!(p.cmdline[0].len(), MAX_CMDLINE_BYTES - 1);
    }

    #[test]
    fn empty_arguments_are_kept_and_kernel_threads_have_none() {
        assert_eq!(
            parse_cmdline(b"sh\0\0-c\0\0", false).0,
            ["sh", "", "-c", ""]
        );
        // setproctitle-style: one string, no terminator.
        assert_eq!(parse_cmdline(b"nginx: worker", false).0, ["nginx: worker"]);

        let fake = FakeProc::new();
        fake.add(Fixture {
            pid: 2,
            comm: b"kthreadd",
            ppid: 0,
            cmdline: b"",
            rss_kib: 0,
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 2).unwrap();
        assert!(p.cmdline.is_empty());
        assert_eq!(p.ppid, 0);
        assert_eq!(p.exe, None);
        assert_eq!(display_cmdline(&p), "[kthreadd]");
    }

    #[test]
    fn display_escapes_what_could_forge_a_log_line() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            cmdline: b"node\0x\nlevel=error msg=\"forged\"\0a\x1b[2Jb\0\0tab\there\0back\\n\0rtl\xe2\x80\xaeexe\0",
            ..Fixture::default()
        });
        let p = read_process(fake.root(), 100).unwrap();
        // The data keeps the raw characters...
        assert_eq!(p.cmdline[1], "x\nlevel=error msg=\"forged\"");
        // ...the display cannot break a line, clear a screen or reorder text.
        let shown = display_cmdline(&p);
        assert!(!shown.chars().any(needs_escape), "{shown:?}");
        assert_eq!(
            shown,
            r#"node "x\nlevel=error msg=\"forged\"" a\u{1b}[2Jb "" "tab\there" back\\n rtl\u{202e}exe"#
        );

        let kthread = ProcInfo {
            cmdline: Vec::new(),
            comm: "k\r\nX".to_owned(),
            ..p
        };
        assert_eq!(display_cmdline(&kthread), r"[k\r\nX]");
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
    fn garbage_stat_files_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"100",
            b"100 (trunc",
            b"100 (trunc)",
            b"100 (trunc)\n",
            b"100 (x) ",
            b"100 (x) S",
            b"100 (x) S 1 100 100",
            b") 100 (x",
            b"(x) S 1 2 3",
            b"100(x) S 1 2 3",
            b"\xc3\xa9(x) S",
            b"100 (x)\xc3\xa9 S 1",
            b"100 (x) S one 2 3",
            b"100 (x) S -1 100 100 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 5000 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            b"\xff\xfe\xfd\xfc",
        ];
        for (i, stat) in cases.iter().enumerate() {
            let fake = FakeProc::new();
            fake.add(Fixture::default());
            fake.write(100, "stat", stat);
            let err = read_process(fake.root(), 100).expect_err(&format!("case {i}"));
            assert!(
                matches!(err, ProcError::Malformed { pid: 100, .. }),
                "case {i}: {err}"
            );
            assert_eq!(read_key(fake.root(), 100), None, "case {i}");
            assert!(!is_alive(fake.root(), ProcKey::new(100, 5000)), "case {i}");
            let snap = snapshot(fake.root());
            assert_eq!((snap.procs.len(), snap.skipped), (0, 1), "case {i}");
        }
    }

    #[test]
    fn negative_ppid_and_wrong_pid_are_malformed() {
        let fake = FakeProc::new();
        fake.add(Fixture {
            ppid: -4,
            ..Fixture::default()
        });
        let err = read_process(fake.root(), 100).unwrap_err();
        assert!(err.to_string().contains("negative ppid"), "{err}");

        let fake = FakeProc::new();
        fake.add(Fixture::default());
        fake.write(100, "stat", &stat_line(101, b"node", 'S', 1, 5000));
        let err = read_process(fake.root(), 100).unwrap_err();
        assert!(err.to_string().contains("names pid 101"), "{err}");
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
