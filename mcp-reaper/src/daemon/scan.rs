//! The daemon's answer to `scan`: the report `scan --json` prints, built by
//! the event loop from the tables it keeps, encoded once.
//!
//! Owns: the channel the control socket's handler asks through
//! (`scan_sender`), and building and encoding the report (`scan_report`).
//! Must never: walk /proc or read a process's files while answering (the
//! memory figures are those the metrics refresh last read), or change any
//! table, clock or verdict: a scan only looks.

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{Agent, MEMORY_MAX_AGE};
use crate::judge::trees::{
    self, DaemonInfo, SCHEMA_VERSION, SOURCE_DAEMON, ScanReport, now_unix, totals,
};

/// One `scan` request: where to send the encoded report (encoded by
/// serde_json itself, so never parsed again on its way out).
pub type ScanAsk = oneshot::Sender<Box<RawValue>>;

/// `scan` requests waiting for the loop at most; a handler that finds the
/// queue full answers that the daemon is busy.
const QUEUE: usize = 16;

impl Agent {
    /// A sender for `scan` requests, answered by `run_until`'s loop.
    pub fn scan_sender(&mut self) -> mpsc::Sender<ScanAsk> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.scan_rx = Some(rx);
        tx
    }

    /// Every tree the daemon follows, as `scan` reports it.
    pub fn scan_report(&self) -> ScanReport {
        let now_ticks = trees::uptime_ticks(&self.opts.proc_root);
        let views = self.supervisor.scan_views(
            &self.tracker,
            &self.memory,
            now_ticks,
            std::time::Instant::now(),
        );
        ScanReport {
            schema_version: SCHEMA_VERSION,
            source: SOURCE_DAEMON,
            daemon: Some(DaemonInfo {
                pid: std::process::id(),
                tier: self.active.to_string(),
                degraded: self.tracker.degraded(),
                memory_max_age_seconds: MEMORY_MAX_AGE.as_secs(),
            }),
            generated_at_unix: now_unix(),
            processes_scanned: self.tracker.live_count(),
            processes_skipped: 0,
            totals: totals(&views),
            trees: views,
        }
    }

    /// Answers one `scan` request (a requester that gave up is ignored;
    /// a report that cannot be encoded drops the request, which the
    /// handler answers as an error).
    pub(super) fn answer_scan(&mut self, ask: ScanAsk) {
        match serde_json::value::to_raw_value(&self.scan_report()) {
            Ok(doc) => {
                let _ = ask.send(doc);
            }
            Err(e) => tracing::warn!("scan: cannot encode the report: {e}"),
        }
    }
}
