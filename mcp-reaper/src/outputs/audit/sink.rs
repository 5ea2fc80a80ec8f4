//! The audit writer thread and its handle, with the counters it keeps.
//!
//! Owns: the `mcp-reaper-audit` thread that owns an `AuditLog`, the bounded
//! channel in front of it, and the written / failed / dropped counters.
//! Must never: block or panic in `record` (a full channel or a stopped
//! writer drops the record and counts it), or log one line per failed
//! write (the first failure and every 1000th are logged).

use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

use super::{record::AuditRecord, writer::AuditLog};

/// Default capacity of the sink's channel.
pub const DEFAULT_SINK_CAPACITY: usize = 4096;

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
