//! `mcp_reaper_event_source_info`: an info metric, so always one series of
//! value 1 whose `tier` label names the event source in use.
//!
//! Owns: the tier series and the lock that makes a change of tier and a
//! scrape exclude each other (a scrape sees the old tier or the new one,
//! never both and never none).
//! Must never: export a series for a tier not in use, or any value but 1.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

/// The one-series info gauge of the tier in use. Clones share the series.
#[derive(Clone)]
pub(super) struct TierInfo {
    gauge: IntGaugeVec,
    /// Held while the series is replaced and while it is collected.
    lock: Arc<Mutex<()>>,
}

impl TierInfo {
    /// No series until [`TierInfo::set`]: nothing is claimed before a
    /// source runs.
    pub(super) fn new(name: &str, help: &str) -> prometheus::Result<Self> {
        Ok(Self {
            gauge: IntGaugeVec::new(Opts::new(name, help), &["tier"])?,
            lock: Arc::new(Mutex::new(())),
        })
    }

    /// Makes `tier` the one series (value 1).
    pub(super) fn set(&self, tier: &str) {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.gauge.reset();
        self.gauge.with_label_values(&[tier]).set(1);
    }
}

impl Collector for TierInfo {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.gauge.collect()
    }
}
