//! The soak's stand-in MCP host (`xtask soak-host`) and the keeper a host
//! passes its end to (`xtask soak-keeper`). The orchestrator drives a host
//! by lines on its stdin and reads its answers on its stdout:
//!
//! - on start the host starts its fake server trees and prints
//!   `ready PID[,PID...]` (the trees' roots);
//! - `end`: the kind's end action (close, shutdown, hand over, pass, ...),
//!   answered `ended`;
//! - `check`: an echo through every tree the host still talks to, answered
//!   `ok` or `fail WHY`;
//! - `wait-helper`: waits for the helper it handed its end to, answered
//!   `helper-exited`;
//! - `finish`, or the end of its stdin: exits, closing whatever it holds.
//!
//! Owns: the host's ends of its trees' stdio and its helper and keeper
//! children. Must never: signal any process; a host's only way to end a
//! tree is to let go of its end, as real hosts do.
use std::io::{BufRead as _, BufReader, IoSlice, IoSliceMut, Read, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, Shutdown, recvmsg, sendmsg, shutdown,
};

use super::plan::Kind;

/// The hidden subcommands.
pub const HOST_COMMAND: &str = "soak-host";
pub const KEEPER_COMMAND: &str = "soak-keeper";
/// The environment variable naming a host's session (its `[[host]]` rule's
/// `session_env`).
pub const SESSION_ENV: &str = "MCP_SOAK_SESSION";
/// The environment variable every member of a tree inherits: `SESSION.N`
/// for the host's Nth tree. Ground truth finds members by it.
pub const TAG_ENV: &str = "MCP_SOAK_TAG";
/// The fake server: bash stays the tree's root, so its command line keeps
/// matching the `[[server]]` rule. It echoes lines until its stdin ends,
/// then stays, as a leaking server does. Its first argument picks what it
/// starts besides.
pub const SERVER_SCRIPT: &str = "# mcp-soak-server
case \"$1\" in
  setsid-keep) setsid sleep 3600 & ;;
  setsid-close) ( setsid sleep 3600 </dev/null >/dev/null 2>&1 & ) ;;
  fork-loop) ( while :; do sleep 0.05; done ) & ;;
esac
while read -r line; do echo \"$line\"; done
sleep 3600
exit 0";
/// How long an echo may take.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct HostArgs {
    #[arg(long)]
    kind: String,
    /// Session tag; tree N carries `TAG.N` in [`TAG_ENV`].
    #[arg(long)]
    tag: String,
    /// How long a helper given the end lives, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    helper_ms: u64,
    /// Wait this long after start before starting the trees.
    #[arg(long, default_value_t = 0)]
    spawn_delay_ms: u64,
}

/// The host's end of one tree's stdio.
enum End {
    Socket(UnixStream),
    /// Writes to the server's stdin, reads its stdout.
    Pipes(std::io::PipeWriter, BufReader<std::io::PipeReader>),
}

struct Tree {
    end: Option<End>,
}

