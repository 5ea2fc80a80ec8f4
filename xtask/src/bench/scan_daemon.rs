//! The `scan` benchmark's daemon half: `mcp-reaper scan --json` answered by
//! a running daemon (`--source ebpf`) that follows many live fake server
//! trees, timed over many calls, side by side with `scan --json
//! --standalone` and the ps pipeline run among the same processes.
//!
//! Owns: the daemon and fleet of this half (both stopped when it ends, also
//! on error), its timings and its table and target line. Must never: import
//! another benchmark (`scan` passes the pipeline in), or time a call whose
//! answer did not come from the daemon (each timed output is checked).
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::context::Context;
use super::shared::{Fleet, Scratch, count_processes, percentile};
use crate::child_daemon::RunArgs;

/// p99 of a daemon-answered `scan --json` must not exceed this.
pub const TARGET_P99: Duration = Duration::from_millis(5);
/// How long the daemon may take to report every fake tree live.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// Untimed calls before the timed ones.
const WARMUP: u32 = 5;

/// What this half measured.
pub struct DaemonRun {
    pub trees: u32,
    pub processes: usize,
    /// Bytes of one daemon answer.
    pub json_bytes: usize,
    pub daemon: Vec<Duration>,
    pub standalone: Vec<Duration>,
    pub pipeline: Vec<Duration>,
}

/// One run of `cmd`, stdout captured; its wall time and stdout.
fn timed(cmd: &mut Command, what: &str) -> Result<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run `{what}`"))?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "`{what}` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((wall, out.stdout))
}

fn is_daemons(json: &[u8]) -> bool {
    let text = String::from_utf8_lossy(json);
    text.contains("\"source\":\"daemon\"")
}

