//! `mcp-reaper run` as a service: metrics endpoint, control socket, audit
//! log, SIGHUP reload, SIGTERM/SIGINT shutdown, around one `Agent`, and
//! the service manager told of each (`READY=1`, `RELOADING=1`,
//! `STOPPING=1`; see `notify`).
//!
//! Owns: starting each outward service (failing before anything is tracked
//! when one cannot start) and the clean shutdown.
//! Must never: let a control request act on anything but the published
//! state, let SIGHUP end the daemon, or tell the manager it is ready
//! before the agent tracks and every service is up.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Agent, AgentOptions, RunEnd, Shared, notify::Notifier};
use crate::{config::Config, outputs::report::Reporter};

/// `STATUS=` after a SIGHUP that changed nothing; it stays until the state
/// shown changes, so `systemctl status` tells an operator whose reload
/// did not take.
const RELOAD_REJECTED: &str =
    "configuration rejected on reload (see the log); the previous one is in force";
const RELOAD_FAILED: &str =
    "reloading failed (see the log); the previous configuration is in force";

/// The daemon's outward services, each optional.
#[derive(Clone, Default)]
pub struct Services {
    /// `/metrics`, `/livez`, `/readyz` (`/healthz`) and `/` (read-only).
    pub listen: Option<std::net::SocketAddr>,
    /// The audit log.
    pub audit: Option<crate::outputs::audit::AuditTarget>,
    /// The control socket: `release` (root only) and `scan` (root, and
    /// the configured read group).
    pub control_socket: Option<PathBuf>,
    /// Loads the configuration again on SIGHUP (the file, with the command
    /// line's overrides); `None`: SIGHUP is acknowledged, nothing reloads.
    pub reload: Option<ConfigLoader>,
}

/// How the daemon reads its configuration again (`Services::reload`).
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Answers a control request from the published state, or (`scan`) from
/// the loop's tables through `scan_tx`.
fn control_handler(
    shared: Arc<std::sync::Mutex<Shared>>,
    reporter: Reporter,
    proc_root: PathBuf,
    scan_tx: mpsc::Sender<super::scan::ScanAsk>,
) -> crate::outputs::control::Handler {
    use crate::outputs::control::{MatchedTree, Peer, Request, Response};
    Arc::new(move |req: Request, peer: Peer| {
        // Not under the lock: the loop takes it while it answers.
        if req == Request::Scan {
            return ask_loop_for_scan(&scan_tx);
        }
        let mut guard = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match req {
            Request::Scan => Response::error("internal error: scan under the lock"),
            Request::Status => Response::status(
                serde_json::json!({ "agent": &guard.status, "trees": &guard.trees }),
                format!("{} trees tracked", guard.trees.len()),
            ),
            Request::Release { target, dry_run } => {
                let target = match in_our_pid_namespace(target, peer, &proc_root) {
                    Ok(t) => t,
                    Err(why) => return Response::error(why),
                };
                // Resolved now, against the live system: a recycled PID or
                // a reused fd number must not name an old record.
                let query = match crate::judge::release::resolve(&target, &proc_root) {
                    Ok(q) => q,
                    Err(why) => {
                        return Response::matched(Vec::new(), format!("{why}: nothing matched"));
                    }
                };
                let what = query.describe();
                let released = crate::judge::release::match_trees(guard.trees.iter(), &query);
                let roots: Vec<_> = released.iter().map(|r| r.root).collect();
                let records: Vec<_> = guard
                    .trees
                    .iter()
                    .filter(|t| roots.contains(&t.root))
                    .cloned()
                    .collect();
                let action = if dry_run {
                    crate::outputs::audit::Action::DryRun
                } else {
                    crate::outputs::audit::Action::Enforce
                };
                let matched: Vec<MatchedTree> = records
                    .iter()
                    .map(|t| MatchedTree {
                        root: t.root.into(),
                        server: t.server.clone(),
                        state: t.state.as_str().to_owned(),
                        action,
                    })
                    .collect();
                if !dry_run {
                    guard.pending_release.extend(released);
                    reporter.release_request(&format!("release {what}"), &records);
                }
                let verb = if dry_run {
                    "would reap"
                } else {
                    "reaping after grace"
                };
                Response::matched(matched, format!("{what}: {} trees, {verb}", records.len()))
            }
        }
    })
}

