//! The daemon's read-only HTTP endpoint: `/metrics`, the probes `/livez`
//! (the main loop turns), `/readyz` (an event source is attached and
//! tracking is not degraded) and `/healthz` (an alias of `/readyz`), and a
//! landing page.
//!
//! Owns: the listener, its limits (connections at once in all and per
//! client, time to send the request head, time per connection, head size)
//! and the probes' inputs (`Health`, `Heartbeat`).
//! Must never: change any state (every route is GET/HEAD), expose anything
//! but the registry and the probes' verdicts, or let one client, slow,
//! idle or hostile, hold more than its share: a local user opening idle
//! connections must not lock out Prometheus or the kubelet's probes.
//!
//! Why not hyper: five fixed read-only routes, no bodies to read, no
//! keep-alive, no TLS. A few hundred lines on tokio cover them without
//! adding hyper, hyper-util, http, http-body, httparse and their
//! dependencies to a privileged daemon's build and audit surface. Anything
//! needing more (TLS, auth) belongs in a reverse proxy in front of it.
//!
//! Default listen address 127.0.0.1:9863: loopback only, since the metrics
//! describe the host's processes; 9863 sits in the range exporters use, is
//! not in /etc/services and no well-known exporter uses it.
//!
//! Layout, lowest first (each file uses only those above it):
//! - `health`: the readiness verdict and the main loop's heartbeat;
//! - `peer`: who a connection's client is (a local user, or an address);
//! - `slots`: connections at once, in all and per client;
//! - `respond`: the request head, the routes and the response.

mod health;
mod peer;
mod respond;
mod slots;

#[cfg(test)]
mod tests;

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use prometheus::Registry;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

pub use health::{Health, HealthFn, Heartbeat, LIVENESS_STALE};
#[cfg(feature = "fuzzing")]
pub(crate) use respond::{request_line, route_path};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9863";

/// The listener's limits.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Connections served at once; more are closed on accept.
    connections: usize,
    /// Connections one client may hold at once (a local client is a user,
    /// a remote one an address); more are closed on accept.
    per_client: usize,
    /// Time from accept to the end of the request head.
    head_timeout: Duration,
    /// Time from accept to the response sent.
    connection_timeout: Duration,
}

impl Limits {
    /// Prometheus scrapes one connection at a time and the kubelet probes
    /// two, so four per client leave headroom while eight clients, not
    /// one, are needed to take every slot. A request head is a few hundred
    /// bytes sent at once: two seconds is generous.
    const DEFAULT: Limits = Limits {
        connections: 32,
        per_client: 4,
        head_timeout: Duration::from_secs(2),
        connection_timeout: Duration::from_secs(10),
    };
}

/// Binds `addr` and serves until `shutdown` completes.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: HealthFn,
    heartbeat: Heartbeat,
    shutdown: impl Future,
) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, registry, health, heartbeat, shutdown).await;
    Ok(())
}

/// Serves on an already bound listener until `shutdown` completes.
/// Connections in flight finish on their own (each is time-limited).
/// `/readyz` asks `health`; `/livez` reads `heartbeat`, which the daemon's
/// main loop beats.
pub async fn serve_on(
    listener: TcpListener,
    registry: Registry,
    health: HealthFn,
    heartbeat: Heartbeat,
    shutdown: impl Future,
) {
    serve_with(
        listener,
        registry,
        health,
        heartbeat,
        Limits::DEFAULT,
        shutdown,
    )
    .await;
}

async fn serve_with(
    listener: TcpListener,
    registry: Registry,
    health: HealthFn,
    heartbeat: Heartbeat,
    limits: Limits,
    shutdown: impl Future,
) {
    let slots = slots::Slots::new(limits.connections, limits.per_client);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let client = match stream.local_addr() {
            Ok(local) => peer::client_of(peer, local),
            Err(_) => peer::classify(peer, None),
        };
        let slot = match slots.take(client) {
            Ok(slot) => slot,
            Err(why) => {
                debug!(%client, %why, "metrics connection closed on accept");
                continue;
            }
        };
        let registry = registry.clone();
        let health = Arc::clone(&health);
        let heartbeat = heartbeat.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let probes = respond::Probes {
                health: health.as_ref(),
                heartbeat: &heartbeat,
            };
            served(stream, &registry, &probes, limits).await;
        });
    }
}

/// One connection within its limits, failures logged at debug level.
async fn served(stream: TcpStream, registry: &Registry, probes: &respond::Probes<'_>, l: Limits) {
    let connection = respond::connection(stream, registry, probes, l.head_timeout);
    match tokio::time::timeout(l.connection_timeout, connection).await {
        Ok(Err(e)) => debug!(error = %e, "metrics connection failed"),
        Err(_) => debug!("metrics connection timed out"),
        Ok(Ok(())) => {}
    }
}
