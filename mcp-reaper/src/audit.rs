//! The JSON-lines audit log: one line per decision and action.
//!
//! Owns: the audit record schema (`AuditRecord`), the file, stdout or no-op
//! target with size-based rotation (`AuditLog`), and the writer thread that
//! takes records off the async runtime (`AuditSink`), with its counters.
//! Must never: panic or block the runtime on a slow disk (records go
//! through a bounded channel; a full channel drops and counts), let a
//! process's command line break or forge a line (every free-text field is
//! escaped and bounded), or decide anything: it records what others did.
//!
//! Timestamps are RFC 3339 UTC with microseconds, formatted here from
//! `SystemTime` (no date crate). Record ids are `<run>-<counter>`: `run` is
//! 8 random hex digits read from /dev/urandom once per daemon run, the
//! counter starts at 1, so ids are unique within a run and across runs.

use std::{
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    identity::ProcKey,
    trees::{MemberView, TreeView},
};

/// Longest command line kept per member, in bytes (after escaping).
pub const MAX_CMDLINE_BYTES: usize = 4096;
/// Longest other free-text field (`why`, `reason`, `outcome`, ids), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most members listed per record; the rest are counted in `members_omitted`.
pub const MAX_MEMBERS: usize = 256;
/// Default capacity of the sink's channel.
pub const DEFAULT_SINK_CAPACITY: usize = 4096;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditEvent {
    /// A tree's owner let go (the detector's verdict, before confirmation).
    OrphanDetected,
    /// The policy decided what to do with a tree.
    Decision,
    /// The reaper signalled a tree; `signals` and `outcome` say how it went.
    Reap,
    /// A `release` request arrived on the control socket.
    ReleaseRequest,
    Startup,
    Shutdown,
}

/// What the policy chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Reap the tree.
    Enforce,
    /// Record and count only (heuristic verdicts, observe mode).
    Observe,
    /// Say what would be reaped, signal nothing.
    DryRun,
    /// Leave the tree alone (protected, degraded tracking, not orphaned).
    Skip,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Observe => "observe",
            Self::DryRun => "dry-run",
            Self::Skip => "skip",
        }
    }
}

/// A process by identity, as the audit log and the control socket write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcRef {
    pub tgid: u32,
    pub start_ticks: u64,
}

impl From<ProcKey> for ProcRef {
    fn from(k: ProcKey) -> Self {
        Self {
            tgid: k.tgid,
            start_ticks: k.start_ticks,
        }
    }
}

impl From<ProcRef> for ProcKey {
    fn from(r: ProcRef) -> Self {
        ProcKey::new(r.tgid, r.start_ticks)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHost {
    pub pid: u32,
    pub start_ticks: u64,
    pub rule: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOwnerFd {
    pub pid: u32,
    #[serde(default)]
    pub start_ticks: u64,
    pub fd: u32,
    /// The socket or pipe inode behind `fd` when it was seen (0: unknown).
    #[serde(default)]
    pub inode: u64,
}

impl From<&crate::trees::OwnerFd> for AuditOwnerFd {
    fn from(o: &crate::trees::OwnerFd) -> Self {
        Self {
            pid: o.pid,
            start_ticks: o.start_ticks,
            fd: o.fd,
            inode: o.inode,
        }
    }
}

/// The tree a record is about. `host` and `session_id` are written as
/// `null` when unknown (a stable schema for log consumers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTree {
    pub root: ProcRef,
    pub server: String,
    pub host: Option<AuditHost>,
    pub session_id: Option<String>,
    pub owner_fds: Vec<AuditOwnerFd>,
    /// Relay chain, session owner first, down to the hop holding the
    /// tree's stdio (empty when the host holds it directly).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<ProcRef>,
    /// The link whose upstream end was released, when orphaned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_link: Option<ProcRef>,
}

impl From<&TreeView> for AuditTree {
    fn from(t: &TreeView) -> Self {
        Self {
            root: t.root.into(),
            server: bounded_text(&t.server, MAX_TEXT_BYTES),
            host: t.host.as_ref().map(|h| AuditHost {
                pid: h.pid,
                start_ticks: h.start_ticks,
                rule: bounded_text(&h.rule, MAX_TEXT_BYTES),
            }),
            session_id: t
                .session_id
                .as_deref()
                .map(|s| bounded_text(s, MAX_TEXT_BYTES)),
            owner_fds: t.owner_fds.iter().map(AuditOwnerFd::from).collect(),
            chain: t
                .chain
                .iter()
                .map(|h| ProcRef {
                    tgid: h.pid,
                    start_ticks: h.start_ticks,
                })
                .collect(),
            released_link: t.released_link.map(Into::into),
        }
    }
}

/// One member of the tree, with its command line escaped and bounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditMember {
    pub pid: u32,
    pub start_ticks: u64,
    pub cmdline: String,
}

impl AuditMember {
    pub fn new(pid: u32, start_ticks: u64, cmdline: &str) -> Self {
        Self {
            pid,
            start_ticks,
            cmdline: bounded_text(cmdline, MAX_CMDLINE_BYTES),
        }
    }