/// The control socket's handler for `agent`: what `run` serves (tests
/// serve it too). `scan` is answered by `agent`'s loop from then on.
pub fn control_handler_for(agent: &mut Agent) -> crate::outputs::control::Handler {
    let scan_tx = agent.scan_sender();
    control_handler(
        agent.shared(),
        agent.opts.reporter.clone(),
        agent.opts.proc_root.clone(),
        scan_tx,
    )
}

/// The loop's answer to `scan` (the handler runs on the blocking pool, so
/// it may wait for it). A full queue or a loop that stopped is an error
/// answer, which the client reports and falls back on.
fn ask_loop_for_scan(
    scan_tx: &mpsc::Sender<super::scan::ScanAsk>,
) -> crate::outputs::control::Response {
    use crate::outputs::control::Response;
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(e) = scan_tx.try_send(tx) {
        return Response::error(match e {
            mpsc::error::TrySendError::Full(_) => "busy: too many scans are waiting",
            mpsc::error::TrySendError::Closed(_) => "the daemon is stopping",
        });
    }
    match rx.blocking_recv() {
        Ok(doc) => Response::scan(doc, "trees from the daemon's tables"),
        Err(_) => Response::error("the daemon could not answer (stopping, or the report failed)"),
    }
}

/// A release's owner PID is in the sender's PID namespace: translated
/// into ours (`procs::pidns::translate`), or refused with the reason. A
/// sender the kernel could not name cannot have its PID translated.
fn in_our_pid_namespace(
    target: crate::outputs::control::ReleaseTarget,
    peer: crate::outputs::control::Peer,
    proc_root: &std::path::Path,
) -> Result<crate::outputs::control::ReleaseTarget, String> {
    use crate::outputs::control::{OwnerRef, ReleaseTarget};
    let ReleaseTarget::Owner(owner) = target else {
        return Ok(target);
    };
    let sender = peer
        .pid
        .ok_or("the sender's PID is unknown, so its owner PID cannot be translated")?;
    // The sender's namespace is read through its PID: only while the
    // sender runs is that PID its own (kernels without SO_PEERPIDFD cannot
    // tell; the sender waits for the answer, so it normally runs).
    let gone = "the sender exited before its request was handled: its PID may name another process";
    if peer.still_running() == Some(false) {
        return Err(gone.to_owned());
    }
    let pid = crate::procs::pidns::translate(proc_root, sender, owner.pid)?;
    if peer.still_running() == Some(false) {
        return Err(gone.to_owned());
    }
    if pid != owner.pid {
        info!(
            sender,
            theirs = owner.pid,
            ours = pid,
            "release: owner PID translated from the sender's PID namespace"
        );
    }
    Ok(ReleaseTarget::Owner(OwnerRef { pid, ..owner }))
}

/// SIGHUP: load the configuration again, validate it, and hand it to the
/// agent. A configuration that fails is logged and counted
/// (`mcp_reaper_config_reload_failures_total`), and the one in force stays.
/// Without a loader (no `--config`), SIGHUP is acknowledged and ignored:
/// it never ends the daemon. The manager hears `RELOADING=1`, then
/// `READY=1` from the agent once the new configuration is in force, or
/// from here with the rejection as the status.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    loader: Option<ConfigLoader>,
    tx: mpsc::Sender<Arc<Config>>,
    metrics: Option<Arc<crate::outputs::metrics::Metrics>>,
    notifier: Notifier,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            got = hup.recv() => if got.is_none() { return },
        }
        let Some(load) = loader.clone() else {
            info!("SIGHUP: no configuration file to reload (started without --config)");
            continue;
        };
        notifier.reloading("reloading the configuration");
        match tokio::task::spawn_blocking(move || load()).await {
            Ok(Ok(config)) => {
                info!("SIGHUP: configuration valid, putting it in force");
                if tx.send(Arc::new(config)).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(
                    "SIGHUP: configuration rejected, the previous one stays in force:\n{e}"
                );
                if let Some(m) = &metrics {
                    m.config_reload_failed();
                }
                notifier.ready(RELOAD_REJECTED);
            }
            Err(e) => {
                warn!("SIGHUP: the reload task failed: {e}");
                notifier.ready(RELOAD_FAILED);
            }
        }
    }
}

