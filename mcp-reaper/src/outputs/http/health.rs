//! What the probes report: readiness (`Health`, from the daemon's published
//! state) and liveness (`Heartbeat`, beaten by the agent's main loop).
//!
//! Owns: the verdict of `/readyz` (and of `/healthz`, its alias), the
//! heartbeat, and how long without a beat `/livez` tolerates.
//! Must never: hold a PID or command line in a verdict, or cost the loop
//! more than one atomic store per beat.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How long the main loop may go without a turn before `/livez` fails.
/// The loop turns at least every supervision tick (50 ms by default) and
/// every metrics refresh (2 s); 30 s leaves room for a long /proc resync
/// on a large machine, and with a probe every 20 s and three failures a
/// hung loop is restarted within about two minutes.
pub const LIVENESS_STALE: Duration = Duration::from_secs(30);

/// What `/readyz` (and `/healthz`) reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// An event source (any tier) is attached and feeding the tracker.
    pub source_attached: bool,
    /// Tracking is degraded (events lost and not yet reconciled).
    pub degraded: bool,
    /// Optional detail for the failure message (e.g. why the source is not
    /// attached). Must not hold PIDs or command lines.
    pub detail: Option<String>,
}

impl Health {
    /// `Ok` when ready, else why not.
    ///
    /// # Errors
    /// The reason the daemon is not ready, one line.
    pub fn verdict(&self) -> Result<(), String> {
        let why = if !self.source_attached {
            "event source not attached"
        } else if self.degraded {
            "degraded: events lost, resync pending"
        } else {
            return Ok(());
        };
        Err(match &self.detail {
            Some(d) => format!("{why}: {d}"),
            None => why.to_string(),
        })
    }
}

/// How the server asks the daemon for its readiness.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;

/// The main loop's heartbeat: the loop calls [`Heartbeat::beat`] on every
/// turn, `/livez` fails once no beat came for `stale_after`. Clones share
/// the beat. A new heartbeat counts as just beaten.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    inner: Arc<Beats>,
}

#[derive(Debug)]
struct Beats {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last beat.
    last_ms: AtomicU64,
    stale_after: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new(LIVENESS_STALE)
    }
}

impl Heartbeat {
    /// A heartbeat that fails liveness after `stale_after` without a beat.
    #[must_use]
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(Beats {
                epoch: Instant::now(),
                last_ms: AtomicU64::new(0),
                stale_after,
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The loop turned.
    pub fn beat(&self) {
        self.inner.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Time since the last beat (or since creation).
    #[must_use]
    pub fn since_last_beat(&self) -> Duration {
        let last = self.inner.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// `Ok` while the last beat is recent enough, else why not.
    ///
    /// # Errors
    /// How long the loop has not turned, one line.
    pub fn verdict(&self) -> Result<(), String> {
        let since = self.since_last_beat();
        if since <= self.inner.stale_after {
            return Ok(());
        }
        Err(format!(
            "main loop stalled: no turn for {:.1}s (limit {}s)",
            since.as_secs_f64(),
            self.inner.stale_after.as_secs_f64()
        ))
    }
}