    /// From raw /proc bytes (NUL-separated, maybe not UTF-8): converted
    /// lossily, NULs shown as spaces, then escaped and bounded.
    pub fn from_raw(pid: u32, start_ticks: u64, raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches('\0').replace('\0', " ");
        Self::new(pid, start_ticks, &text)
    }
}

impl From<&MemberView> for AuditMember {
    fn from(m: &MemberView) -> Self {
        Self::new(m.pid, m.start_ticks, &m.cmdline)
    }
}

/// A signal the reaper sent, by name (`SIGSTOP`, `SIGTERM`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSignal {
    pub pid: u32,
    pub signal: String,
}

/// Milliseconds since the tree's owner let go (as first observed), for each
/// stage reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTimings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaped_ms: Option<u64>,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC with microseconds.
    pub ts: String,
    /// Unique per daemon run (`<run>-<counter>`).
    pub id: String,
    pub event: AuditEvent,
    /// Absent for `startup` and `shutdown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<AuditTree>,
    #[serde(default)]
    pub members: Vec<AuditMember>,
    /// Members beyond `MAX_MEMBERS`, not listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub members_omitted: u32,
    /// The tree's state reason (`peer-released`, `host-exited`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Why this action (policy rule, protection, dry run, degraded, ...).
    #[serde(default)]
    pub why: String,
    #[serde(default)]
    pub signals: Vec<AuditSignal>,
    /// How it ended (`reaped`, `partial: 1 in D state`, `failed: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<AuditTimings>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AuditRecord {
    /// A record stamped now with a fresh id.
    pub fn new(event: AuditEvent) -> Self {
        Self {
            ts: rfc3339_micros(SystemTime::now()),
            id: next_id(),
            event,
            tree: None,
            members: Vec::new(),
            members_omitted: 0,
            reason: None,
            action: None,
            why: String::new(),
            signals: Vec::new(),
            outcome: None,
            timings: None,
        }
    }

    /// Fills `tree`, `members` (bounded) and `reason` from a tree view.
    pub fn with_tree(mut self, t: &TreeView) -> Self {
        self.tree = Some(AuditTree::from(t));
        self.members = t
            .members
            .iter()
            .take(MAX_MEMBERS)
            .map(AuditMember::from)
            .collect();
        self.members_omitted =
            u32::try_from(t.members.len().saturating_sub(MAX_MEMBERS)).unwrap_or(u32::MAX);
        self.reason = t.reason.as_deref().map(|r| bounded_text(r, MAX_TEXT_BYTES));
        self
    }

    pub fn with_action(mut self, action: Action, why: &str) -> Self {
        self.action = Some(action);
        self.why = bounded_text(why, MAX_TEXT_BYTES);
        self
    }

    pub fn with_outcome(mut self, outcome: &str) -> Self {
        self.outcome = Some(bounded_text(outcome, MAX_TEXT_BYTES));
        self
    }

    /// The record as one line, newline included. Every string is escaped by
    /// JSON, so no field can end the line early.
    pub fn to_line(&self) -> io::Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self).map_err(io::Error::other)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Escapes control, line-separator and direction-override characters as
