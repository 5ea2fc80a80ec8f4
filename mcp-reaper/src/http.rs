//! The daemon's read-only HTTP endpoint: `/metrics`, `/healthz` and a
//! landing page.
//!
//! Owns: the listener, a deliberately small HTTP/1.1 responder (one request
//! per connection, `Connection: close`), its limits (request head size,
//! time per connection, concurrent connections) and the health verdict's
//! wire form.
//! Must never: change any state (every route is GET/HEAD), expose anything
//! but the registry and the health verdict, or let a slow or hostile client
//! hold resources beyond its limits.
//!
//! Why not hyper: three fixed read-only routes, no bodies to read, no
//! keep-alive, no TLS. A hundred lines on tokio cover them without adding
//! hyper, hyper-util, http, http-body, httparse and their dependencies to a
//! privileged daemon's build and audit surface. Anything needing more (TLS,
//! auth) belongs in a reverse proxy in front of it.
//!
//! Default listen address 127.0.0.1:9863: loopback only, since the metrics
//! describe the host's processes; 9863 sits in the range exporters use, is
//! not in /etc/services and no well-known exporter uses it.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use prometheus::Registry;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, warn};

use crate::metrics;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9863";
/// Largest request head accepted (request line plus headers).
const MAX_HEAD: usize = 8 * 1024;
/// Time a connection may take from accept to the response sent.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 32;

/// What `/healthz` reports.
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
    /// `Ok` when healthy, else why not.
    ///
    /// # Errors
    /// The reason the daemon is unhealthy, one line.
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

/// How the server asks the daemon for its health.
pub type HealthFn = Arc<dyn Fn() -> Health + Send + Sync>;

/// Binds `addr` and serves until `shutdown` completes.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: HealthFn,
    shutdown: impl Future,
) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, registry, health, shutdown).await;
    Ok(())
}

/// Serves on an already bound listener until `shutdown` completes.
/// Connections in flight finish on their own (each is time-limited).
pub async fn serve_on(
    listener: TcpListener,
    registry: Registry,
    health: HealthFn,
    shutdown: impl Future,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            debug!("metrics listener busy, connection dropped");
            continue;
        };
        let registry = registry.clone();
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let _permit = permit;
            let served = tokio::time::timeout(
                CONNECTION_TIMEOUT,
                connection(stream, &registry, health.as_ref()),
            )
            .await;
            match served {
                Ok(Err(e)) => debug!(error = %e, "metrics connection failed"),
                Err(_) => debug!("metrics connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// A response before framing.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

const LANDING: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
<title>mcp-reaper</title></head><body><h1>mcp-reaper</h1>\
<p>Finds and reaps leaked MCP server process trees.</p><ul>\
<li><a href=\"/metrics\">/metrics</a>: Prometheus metrics</li>\
<li><a href=\"/healthz\">/healthz</a>: health (200 ok, 503 with the reason)</li>\
</ul></body></html>\n";

/// Routes a parsed request line.
fn route(
    method: &str,
    target: &str,
    registry: &Registry,
    health: &(dyn Fn() -> Health + Send + Sync),
) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let known = matches!(path, "/" | "/metrics" | "/healthz");
    if !known {
        return Response::text(404, "not found\n");
    }
    if method != "GET" && method != "HEAD" {
        let mut r = Response::text(405, "method not allowed\n");
        r.allow = true;
        return r;
    }
    match path {
        "/metrics" => match metrics::try_encode(registry) {
            Ok(body) => Response {
                status: 200,
                content_type: metrics::CONTENT_TYPE,
                body,
                allow: false,
            },
            Err(e) => Response::text(500, format!("encoding failed: {e}\n")),
        },
        "/healthz" => match health().verdict() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(why) => Response::text(503, format!("{why}\n")),
        },
        _ => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: LANDING.to_string(),
            allow: false,
        },
    }
}

/// Reads the request head: `Ok(None)` when the peer closed first.
async fn read_head(stream: &mut TcpStream) -> io::Result<Result<Option<Vec<u8>>, u16>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(if buf.is_empty() { Ok(None) } else { Err(400) });
        }
        buf.extend_from_slice(&chunk[..n]);
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        if end.map_or(buf.len(), |e| e + 4) > MAX_HEAD {
            return Ok(Err(431));
        }
        if end.is_some() {
            return Ok(Ok(Some(buf)));
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    registry: &Registry,
    health: &(dyn Fn() -> Health + Send + Sync),
) -> io::Result<()> {
    let (response, head_only) = match read_head(&mut stream).await? {
        Ok(None) => return Ok(()),
        Err(status) => (Response::text(status, "bad request\n"), false),
        Ok(Some(head)) => {
            let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split(' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(method), Some(target), Some(version), None)
                    if version.starts_with("HTTP/1.") && target.starts_with('/') =>
                {
                    (route(method, target, registry, health), method == "HEAD")
                }
                _ => (Response::text(400, "bad request\n"), false),
            }
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
    );
    if response.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await?;
    // Drain what the client still sends (a body we did not read) so the
    // close is a FIN, not a reset that could destroy the response.
    let mut sink = [0u8; 1024];
    let mut left = 64 * 1024usize;
    while left > 0 {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn request(addr: SocketAddr, raw: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_string(), body.to_string())
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
    }

    #[tokio::test]
    async fn serves_each_route() {
        let registry = Registry::new();
        let m = metrics::Metrics::new(&registry, "9.9.9").unwrap();
        m.set_tier("ebpf");
        let healthy = Arc::new(AtomicBool::new(true));
        let h = Arc::clone(&healthy);
        let health: HealthFn = Arc::new(move || Health {
            source_attached: true,
            degraded: !h.load(Ordering::Relaxed),
            detail: None,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, registry, health, stopped));

        let (status, head, body) = request(addr, &get("/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("mcp_reaper_build_info{version=\"9.9.9\"} 1"));
        assert!(body.contains("mcp_reaper_event_source_info{tier=\"ebpf\"} 1"));

        let (status, _, body) = request(addr, &get("/healthz")).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        healthy.store(false, Ordering::Relaxed);
        let (status, _, body) = request(addr, &get("/healthz?verbose=1")).await;
        assert_eq!(status, 503);
        assert!(body.starts_with("degraded"), "{body}");

        let (status, head, body) = request(addr, &get("/")).await;
        assert_eq!(status, 200);
        assert!(head.contains("text/html"));
        assert!(body.contains("href=\"/metrics\"") && body.contains("href=\"/healthz\""));

        let (status, _, _) = request(addr, &get("/nope")).await;
        assert_eq!(status, 404);
        let post = "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let (status, head, _) = request(addr, post).await;
        assert_eq!(status, 405);
        assert!(head.contains("Allow: GET, HEAD"));
        let (status, head, body) = request(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, 200);
        assert!(body.is_empty() && !head.contains("Content-Length: 0"));
        let (status, _, _) = request(addr, "garbage\r\n\r\n").await;
        assert_eq!(status, 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let (status, _, _) = request(addr, &huge).await;
        assert_eq!(status, 431);

        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    }

    #[test]
    fn health_verdicts() {
        let ok = Health {
            source_attached: true,
            ..Health::default()
        };
        assert_eq!(ok.verdict(), Ok(()));
        let detached = Health {
            detail: Some("poll tier failed".into()),
            ..Health::default()
        };
        assert_eq!(
            detached.verdict(),
            Err("event source not attached: poll tier failed".into())
        );
    }
}
