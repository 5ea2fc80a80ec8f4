//! The HTTP/1.1 responder: one request per connection, read, routed and
//! answered, then `Connection: close`.
//!
//! Owns: parsing the request head (bounded in size, and in time by the
//! caller), the routes (`/metrics`, `/livez`, `/readyz`, `/healthz`, `/`)
//! and the framing of the response.
//! Must never: change any state (every route is GET/HEAD), expose anything
//! but the registry and the probes' verdicts, or read a request body.

use std::{io, time::Duration};

use prometheus::Registry;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::health::{Health, Heartbeat};
use crate::outputs::metrics;

/// Largest request head accepted (request line plus headers).
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// What the probe routes consult.
pub(super) struct Probes<'a> {
    /// Readiness: `/readyz` and `/healthz`.
    pub(super) health: &'a (dyn Fn() -> Health + Send + Sync),
    /// Liveness: `/livez`.
    pub(super) heartbeat: &'a Heartbeat,
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
<li><a href=\"/livez\">/livez</a>: liveness, the main loop turns (200 ok, 503 with the reason)</li>\
<li><a href=\"/readyz\">/readyz</a>: readiness, an event source attached and tracking not degraded \
(200 ok, 503 with the reason)</li>\
<li><a href=\"/healthz\">/healthz</a>: the same as /readyz</li>\
</ul></body></html>\n";

/// A probe's verdict as a response: 200 `ok`, or 503 with the reason.
fn verdict(v: Result<(), String>) -> Response {
    match v {
        Ok(()) => Response::text(200, "ok\n"),
        Err(why) => Response::text(503, format!("{why}\n")),
    }
}

/// Routes a parsed request line.
fn route(method: &str, target: &str, registry: &Registry, probes: &Probes<'_>) -> Response {
    let Some(path) = route_path(target) else {
        return Response::text(404, "not found\n");
    };
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
        "/livez" => verdict(probes.heartbeat.verdict()),
        // `/healthz` predates the split into liveness and readiness and
        // always meant readiness: it stays an alias.
        "/readyz" | "/healthz" => verdict((probes.health)().verdict()),
        _ => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: LANDING.to_string(),
            allow: false,
        },
    }
}

/// The method and target of a request head's first line, when it is
/// `METHOD /target HTTP/1.x`; `None` for anything else (a 400).
pub(crate) fn request_line(head: &[u8]) -> Option<(String, String)> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None)
            if version.starts_with("HTTP/1.") && target.starts_with('/') =>
        {
            Some((method.to_owned(), target.to_owned()))
        }
        _ => None,
    }
}

/// The route `target` names (query and fragment dropped), if any.
pub(crate) fn route_path(target: &str) -> Option<&'static str> {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    ["/", "/metrics", "/livez", "/readyz", "/healthz"]
        .into_iter()
        .find(|p| *p == path)
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

/// Serves one connection. The request head must arrive within
/// `head_timeout` (a client that connects and sends nothing gives its slot
/// back then); the caller bounds the whole connection.
pub(super) async fn connection(
    mut stream: TcpStream,
    registry: &Registry,
    probes: &Probes<'_>,
    head_timeout: Duration,
) -> io::Result<()> {
    let head = match tokio::time::timeout(head_timeout, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request head in time",
            ));
        }
    };
    let (response, head_only) = match head {
        Ok(None) => return Ok(()),
        Err(status) => (Response::text(status, "bad request\n"), false),
        Ok(Some(head)) => match request_line(&head) {
            Some((method, target)) => (route(&method, &target, registry, probes), method == "HEAD"),
            None => (Response::text(400, "bad request\n"), false),
        },
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
