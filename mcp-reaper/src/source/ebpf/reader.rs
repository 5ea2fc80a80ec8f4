//! The ring-buffer reader.
//!
//! Owns: draining the kernel's records into the tracker's channel (waking
//! on readiness for bursts, and on a short timer for the records the kernel
//! submitted without a wake-up), the loss and gap counters, and the drain
//! marks that tell the supervisor the stream has caught up.
//! Must never: block the runtime, or drop a record, a loss or a gap
//! without counting and reporting it.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::anyhow;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use mcp_reaper_common::counter;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::super::{SourceCounters, watch::KernelSeen};
use super::EbpfSource;
use crate::{
    source::decode::decode,
    source::event::{ProcessEvent, SourceMsg},
};

impl EbpfSource {
    /// Starts draining the ring buffer into `tx`; the reader task also
    /// polls the kernel's loss counters. Callable once.
    pub fn spawn_reader(
        &mut self,
        tx: mpsc::Sender<SourceMsg>,
        counters: Arc<SourceCounters>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let (Some(ring), Some(kernel_counters)) = (self.ring.take(), self.counters.take()) else {
            return Err(anyhow!("the ring-buffer reader is already running"));
        };
        // SAFETY: the RingBuf owns its map fd for its whole life and always
        // returns the same one from as_raw_fd; the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
        Ok(tokio::spawn(read_loop(
            fd,
            kernel_counters,
            tx,
            counters,
            self.opts.drain_interval,
        )))
    }
}

fn kernel_counter(map: &PerCpuArray<MapData, u64>, slot: u32) -> u64 {
    map.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

/// The reader task: drains the ring buffer on readiness and on a timer,
/// sends each record, the kernel's loss and gap counters as they grow,
/// and drain marks (`SourceMsg::Drained`).
async fn read_loop(
    mut fd: AsyncFd<RingBuf<MapData>>,
    kernel_counters: PerCpuArray<MapData, u64>,
    tx: mpsc::Sender<SourceMsg>,
    counters: Arc<SourceCounters>,
    drain_interval: Duration,
) {
    let mut tick = tokio::time::interval(drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = KernelSeen::default();
    let mut batch = Vec::with_capacity(256);
    // Drain marks: after a drain that read anything, and every
    // DRAIN_MARK_TICKS timer ticks when nothing happens.
    let mut quiet_ticks = 0u32;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => match guard {
                Ok(mut g) => g.clear_ready(),
                Err(e) => {
                    warn!("ring buffer poll failed, reader stops: {e}");
                    return;
                }
            },
            _ = tick.tick() => {}
        }
        // Every record committed before `mark` is read by the time the ring
        // is empty (one reserved earlier but still being written can trail
        // it by the program's run time: DRAIN_MARK_SLACK_NS covers that).
        let mark = crate::procs::identity::boottime_ns();
        let Some(Drained {
            read_any,
            undecoded,
        }) = drain(&mut fd, &mut batch, &tx, &counters).await
        else {
            return; // the tracker is gone: shutting down
        };
        let read_errors = kernel_counter(&kernel_counters, counter::READ_ERRORS);
        counters
            .kernel_read_errors
            .store(read_errors, Ordering::Relaxed);
        let msgs = seen.advance(
            kernel_counter(&kernel_counters, counter::LOST),
            read_errors,
            kernel_counter(&kernel_counters, counter::WATCH_FULL),
            undecoded,
        );
        for msg in msgs {
            if let SourceMsg::Lost(n) = msg {
                counters.lost.fetch_add(n, Ordering::Relaxed);
            }
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        quiet_ticks = if read_any { 0 } else { quiet_ticks + 1 };
        if (read_any || quiet_ticks >= DRAIN_MARK_TICKS)
            && let Some(mark) = mark
        {
            quiet_ticks = 0;
            let upto = mark.saturating_sub(DRAIN_MARK_SLACK_NS);
            if tx.send(SourceMsg::Drained(upto)).await.is_err() {
                return;
            }
        }
    }
}

/// What one drain of the ring read.
struct Drained {
    read_any: bool,
    /// Records that did not decode (skipped, counted).
    undecoded: u64,
}

/// Reads everything available, decoding each record before the next
/// borrow of the ring and sending outside the borrow. `None`: the
/// receiving side is gone.
async fn drain(
    fd: &mut AsyncFd<RingBuf<MapData>>,
    batch: &mut Vec<ProcessEvent>,
    tx: &mpsc::Sender<SourceMsg>,
    counters: &SourceCounters,
) -> Option<Drained> {
    let mut undecoded = 0u64;
    let mut read_any = false;
    loop {
        batch.clear();
        {
            let ring = fd.get_mut();
            while batch.len() < batch.capacity() {
                let Some(item) = ring.next() else { break };
                match decode(&item) {
                    Ok(ev) => batch.push(ev),
                    Err(e) => {
                        counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        undecoded += 1;
                        debug!("skipped a kernel record: {e}");
                    }
                }
            }
        }
        let drained = batch.len();
        read_any |= drained > 0;
        for ev in batch.drain(..) {
            counters.count_event(&ev);
            if tx.send(SourceMsg::Event(ev)).await.is_err() {
                return None;
            }
        }
        if drained < batch.capacity() {
            return Some(Drained {
                read_any,
                undecoded,
            });
        }
    }
}

/// A drain mark is sent at least every this many quiet timer ticks.
const DRAIN_MARK_TICKS: u32 = 20;

/// How far a drain mark stays behind the instant the drain began: a record
/// reserved before it may still be being written while the reader passes.
const DRAIN_MARK_SLACK_NS: u64 = 2_000_000;