/// `\n`, `\u{..}` (backslashes are left alone, so text that
/// `procscan::display_cmdline` already escaped is unchanged) and cuts the
/// result at `max` bytes on a character boundary, marking the cut.
pub fn bounded_text(s: &str, max: usize) -> String {
    const MARK: &str = "...[truncated]";
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let before = out.len();
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(before);
            while out.len() + MARK.len() > max.max(MARK.len()) {
                match out.pop() {
                    Some(_) => {}
                    None => break,
                }
            }
            out.push_str(MARK);
            break;
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `2024-05-01T12:34:56.789012Z` for `t` (times before 1970 print as the
/// epoch).
pub fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        if random.is_err() {
            // No /dev/urandom (odd chroot): the pid and the clock still
            // tell runs apart.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            b = (nanos ^ std::process::id().rotate_left(16)).to_be_bytes();
        }
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    })
}

/// A fresh record id, unique within this run.
pub fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        run_prefix(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    /// Append to `path` (mode 0600); when a record would take it past
    /// `max_bytes` (0: never rotate), rename `path` -> `path.1` -> ... ->
    /// `path.<keep>` (the oldest is deleted) and start a new file.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    Stdout,
    Off,
}

/// A synchronous audit writer. Use it from a blocking context, or hand it to
/// an `AuditSink`.
#[derive(Debug)]
pub struct AuditLog {
    inner: Target,
}

#[derive(Debug)]
enum Target {
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
        file: Option<File>,
        size: u64,
    },
    Stdout,
    Off,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl AuditLog {
    /// Opens the target; a file that cannot be opened is an error now, at
    /// start-up, rather than a silent gap later.
    pub fn open(target: AuditTarget) -> io::Result<Self> {
        let inner = match target {
            AuditTarget::File {
                path,
                max_bytes,
                keep,
            } => {
                let (file, size) = open_append(&path)?;
                Target::File {
                    path,
                    max_bytes,
                    keep,
                    file: Some(file),
                    size,
                }
            }
            AuditTarget::Stdout => Target::Stdout,
            AuditTarget::Off => Target::Off,
        };
        Ok(Self { inner })
    }

    /// Writes one record as one line (rotating first when it would not
    /// fit). Never panics; a failed write is returned and the file is
    /// reopened on the next call.
    pub fn write(&mut self, rec: &AuditRecord) -> io::Result<()> {
        if matches!(self.inner, Target::Off) {
            return Ok(());
        }
        let line = rec.to_line()?;
        match &mut self.inner {
            Target::Off => Ok(()),
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            Target::File {
                path,
                max_bytes,
                keep,
                file,
                size,
            } => {
                let len = line.len() as u64;
                if *max_bytes > 0 && *size > 0 && size.saturating_add(len) > *max_bytes {
                    *file = None;
                    rotate(path, *keep)?;
                    *size = 0;
                }
                if file.is_none() {
                    let (f, s) = open_append(path)?;
                    *file = Some(f);
                    *size = s;
                }
                let Some(f) = file.as_mut() else {
                    return Err(io::Error::other("audit log file is not open"));
                };
                match f.write_all(&line) {
                    Ok(()) => {
                        *size = size.saturating_add(len);
                        Ok(())
                    }
                    Err(e) => {
                        *file = None;
                        Err(e)
                    }
                }
            }
        }
    }
}

/// `path.<keep>` is deleted, `path.<n>` becomes `path.<n+1>`, `path`
/// becomes `path.1` (with `keep` 0, `path` is deleted).
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    ignore_missing(std::fs::remove_file(numbered(path, keep)))?;
    for n in (1..keep).rev() {
        ignore_missing(std::fs::rename(numbered(path, n), numbered(path, n + 1)))?;
    }
    ignore_missing(std::fs::rename(path, numbered(path, 1)))
}

/// Counters of an `AuditSink` (export them as metrics).
#[derive(Debug, Default)]
pub struct AuditStats {
    written: AtomicU64,
    write_failures: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditStatsSnapshot {
    /// Records written.
    pub written: u64,
    /// Records the target refused (disk full, permissions, ...).
    pub write_failures: u64,
    /// Records never handed to the writer (channel full or writer gone).
    pub dropped: u64,
}

impl AuditStats {
    pub fn snapshot(&self) -> AuditStatsSnapshot {
        AuditStatsSnapshot {
            written: self.written.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(SyncSender<()>),
    Stop,
}

/// An async-friendly handle to a writer thread owning an `AuditLog`.
/// `record` never blocks: when the bounded channel is full the record is
/// dropped and counted. Clones share the thread and the counters.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: SyncSender<Msg>,
    stats: Arc<AuditStats>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Record(_) => "Record",
            Self::Flush(_) => "Flush",
            Self::Stop => "Stop",
        })
    }
}

