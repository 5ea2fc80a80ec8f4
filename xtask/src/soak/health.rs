//! What the daemon said about itself while the soak ran: its
//! `mcp_reaper_degraded` gauge, read every [`EVERY`]. A tree let go while
//! the daemon reported degraded tracking (events lost, a full watch map)
//! may rightly be withheld: incomplete evidence is never a release. Such a
//! tree still alive after its allowance is counted as withheld, not leaked;
//! a tree left alive while the daemon claimed to be whole is a leak.
//!
//! Owns: the samples. Must never: judge a tree by the daemon's word about
//! the tree (only its word about itself is read here).
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::child_daemon::get_metrics;

pub const EVERY: Duration = Duration::from_millis(250);

/// One reading: when, and whether the daemon said it was degraded (`None`:
/// no answer, the daemon being down or too slow).
pub type Sample = (Instant, Option<bool>);

#[derive(Default)]
pub struct Health {
    samples: Mutex<Vec<Sample>>,
}

impl Health {
    /// Reads the gauge every [`EVERY`] until `stop`.
    pub fn poll(&self, addr: SocketAddr, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let degraded = get_metrics(addr).ok().and_then(|body| {
                gauge(&String::from_utf8_lossy(&body), "mcp_reaper_degraded").map(|v| v > 0.0)
            });
            if let Ok(mut s) = self.samples.lock() {
                s.push((at, degraded));
            }
            std::thread::sleep(EVERY.saturating_sub(at.elapsed()));
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A gauge without labels.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether the daemon reported degraded tracking at any reading in
/// `[from, to]`.
pub fn degraded_within(samples: &[Sample], from: Instant, to: Instant) -> bool {
    samples
        .iter()
        .any(|(at, d)| *at >= from && *at <= to && *d == Some(true))
}

/// The share of answered readings that said degraded.
pub fn degraded_share(samples: &[Sample]) -> f64 {
    let answered: Vec<bool> = samples.iter().filter_map(|(_, d)| *d).collect();
    if answered.is_empty() {
        return 0.0;
    }
    answered.iter().filter(|d| **d).count() as f64 / answered.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unlabelled_gauge_only() {
        let text =
            "# TYPE mcp_reaper_degraded gauge\nmcp_reaper_degraded_x 5\nmcp_reaper_degraded 1\n";
        assert_eq!(gauge(text, "mcp_reaper_degraded"), Some(1.0));
        assert_eq!(gauge("nothing 1\n", "mcp_reaper_degraded"), None);
    }

    #[test]
    fn degraded_only_counts_inside_the_window() {
        let t0 = Instant::now();
        let s = |ms, d| (t0 + Duration::from_millis(ms), d);
        let samples = vec![
            s(0, Some(true)),
            s(500, Some(false)),
            s(900, None),
            s(1500, Some(true)),
        ];
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(degraded_within(&samples, at(0), at(100)));
        assert!(!degraded_within(&samples, at(100), at(1000)));
        assert!(degraded_within(&samples, at(1000), at(2000)));
        assert!((degraded_share(&samples) - 2.0 / 3.0).abs() < 1e-9);
    }
}
