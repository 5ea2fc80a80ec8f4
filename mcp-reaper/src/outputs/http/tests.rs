#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};

use super::{peer::Client, respond::MAX_HEAD, *};
use crate::outputs::metrics;

/// A uid no test runs as, for a second local client.
const OTHER_UID: u32 = 65534;

async fn request(addr: SocketAddr, raw: &str) -> (u16, String, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    request_on(s, raw).await
}

async fn request_on(mut s: TcpStream, raw: &str) -> (u16, String, String) {
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

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(health: HealthFn, heartbeat: Heartbeat, limits: Limits) -> Server {
    let registry = Registry::new();
    let m = metrics::Metrics::new(&registry, "9.9.9").unwrap();
    m.set_tier("ebpf");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(
        listener, registry, health, heartbeat, limits, stopped,
    ));
    Server { addr, stop, task }
}

fn ready() -> HealthFn {
    Arc::new(|| Health {
        source_attached: true,
        ..Health::default()
    })
}

#[tokio::test]
async fn serves_each_route() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h = Arc::clone(&healthy);
    let health: HealthFn = Arc::new(move || Health {
        source_attached: true,
        degraded: !h.load(Ordering::Relaxed),
        detail: None,
    });
    let server = start(health, Heartbeat::default(), Limits::DEFAULT).await;
    let addr = server.addr;

    let (status, head, body) = request(addr, &get("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.contains("mcp_reaper_build_info{version=\"9.9.9\"} 1"));
    assert!(body.contains("mcp_reaper_event_source_info{tier=\"ebpf\"} 1"));

    for path in ["/livez", "/readyz", "/healthz"] {
        let (status, _, body) = request(addr, &get(path)).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{path}");
    }
    healthy.store(false, Ordering::Relaxed);
    let (status, _, body) = request(addr, &get("/healthz?verbose=1")).await;
    assert_eq!(status, 503);
    assert!(body.starts_with("degraded"), "{body}");

    let (status, head, body) = request(addr, &get("/")).await;
    assert_eq!(status, 200);
    assert!(head.contains("text/html"));
    for link in ["/metrics", "/livez", "/readyz", "/healthz"] {
        assert!(body.contains(&format!("href=\"{link}\"")), "{link}");
    }

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

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
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

/// `/livez` fails once the loop stops beating and recovers with the next
/// beat; readiness does not depend on it, nor it on readiness.
#[tokio::test]
async fn livez_follows_the_main_loop_heartbeat() {
    let heartbeat = Heartbeat::new(Duration::from_millis(300));
    let server = start(ready(), heartbeat.clone(), Limits::DEFAULT).await;
    let addr = server.addr;
    heartbeat.beat();
    let (status, _, body) = request(addr, &get("/livez")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, body) = request(addr, &get("/livez")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("main loop stalled: no turn for "),
        "{body}"
    );
    assert!(heartbeat.since_last_beat() >= Duration::from_millis(500));
    let (status, _, _) = request(addr, &get("/readyz")).await;
    assert_eq!(status, 200, "a stalled loop is a liveness matter");

    heartbeat.beat();
    let (status, _, body) = request(addr, &get("/livez")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.stop.send(()).unwrap();
}

/// `/healthz` answers exactly what `/readyz` does, in every state, while
/// `/livez` stays 200: a degraded or detached daemon is not restarted.
#[tokio::test]
async fn healthz_is_readyz_and_readiness_is_not_liveness() {
    let state = Arc::new(std::sync::Mutex::new(Health::default()));
    let s = Arc::clone(&state);
    let health: HealthFn = Arc::new(move || s.lock().unwrap().clone());
    let server = start(health, Heartbeat::default(), Limits::DEFAULT).await;
    let cases = [
        (true, false, None, 200, "ok\n"),
        (
            true,
            true,
            None,
            503,
            "degraded: events lost, resync pending\n",
        ),
        (
            false,
            false,
            Some("poll tier failed"),
            503,
            "event source not attached: poll tier failed\n",
        ),
    ];
    for (attached, degraded, detail, want_status, want_body) in cases {
        *state.lock().unwrap() = Health {
            source_attached: attached,
            degraded,
            detail: detail.map(str::to_string),
        };
        for path in ["/readyz", "/healthz"] {
            let (status, _, body) = request(server.addr, &get(path)).await;
            assert_eq!((status, body.as_str()), (want_status, want_body), "{path}");
        }
        let (status, _, _) = request(server.addr, &get("/livez")).await;
        assert_eq!(status, 200, "livez while {want_body}");
    }
    server.stop.send(()).unwrap();
}

/// A TCP connection to `addr` whose socket belongs to `uid`: made on a
/// thread whose filesystem uid (the owner the kernel gives new sockets)
/// is `uid`. Needs CAP_SETUID.
fn connect_as(uid: u32, addr: SocketAddr) -> TcpStream {
    let s = std::thread::spawn(move || {
        // SAFETY: setfsuid changes only the calling thread's filesystem
        // uid, and this thread ends right after the connect.
        unsafe { libc::setfsuid(uid) };
        std::net::TcpStream::connect(addr).unwrap()
    })
    .join()
    .unwrap();
    s.set_nonblocking(true).unwrap();
    TcpStream::from_std(s).unwrap()
}

/// Whether the server closed `s` without a byte of response, within `by`.
async fn closed_unanswered(mut s: TcpStream, by: Duration) -> bool {
    let _ = s.write_all(get("/metrics").as_bytes()).await;
    let mut buf = Vec::new();
    match tokio::time::timeout(by, s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf.is_empty(),
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset && buf.is_empty(),
        Err(_) => false,
    }
}

/// One local user holding its share of idle connections gets no more,
/// while another local user (root only: a second uid) and, once one of
/// its connections ends, the first user again, are served.
#[tokio::test]
async fn one_client_cannot_take_every_slot() {
    let limits = Limits {
        connections: 8,
        per_client: 2,
        head_timeout: Duration::from_secs(10),
        connection_timeout: Duration::from_secs(20),
    };
    let server = start(ready(), Heartbeat::default(), limits).await;
    let addr = server.addr;
    // Idle: connected, nothing sent. The listener accepts in order, so
    // both hold a slot before the next connection is looked at.
    let mut idle = Vec::new();
    for _ in 0..limits.per_client {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let extra = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_unanswered(extra, Duration::from_secs(2)).await,
        "a client past its share is closed on accept, not queued"
    );

    if mcp_reaper_tests::privileged("one_client_cannot_take_every_slot (a second local user)") {
        let other = connect_as(OTHER_UID, addr);
        let (status, _, _) = request_on(other, &get("/livez")).await;
        assert_eq!(status, 200, "another local user is served");
    }

    // One idle connection ends: its slot is the client's again.
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(get("/livez").as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(idle);
    server.stop.send(()).unwrap();
}

/// A connection that sends nothing is closed once the head timeout passes,
/// and its slot serves the next request.
#[tokio::test]
async fn idle_connections_are_closed_after_the_head_timeout() {
    let limits = Limits {
        connections: 8,
        per_client: 1,
        head_timeout: Duration::from_millis(300),
        connection_timeout: Duration::from_secs(10),
    };
    let server = start(ready(), Heartbeat::default(), limits).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "the idle connection was never closed");
    assert!(buf.is_empty(), "nothing sent to an idle client");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    let (status, _, _) = request(server.addr, &get("/readyz")).await;
    assert_eq!(status, 200, "the slot was given back");
    server.stop.send(()).unwrap();
}

/// The peer of a connection on this machine is found and known by its
/// socket's owner, over IPv4 and IPv6; a peer with no local socket is
/// known by its address.
#[test]
fn local_peers_are_known_by_their_user() {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))];
    if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok() {
        addrs.push(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)));
    }
    for bind in addrs {
        let listener = std::net::TcpListener::bind(bind).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(
            peer::client_of(peer, local),
            Client::User(me),
            "{peer} -> {local}"
        );
    }
    let remote = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 123), 40000));
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
    assert_eq!(peer::local_socket_owner(remote, local), None);
    assert_eq!(peer::client_of(remote, local), Client::Address(remote.ip()));
    let mapped = SocketAddr::from((Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(), 1));
    assert_eq!(
        peer::classify(mapped, None),
        Client::Address(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        "one address, however the listener's family spells it"
    );

    if mcp_reaper_tests::privileged("local_peers_are_known_by_their_user (a second local user)") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = rt.block_on(async { connect_as(OTHER_UID, addr) });
        let (accepted, peer) = listener.accept().unwrap();
        let local = accepted.local_addr().unwrap();
        assert_eq!(peer::client_of(peer, local), Client::User(OTHER_UID));
    }
}