impl AuditSink {
    /// Starts the writer thread (`mcp-reaper-audit`).
    pub fn spawn(mut log: AuditLog, capacity: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity.max(1));
        let stats = Arc::new(AuditStats::default());
        let counters = Arc::clone(&stats);
        let worker = std::thread::Builder::new()
            .name("mcp-reaper-audit".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Record(rec) => match log.write(&rec) {
                            Ok(()) => {
                                counters.written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let n = counters.write_failures.fetch_add(1, Ordering::Relaxed);
                                // Log the first failure and then every 1000th,
                                // not one line per record.
                                if n % 1000 == 0 {
                                    tracing::warn!(error = %e, failures = n + 1, "audit log write failed");
                                }
                            }
                        },
                        Msg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                        Msg::Stop => break,
                    }
                }
            })?;
        Ok(Self {
            tx,
            stats,
            worker: Arc::new(Mutex::new(Some(worker))),
        })
    }

    /// Queues a record; never blocks, never panics.
    pub fn record(&self, rec: AuditRecord) {
        match self.tx.try_send(Msg::Record(Box::new(rec))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> AuditStatsSnapshot {
        self.stats.snapshot()
    }

    /// Waits (blocking, up to `timeout`) until every record queued before
    /// this call has been written. False on timeout or a stopped writer.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_err() {
            return false;
        }
        ack_rx.recv_timeout(timeout).is_ok()
    }

    /// Writes what is queued, stops the thread and waits for it (blocking:
    /// call it from `spawn_blocking` or after the runtime has stopped).
    /// Later `record` calls are dropped and counted.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = match self.worker.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record_with(cmdline: &str) -> AuditRecord {
        let mut r =
            AuditRecord::new(AuditEvent::Reap).with_action(Action::Enforce, "peer released");
        r.tree = Some(AuditTree {
            root: ProcRef {
                tgid: 10,
                start_ticks: 20,
            },
            server: "server-everything".into(),
            host: None,
            session_id: Some("s-1".into()),
            owner_fds: vec![AuditOwnerFd {
                pid: 9,
                start_ticks: 3,
                fd: 5,
                inode: 77,
            }],
            chain: vec![ProcRef {
                tgid: 9,
                start_ticks: 1,
            }],
            released_link: None,
        });
        r.members = vec![AuditMember::new(10, 20, cmdline)];
        r.signals = vec![AuditSignal {
            pid: 10,
            signal: "SIGTERM".into(),
        }];
        r.timings = Some(AuditTimings {
            detected_ms: Some(1),
            confirmed_ms: None,
            reaped_ms: Some(30),
        });
        r.outcome = Some("reaped".into());
        r
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_micros() {
        let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_micros(s * 1_000_000 + us);
        assert_eq!(rfc3339_micros(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(at(951_782_400, 5)),
            "2000-02-29T00:00:00.000005Z"
        );
        assert_eq!(
            rfc3339_micros(at(1_700_000_000, 123_456)),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            rfc3339_micros(at(4_107_542_399, 999_999)),
            "2100-02-28T23:59:59.999999Z"
        );
        // Nanoseconds are truncated, never rounded up into the next second.
        assert_eq!(
            rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(1_999_999_999)),
            "1970-01-01T00:00:01.999999Z"
        );
    }

    #[test]
    fn ids_are_unique_within_a_run() {
        let a = AuditRecord::new(AuditEvent::Startup);
        let b = AuditRecord::new(AuditEvent::Startup);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.split('-').next(), b.id.split('-').next());
    }

    #[test]
    fn schema_names_and_optional_fields() {
        let r = record_with("node server.js");
        let v: serde_json::Value = serde_json::from_slice(&r.to_line().unwrap()).unwrap();
        assert_eq!(v["event"], "reap");
        assert_eq!(v["action"], "enforce");
        assert_eq!(v["tree"]["host"], serde_json::Value::Null);
        assert_eq!(v["tree"]["owner_fds"][0]["fd"], 5);
        assert_eq!(v["timings"]["reaped_ms"], 30);
        assert!(v["timings"].get("confirmed_ms").is_none());
        assert!(v.get("members_omitted").is_none());
        let s = AuditRecord::new(AuditEvent::Startup);
        let v: serde_json::Value = serde_json::from_slice(&s.to_line().unwrap()).unwrap();
        assert!(v.get("tree").is_none() && v.get("timings").is_none());
        let dry = serde_json::to_value(Action::DryRun).unwrap();
        assert_eq!(dry, "dry-run");
        let rr = serde_json::to_value(AuditEvent::ReleaseRequest).unwrap();
        assert_eq!(rr, "release-request");
    }

    #[test]
    fn hostile_cmdline_cannot_break_a_line() {
        let hostile =
            "node x.js\n{\"event\":\"startup\"}\r\n\"quoted\" \u{2028}\u{202e}evil\u{7}\\";
        let mut raw = hostile.as_bytes().to_vec();
        raw.extend_from_slice(b"\0--flag\0\xff\xfe\0");
        let mut r = record_with(hostile);
        r.members.push(AuditMember::from_raw(11, 21, &raw));
        r.members
            .push(AuditMember::new(12, 22, &"A".repeat(100_000)));
        let line = r.to_line().unwrap();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(!text.contains('\u{2028}') && !text.contains('\u{202e}'));
        let back: AuditRecord = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, r);
        assert!(back.members[0].cmdline.contains("\\n{\"event\""));
        assert!(back.members[1].cmdline.contains('\u{fffd}'));
        assert!(back.members[1].cmdline.contains(" --flag "));
        assert!(back.members[2].cmdline.len() <= MAX_CMDLINE_BYTES);
        assert!(back.members[2].cmdline.ends_with("[truncated]"));
    }

    #[test]
    fn bounded_text_cuts_on_char_boundaries() {
        let s = "é".repeat(50);
        let out = bounded_text(&s, 21);
        assert!(out.len() <= 21 && out.ends_with("[truncated]"), "{out}");
        assert_eq!(bounded_text("a\\nb", 100), "a\\nb");
        assert_eq!(bounded_text("a\nb", 100), "a\\nb");
    }

    #[test]
    fn rotation_keeps_keep_files_and_every_line_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut probe = record_with("node server.js");
        probe.id = "test-0000".into();
        let one = probe.to_line().unwrap().len() as u64;
        let max = one * 3 + 1;
        let mut log = AuditLog::open(AuditTarget::File {
            path: path.clone(),
            max_bytes: max,
            keep: 2,
        })
        .unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            // Fixed-width ids: every line has the same length.
            let mut r = record_with("node server.js");
            r.id = format!("test-{i:04}");
            ids.push(r.id.clone());
            log.write(&r).unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        // Newest last: .2, .1, current hold the last records in order.
        let mut seen = Vec::new();
        for name in ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() as u64 <= max, "{name} is {} bytes", text.len());
            for line in text.lines() {
                let r: AuditRecord = serde_json::from_str(line).unwrap();
                seen.push(r.id);
            }
        }
        assert_eq!(seen, ids[ids.len() - seen.len()..]);
        assert_eq!(seen.len(), 3 + 3 + 2);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn sink_writes_off_thread_and_counts_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let log = AuditLog::open(AuditTarget::File {
            path: path.clone(),
            max_bytes: 0,
            keep: 0,
        })
        .unwrap();
        let sink = AuditSink::spawn(log, 16).unwrap();
        for _ in 0..5 {
            sink.record(record_with("x"));
        }
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
        assert_eq!(sink.stats().written, 5);

        // A target that fails every write: /dev/full.
        let full = AuditLog::open(AuditTarget::File {
            path: "/dev/full".into(),
            max_bytes: 0,
            keep: 0,
        });
        if let Ok(full) = full {
            let sink = AuditSink::spawn(full, 4).unwrap();
            sink.record(record_with("x"));
            sink.record(record_with("y"));
            assert!(sink.flush(Duration::from_secs(5)));
            assert_eq!(sink.stats().write_failures, 2);
            sink.shutdown();
            sink.record(record_with("z"));
            assert_eq!(sink.stats().dropped, 1);
        }
        sink.shutdown();
    }

    #[test]
    fn off_target_writes_nothing() {
        let mut log = AuditLog::open(AuditTarget::Off).unwrap();
        log.write(&record_with("x")).unwrap();
    }
}