/// The host: `xtask soak-host`.
pub fn host(args: &HostArgs) -> Result<ExitCode> {
    let kind = Kind::from_name(&args.kind).ok_or_else(|| anyhow!("unknown kind {}", args.kind))?;
    std::thread::sleep(Duration::from_millis(args.spawn_delay_ms));
    let mut trees = Vec::new();
    let mut roots = Vec::new();
    for i in 0..kind.trees() {
        let (tree, root) = start_tree(kind, &format!("{}.{i}", args.tag))?;
        trees.push(tree);
        roots.push(root.to_string());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {}", roots.join(","))?;
    out.flush()?;
    let mut held: Vec<Child> = Vec::new();
    let mut keeper_link: Option<UnixStream> = None;
    for line in std::io::stdin().lock().lines() {
        let answer = match line?.trim() {
            "end" => {
                end(kind, args, &mut trees, &mut held, &mut keeper_link)?;
                "ended".to_owned()
            }
            "check" => match check(kind, &mut trees, &args.tag) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("fail {e:#}"),
            },
            "wait-helper" => {
                for mut c in held.drain(..) {
                    c.wait()?;
                }
                "helper-exited".to_owned()
            }
            "finish" => break,
            other => bail!("unknown command {other:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    drop(trees);
    drop(keeper_link);
    Ok(ExitCode::SUCCESS)
}

fn start_tree(kind: Kind, tag: &str) -> Result<(Tree, u32)> {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", SERVER_SCRIPT, "mcp-soak-server", kind.server_mode()])
        .env(TAG_ENV, tag)
        .stderr(Stdio::null());
    let end = if kind == Kind::PipeStdio {
        let (in_r, in_w) = std::io::pipe().context("pipe")?;
        let (out_r, out_w) = std::io::pipe().context("pipe")?;
        cmd.stdin(in_r).stdout(out_w);
        End::Pipes(in_w, BufReader::new(out_r))
    } else {
        let (ours, theirs) = UnixStream::pair().context("socketpair")?;
        let theirs_out = theirs.try_clone().context("dup socket")?;
        cmd.stdin(OwnedFd::from(theirs))
            .stdout(OwnedFd::from(theirs_out));
        End::Socket(ours)
    };
    let child = cmd.spawn().context("start a fake server")?;
    let pid = child.id();
    // The server's life is the daemon's and the soak's business, not ours:
    // its exit status is never read (init collects it once we are gone).
    std::mem::forget(child);
    // The command drops its copies of the server's ends here.
    drop(cmd);
    Ok((Tree { end: Some(end) }, pid))
}

fn end(
    kind: Kind,
    args: &HostArgs,
    trees: &mut [Tree],
    held: &mut Vec<Child>,
    keeper_link: &mut Option<UnixStream>,
) -> Result<()> {
    let first = trees.first_mut().ok_or_else(|| anyhow!("no tree"))?;
    match kind {
        Kind::Kept | Kind::HostKilled => {}
        Kind::ShutdownOnly => {
            if let Some(End::Socket(s)) = &first.end {
                shutdown(s, Shutdown::Write).context("shutdown")?;
            }
        }
        Kind::HandedOver => {
            let Some(End::Socket(s)) = first.end.take() else {
                bail!("handed-over needs a socket");
            };
            let secs = format!("{:.3}", args.helper_ms as f64 / 1000.0);
            held.push(
                Command::new("sleep")
                    .arg(secs)
                    .stdin(OwnedFd::from(s))
                    .stdout(Stdio::null())
                    .spawn()
                    .context("start the helper")?,
            );
        }
        Kind::Passed => {
            let Some(End::Socket(s)) = first.end.take() else {
                bail!("passed needs a socket");
            };
            let (link, theirs) = UnixStream::pair().context("socketpair")?;
            let exe = std::env::current_exe().context("own executable")?;
            // The keeper's stdin is its link to us: it holds the end until
            // we are gone, so `wait-helper` does not wait for it.
            let keeper = Command::new(exe)
                .arg(KEEPER_COMMAND)
                .stdin(OwnedFd::from(theirs))
                .stdout(Stdio::null())
                .spawn()
                .context("start the keeper")?;
            drop(keeper);
            send_fd(&link, s.as_fd())?;
            *keeper_link = Some(link);
        }
        Kind::Closed
        | Kind::SetsidKeep
        | Kind::SetsidClose
        | Kind::ForkLoop
        | Kind::Twins
        | Kind::PipeStdio => first.end = None,
    }
    Ok(())
}

/// An echo through each tree the host still talks to.
fn check(kind: Kind, trees: &mut [Tree], tag: &str) -> Result<()> {
    if !kind.echo_at_check() {
        return Ok(());
    }
    for (i, t) in trees.iter_mut().enumerate() {
        let Some(end) = t.end.as_mut() else { continue };
        let word = format!("echo-{tag}-{i}");
        let got = match end {
            End::Socket(s) => {
                s.set_read_timeout(Some(ECHO_TIMEOUT))?;
                writeln!(s, "{word}")?;
                read_line(s)?
            }
            End::Pipes(w, r) => {
                writeln!(w, "{word}")?;
                let mut line = String::new();
                r.read_line(&mut line)?;
                line
            }
        };
        if got.trim_end() != word {
            bail!("tree {i} answered {got:?} to {word:?}");
        }
    }
    Ok(())
}

/// One line, byte by byte (nothing read past it stays unread).
fn read_line(s: &mut UnixStream) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while s.read(&mut byte).context("read the echo")? == 1 {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn send_fd(link: &UnixStream, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("no room for the fd in the control buffer");
    }
    sendmsg(
        link,
        &[IoSlice::new(b"x")],
        &mut control,
        SendFlags::empty(),
    )
    .context("sendmsg SCM_RIGHTS")?;
    Ok(())
}

/// The keeper: `xtask soak-keeper`. Receives an fd on its stdin (a unix
/// socket) and holds it until its stdin ends.
pub fn keeper() -> Result<ExitCode> {
    let stdin = std::io::stdin();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 1];
    recvmsg(
        stdin.as_fd(),
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .context("recvmsg")?;
    let mut kept: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            kept.extend(fds);
        }
    }
    if kept.is_empty() {
        bail!("no fd received");
    }
    let mut rest = Vec::new();
    let _ = stdin.lock().read_to_end(&mut rest);
    drop(kept);
    Ok(ExitCode::SUCCESS)
}
