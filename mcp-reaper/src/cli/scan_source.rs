//! Who answers `mcp-reaper scan`: a running daemon over its control socket,
//! or a walk of /proc by `scan` itself.
//!
//! Owns: the choice (`--standalone`, `--daemon-socket off` or another
//! `--proc-root` mean a walk; else the daemon is asked first), the fallback
//! and the note that says why, the line naming the source, and the answer
//! in both forms (the JSON document, the rows a table and `--check` read).
//! Must never: hide a fallback (the note says why, the answer says which
//! source), let a daemon that hangs stall `scan` past its timeout, or
//! change an exit code because of who answered.

use std::{ops::Range, path::Path, time::Duration};

use serde_json::value::RawValue;

use crate::{
    judge::trees::{ReportRows, ScanReport},
    outputs::control::{self, ControlError, Request},
};

/// How long `scan` waits for a daemon before it walks /proc itself.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(2);

/// Who is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan<'a> {
    /// The daemon on this socket first.
    AskDaemon(&'a Path),
    /// A walk of /proc only; the reason is shown.
    Standalone(&'static str),
}

/// Who is asked, from the command line: a walk when told to, when no
/// socket is given, or when the processes are not this host's /proc (the
/// daemon only knows those).
pub fn plan<'a>(standalone: bool, socket: &'a str, proc_root: &Path) -> Plan<'a> {
    if standalone {
        Plan::Standalone("--standalone")
    } else if socket == "off" {
        Plan::Standalone("--daemon-socket off")
    } else if proc_root != Path::new("/proc") {
        Plan::Standalone("--proc-root is not /proc")
    } else {
        Plan::AskDaemon(Path::new(socket))
    }
}

/// Why the daemon on `socket` did not answer, for the note on stderr.
pub fn fallback_note(socket: &Path, err: &ControlError) -> String {
    let at = socket.display();
    let why = match err {
        ControlError::NotRunning { .. } => format!("no daemon is running: no socket at {at}"),
        ControlError::Refused { .. } => {
            format!("no daemon is running: {at} is a stale socket")
        }
        ControlError::PermissionDenied { detail } => format!(
            "the daemon on {at} refused this user ({detail}); root, or a member of the \
             daemon's `[control] read_group`, may ask it"
        ),
        ControlError::Timeout { after, .. } => {
            format!("the daemon on {at} did not answer within {after:?}")
        }
        other => format!("the daemon on {at} could not answer: {other}"),
    };
    format!(
        "{why}: scanning /proc directly, without the daemon's verdicts (clocks, releases, grace)"
    )
}

/// An answer to print.
#[derive(Debug)]
pub struct Answer {
    /// Holds the JSON document at `doc`: a daemon's whole response line,
    /// or a walk's report.
    text: String,
    doc: Range<usize>,
    /// Parsed back from the document only when a table or `--check` needs
    /// it.
    rows: Option<ReportRows>,
    /// Who answered, for the first line of the table.
    pub source_line: String,
}

impl Answer {
    /// A walk's report; `why` says why no daemon answered.
    pub fn standalone(report: &ScanReport, why: &str) -> Result<Self, String> {
        let text =
            serde_json::to_string_pretty(report).map_err(|e| format!("cannot encode: {e}"))?;
        Ok(Self {
            doc: 0..text.len(),
            text,
            rows: Some(ReportRows::of(report)),
            source_line: format!("source: standalone walk of /proc ({why})"),
        })
    }

    /// A daemon's document, where it lies in its response line.
    pub fn daemon(reply: DaemonReply, socket: &Path) -> Self {
        Self {
            text: reply.line,
            doc: reply.doc,
            rows: None,
            source_line: format!("source: daemon on {}", socket.display()),
        }
    }

    /// The JSON document `--json` prints (without a final newline).
    pub fn json(&self) -> &str {
        self.text.get(self.doc.clone()).unwrap_or_default()
    }

    /// The rows of the answer (parsed from a daemon's document on first
    /// use); an error for a document that is not a scan report.
    pub fn rows(&mut self) -> Result<&ReportRows, String> {
        if self.rows.is_none() {
            let rows: ReportRows = serde_json::from_str(self.json())
                .map_err(|e| format!("bad scan report from the daemon: {e}"))?;
            if let Some(d) = &rows.daemon {
                self.source_line = format!(
                    "{} (pid {}, {} tier{}; memory figures up to {} s old)",
                    self.source_line,
                    d.pid,
                    d.tier,
                    if d.degraded { ", degraded" } else { "" },
                    d.memory_max_age_seconds
                );
            }
            self.rows = Some(rows);
        }
        self.rows
            .as_ref()
            .ok_or_else(|| "no scan report".to_owned())
    }
}

/// A daemon's answer to `scan`: its response line, and where the document
/// lies in it (read in place, never copied).
#[derive(Debug)]
pub struct DaemonReply {
    line: String,
    doc: Range<usize>,
}