/// `mcp-reaper run`: start, run until SIGINT or SIGTERM, shut down cleanly.
/// A service that cannot start (port taken, another daemon on the control
/// socket, audit log not writable) is an error before anything is tracked.
pub async fn run(mut opts: AgentOptions, services: Services) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    notifier.send(&[("STATUS", "starting: attaching the event source")]);
    let registry = crate::outputs::metrics::Registry::new();
    open_reporting(&mut opts, &registry, &services)?;
    let reporter = opts.reporter.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let access = control_access(&opts.config);
    let mut agent = Agent::start(opts)?;
    agent.set_notifier(notifier.clone());
    let shared = agent.shared();
    let mut tasks = Vec::new();
    if let Some(addr) = services.listen {
        let (heartbeat, stop) = (reporter.heartbeat.clone(), stopped(stop_rx.clone()));
        tasks.push(serve_metrics(addr, registry, shared.clone(), heartbeat, stop).await?);
    }
    if let Some(path) = services.control_socket.clone() {
        let handler = control_handler_for(&mut agent);
        tasks.push(serve_control(path, handler, access, stopped(stop_rx.clone())).await?);
    }
    // SIGHUP is handled from before `ready`: its default action would end
    // the daemon.
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            let reload_tx = agent.reload_sender();
            tasks.push(tokio::spawn(reload_on_sighup(
                hup,
                services.reload.clone(),
                reload_tx,
                reporter.metrics.clone(),
                notifier.clone(),
                stopped(stop_rx.clone()),
            )));
        }
        Err(e) => warn!("cannot listen for SIGHUP, reload is off: {e}"),
    }
    // SIGTERM is handled from before `ready` too: a stop request that
    // arrives before the loop first runs still shuts down cleanly.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    reporter.lifecycle(
        crate::outputs::audit::AuditEvent::Startup,
        agent.source_reason(),
    );
    info!(source = %agent.active_source(), reason = agent.source_reason(), "ready");
    agent.notify_ready();
    inject_faults(&mut agent);
    let end = agent.run_until(shutdown_signal(term)).await;
    notifier.stopping(match end {
        RunEnd::Shutdown => "stopping: detaching the kernel programs",
        RunEnd::SourceStopped => "stopping: the event source stopped; exiting to be restarted",
    });
    let _ = stop_tx.send(true);
    let status = agent.status();
    drop(agent); // detaches the kernel programs
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    finish(&reporter, end, &status).await
}

/// Fault injection for tests, from the environment: a source that dies
/// (`MCP_REAPER_FAULT_STOP_SOURCE_MS`) or a loop that hangs
/// (`MCP_REAPER_FAULT_HANG_LOOP_MS`), that many ms after `ready`.
fn inject_faults(agent: &mut Agent) {
    let after = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    if let Some(after) = after("MCP_REAPER_FAULT_STOP_SOURCE_MS") {
        agent.inject_source_stop(after);
    }
    if let Some(after) = after("MCP_REAPER_FAULT_HANG_LOOP_MS") {
        agent.inject_loop_hang(after);
    }
}