/// The number after `"live":` (the totals' count: a tree's state is
/// `"state":"live"`, never followed by a colon).
fn live_count(json: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(json);
    let rest = text.split_once("\"live\":")?.1.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Starts `trees` fake servers and a daemon, waits until it reports them
/// all live, then times `calls` daemon-answered scans and `rounds` each of
/// the standalone scan and `pipeline` (a `sh -c` command line).
pub fn run(
    ctx: &Context,
    trees: u32,
    calls: u32,
    rounds: u32,
    pipeline: &str,
) -> Result<DaemonRun> {
    let scratch = Scratch::with_config("scan-daemon")?;
    let socket = scratch.0.join("c.sock");
    let daemon = RunArgs::new("ebpf", &scratch.0)
        .start(&ctx.daemon_bin)
        .context("start the daemon (--source ebpf)")?;
    println!("scan: starting {trees} fake servers for the daemon to follow");
    let fleet = Fleet::start(trees)?;
    let bin = ctx.daemon_bin.display().to_string();
    let sock = socket.display().to_string();
    let daemon_scan = || {
        let mut cmd = Command::new(&ctx.daemon_bin);
        cmd.args(["scan", "--json", "--daemon-socket", &sock]);
        cmd
    };
    let described = format!("{bin} scan --json --daemon-socket {sock}");
    let start = Instant::now();
    loop {
        let (_, out) = timed(&mut daemon_scan(), &described)?;
        let live = live_count(&out).unwrap_or(0);
        if is_daemons(&out) && live >= u64::from(trees) {
            println!(
                "scan: the daemon reports {live} live trees after {:.1} s",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        if start.elapsed() > DISCOVERY_TIMEOUT {
            bail!("the daemon reported {live} live trees of {trees}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let processes = count_processes()?;
    let mut json_bytes = 0;
    for _ in 0..WARMUP {
        json_bytes = timed(&mut daemon_scan(), &described)?.1.len();
    }
    let mut run = DaemonRun {
        trees,
        processes,
        json_bytes,
        daemon: Vec::new(),
        standalone: Vec::new(),
        pipeline: Vec::new(),
    };
    println!("scan: {calls} daemon-answered scans");
    for _ in 0..calls {
        let (wall, out) = timed(&mut daemon_scan(), &described)?;
        if !is_daemons(&out) {
            bail!("`{described}` was not answered by the daemon");
        }
        run.daemon.push(wall);
    }
    println!("scan: {rounds} standalone scans and pipelines among the same processes");
    for _ in 0..rounds {
        let mut cmd = Command::new(&ctx.daemon_bin);
        cmd.args(["scan", "--json", "--standalone"]);
        run.standalone
            .push(timed(&mut cmd, &format!("{bin} scan --json --standalone"))?.0);
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", pipeline]);
        run.pipeline.push(timed(&mut cmd, pipeline)?.0);
    }
    daemon.stop()?;
    drop(fleet);
    Ok(run)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (p50, p99) of `walls`.
fn p50_p99(walls: &[Duration]) -> (Option<Duration>, Option<Duration>) {
    let mut sorted = walls.to_vec();
    sorted.sort();
    (percentile(&sorted, 50.0), percentile(&sorted, 99.0))
}

/// This half's table and target line into `body`; the target missed, if
/// it was.
pub fn write(body: &mut String, run: &DaemonRun) -> Vec<String> {
    let _ = writeln!(
        body,
        "\n### `scan` answered by the daemon\n\n\
         A daemon (`run --source ebpf`, its control socket in a scratch directory) followed {} live fake server trees \
         ({} processes on the machine). Each call is a fresh `mcp-reaper scan --json \
         --daemon-socket ...` process, timed wall-clock from spawn to exit with stdout read \
         ({} bytes of JSON per answer), each answer checked for `\"source\":\"daemon\"`; after \
         {WARMUP} untimed calls. The standalone scan and the pipeline ran among the same \
         processes.\n",
        run.trees, run.processes, run.json_bytes,
    );
    body.push_str("| command | runs | p50 | p99 |\n| --- | --- | --- | --- |\n");
    let fmt =
        |d: Option<Duration>| d.map_or_else(|| "n/a".to_owned(), |d| format!("{:.2} ms", ms(d)));
    for (label, walls) in [
        ("`mcp-reaper scan --json` (daemon)", &run.daemon),
        ("`mcp-reaper scan --json --standalone`", &run.standalone),
        (r"`ps aux \| grep -E … \| wc -l`", &run.pipeline),
    ] {
        let (p50, p99) = p50_p99(walls);
        let _ = writeln!(
            body,
            "| {label} | {} | {} | {} |",
            walls.len(),
            fmt(p50),
            fmt(p99)
        );
    }
    let (_, p99) = p50_p99(&run.daemon);
    let met = p99.is_some_and(|p| p <= TARGET_P99);
    let _ = writeln!(
        body,
        "\n| metric | result | target | |\n| --- | --- | --- | --- |\n\
         | daemon-answered scan p99 ({} trees) | {} | <= {} ms | {} |",
        run.trees,
        fmt(p99),
        TARGET_P99.as_millis(),
        if met { "met" } else { "**missed**" }
    );
    if met {
        body.push_str("\nTarget met: the daemon answers `scan` within the p99 target.\n");
        Vec::new()
    } else {
        let _ = writeln!(
            body,
            "\n**Target missed:** the daemon-answered scan's p99 is {} (target <= {} ms).",
            fmt(p99),
            TARGET_P99.as_millis()
        );
        vec![format!(
            "daemon scan p99 {} > {} ms with {} trees",
            fmt(p99),
            TARGET_P99.as_millis(),
            run.trees
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_totals_live_count_and_the_source() {
        let json = br#"{"schema_version":1,"source":"daemon","trees":[{"state":"live"}],"totals":{"trees":1,"live":1000}}"#;
        assert_eq!(live_count(json), Some(1000));
        assert!(is_daemons(json));
        assert!(!is_daemons(br#"{"source": "standalone"}"#));
        assert_eq!(live_count(b"{}"), None);
    }

    #[test]
    fn the_target_line_says_met_or_missed() {
        let ms = Duration::from_millis;
        let mut run = DaemonRun {
            trees: 1000,
            processes: 3000,
            json_bytes: 10,
            daemon: vec![ms(2); 100],
            standalone: vec![ms(100)],
            pipeline: vec![ms(50)],
        };
        let mut body = String::new();
        assert!(write(&mut body, &run).is_empty(), "{body}");
        assert!(body.contains("| met |"), "{body}");
        run.daemon.push(ms(9));
        run.daemon.push(ms(9));
        let mut body = String::new();
        assert_eq!(write(&mut body, &run).len(), 1);
        assert!(body.contains("**Target missed:**"), "{body}");
    }
}