impl DaemonReply {
    /// The document in `line`, a `scan` response line; or why there is
    /// none, as the daemon said it.
    pub fn parse(line: Vec<u8>) -> Result<Self, ControlError> {
        #[derive(serde::Deserialize)]
        struct Reply<'a> {
            ok: bool,
            #[serde(default)]
            error: Option<String>,
            #[serde(borrow, default)]
            scan: Option<&'a RawValue>,
        }
        let line = String::from_utf8(line)
            .map_err(|_| ControlError::Protocol("the answer is not UTF-8".into()))?;
        let reply: Reply<'_> =
            serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.to_string()))?;
        if !reply.ok {
            let err = reply.error.unwrap_or_else(|| "no reason given".into());
            return Err(control::permission_denied(&err).unwrap_or(ControlError::Protocol(err)));
        }
        let doc = reply
            .scan
            .ok_or_else(|| ControlError::Protocol("the answer carries no scan".into()))?
            .get();
        // The document is a slice of `line`: its place, by address.
        let start = (doc.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
        let doc = start..start + doc.len();
        Ok(Self { line, doc })
    }
}

/// Asks the daemon on `socket` for its trees: its answer, or why not.
pub fn ask_daemon(socket: &Path, timeout: Duration) -> Result<DaemonReply, String> {
    control::request_line(socket, &Request::Scan, timeout)
        .and_then(DaemonReply::parse)
        .map_err(|e| fallback_note(socket, &e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn the_daemon_is_asked_unless_told_otherwise() {
        let proc = Path::new("/proc");
        let sock = "/run/mcp-reaper/control.sock";
        for (standalone, socket, root, want) in [
            (false, sock, proc, Plan::AskDaemon(Path::new(sock))),
            (true, sock, proc, Plan::Standalone("--standalone")),
            (false, "off", proc, Plan::Standalone("--daemon-socket off")),
            (
                false,
                sock,
                Path::new("/tmp/fake-proc"),
                Plan::Standalone("--proc-root is not /proc"),
            ),
            (true, "off", proc, Plan::Standalone("--standalone")),
        ] {
            assert_eq!(
                plan(standalone, socket, root),
                want,
                "{standalone} {socket}"
            );
        }
    }

    #[test]
    fn each_fallback_says_why() {
        let s = PathBuf::from("/x.sock");
        for (err, says) in [
            (
                ControlError::NotRunning { path: s.clone() },
                "no daemon is running: no socket at /x.sock",
            ),
            (ControlError::Refused { path: s.clone() }, "stale socket"),
            (
                ControlError::PermissionDenied {
                    detail: "nope".into(),
                },
                "refused this user (nope); root, or a member",
            ),
            (
                ControlError::Timeout {
                    path: s.clone(),
                    after: Duration::from_secs(2),
                },
                "did not answer within 2s",
            ),
            (
                ControlError::Protocol("garbage".into()),
                "could not answer: bad response from the daemon: garbage",
            ),
        ] {
            let note = fallback_note(&s, &err);
            assert!(note.contains(says), "{note}");
            assert!(note.contains("scanning /proc directly"), "{note}");
        }
    }

    #[test]
    fn a_daemon_document_is_read_back_with_its_verdicts() {
        let doc = r#"{"schema_version":1,"source":"daemon","daemon":{"pid":7,"tier":"ebpf",
            "degraded":false,"memory_max_age_seconds":30},"generated_at_unix":1,
            "processes_scanned":10,"processes_skipped":0,"trees":[{"root":{"tgid":5,
            "start_ticks":9},"server":"fake","host":null,"session_id":null,"owner_fds":[],
            "chain":[],"released_link":null,"state":"orphaned","judged_by":"daemon",
            "reason":"peer-released","age_seconds":3,"members":[{"pid":5}],"rss_bytes":0,
            "pss_bytes":0,"ownership":null,"daemon":{"action":"enforce","decision":"wait",
            "orphaned_for_seconds":1,"grace_left_seconds":1,"idle_for_seconds":null,
            "reaping":false,"released_by":[]}}],"totals":{"trees":1,"live":0,"orphaned":1,
            "suspect":0,"unknown":0,"orphaned_rss_bytes":0,"orphaned_pss_bytes":0,
            "total_rss_bytes":0,"total_pss_bytes":0}}"#;
        let line = format!("{{\"ok\":true,\"message\":\"m\",\"scan\":{doc}}}\n");
        let reply = DaemonReply::parse(line.into_bytes()).unwrap();
        let mut a = Answer::daemon(reply, Path::new("/x.sock"));
        assert_eq!(a.json(), doc);
        let rows = a.rows().unwrap().clone();
        assert_eq!(rows.trees.len(), 1);
        assert_eq!(crate::cli::scan::exit_code(&rows, true), 1);
        let table = crate::cli::scan::render_human(&rows, &a.source_line);
        assert!(
            table.starts_with("source: daemon on /x.sock (pid 7, ebpf tier;"),
            "{table}"
        );
        assert!(table.contains("peer-released (grace 1s left)"), "{table}");
    }

    #[test]
    fn a_refusal_or_an_answer_without_a_scan_is_no_document() {
        for (line, want) in [
            (
                r#"{"ok":false,"error":"permission denied: no"}"#,
                "permission denied: no",
            ),
            (
                r#"{"ok":false,"error":"busy"}"#,
                "bad response from the daemon: busy",
            ),
            (r#"{"ok":true,"message":"m"}"#, "carries no scan"),
            (r#"{"ok":true,"scan":{"a":"#, "bad response"),
            ("\u{ff}", "bad response"),
        ] {
            let err = DaemonReply::parse(line.as_bytes().to_vec()).unwrap_err();
            assert!(err.to_string().contains(want), "{line}: {err}");
        }
    }
}