/// Resolves once `rx` says the daemon is stopping.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The metrics registry and the audit sink, into `opts.reporter`.
fn open_reporting(
    opts: &mut AgentOptions,
    registry: &crate::outputs::metrics::Registry,
    services: &Services,
) -> anyhow::Result<()> {
    let metrics = Arc::new(crate::outputs::metrics::Metrics::new(
        registry,
        env!("CARGO_PKG_VERSION"),
    )?);
    opts.reporter.metrics = Some(metrics);
    if let Some(target) = services.audit.clone() {
        let log = crate::outputs::audit::AuditLog::open(target).context("opening the audit log")?;
        let sink = crate::outputs::audit::AuditSink::spawn(
            log,
            crate::outputs::audit::DEFAULT_SINK_CAPACITY,
        )
        .context("starting the audit writer")?;
        opts.reporter.audit = Some(Arc::new(sink));
    }
    Ok(())
}

/// `/metrics`, `/livez`, `/readyz` (`/healthz`) and `/` on `addr`, health from the published
/// state. Binding fails the start.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: crate::outputs::metrics::Registry,
    shared: Arc<std::sync::Mutex<Shared>>,
    heartbeat: crate::outputs::http::Heartbeat,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let health: crate::outputs::http::HealthFn = Arc::new(move || {
        let g = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::outputs::http::Health {
            source_attached: g.status.is_some(),
            degraded: g.status.as_ref().is_some_and(|s| s.degraded),
            detail: None,
        }
    });
    let task = tokio::spawn(crate::outputs::http::serve_on(
        listener, registry, health, heartbeat, stop,
    ));
    info!(%addr, "metrics endpoint listening");
    Ok(task)
}

/// The control socket at `path`. It is bound before `ready`, so "another
/// mcp-reaper is running" stops this one.
async fn serve_control(
    path: PathBuf,
    handler: crate::outputs::control::Handler,
    access: crate::outputs::control::Access,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let task = tokio::spawn(async move {
        let stats = Arc::new(crate::outputs::control::ControlStats::default());
        let res = crate::outputs::control::serve_with(&path, handler, access, stop, stats).await;
        if let Err(e) = res {
            let _ = bound_tx.send(Err(e));
        }
    });
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_millis(300), bound_rx).await {
        anyhow::bail!("control socket: {e}");
    }
    Ok(task)
}

/// Who may use the control socket, from `[control]`: root and the
/// daemon's uid, and (read-only) the members of `read_group`. Read at
/// start: a reload does not change it.
pub fn control_access(config: &Config) -> crate::outputs::control::Access {
    crate::outputs::control::Access {
        read_gid: config.control.read_group.as_ref().map(|g| g.gid),
    }
}

/// Resolves on SIGINT or SIGTERM (`term`: the SIGTERM stream, set up
/// before `ready`).
async fn shutdown_signal(term: std::io::Result<tokio::signal::unix::Signal>) {
    let mut term = match term {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = term.recv() => info!("SIGTERM: shutting down"),
    }
}

/// The shutdown record and log line, and the exit: an error when the
/// event source died.
async fn finish(
    reporter: &crate::outputs::report::Reporter,
    end: RunEnd,
    status: &super::AgentStatus,
) -> anyhow::Result<()> {
    let why = match end {
        RunEnd::Shutdown => "signal",
        RunEnd::SourceStopped => "event source stopped",
    };
    reporter.lifecycle(crate::outputs::audit::AuditEvent::Shutdown, why);
    if let Some(a) = reporter.audit.clone() {
        let _ = tokio::task::spawn_blocking(move || a.shutdown()).await;
    }
    info!(
        exec = status.events.exec,
        fork = status.events.fork,
        exit = status.events.exit,
        lost = status.events.lost,
        resyncs = status.resyncs,
        "stopped; kernel programs detached"
    );
    match end {
        RunEnd::Shutdown => Ok(()),
        // Exit non-zero: a service manager restarts a daemon whose source
        // died (`Restart=on-failure`), instead of it idling unnoticed.
        RunEnd::SourceStopped => {
            anyhow::bail!("the event source stopped; exiting so the daemon is restarted")
        }
    }
}
