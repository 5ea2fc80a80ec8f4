//! The options of `mcp-reaper run`.
//!
//! Owns: their names, help text, defaults (sizes and durations as an
//! operator writes them) and the check of each value as it is read.
//! Must never: act on an option (the binary does) or read anything.

use std::{path::PathBuf, time::Duration};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use super::values::{self, Listen};
use crate::source::{
    SourceChoice,
    ebpf::{CloseHook, CloseTier, DEFAULT_WATCH_CAPACITY},
};

/// `DEFAULT_RING_BYTES` as `--help` shows it (a test checks they agree).
pub const RING_BYTES_DEFAULT: &str = "1MiB";

/// The audit log's rotation size by default.
pub const AUDIT_MAX_BYTES_DEFAULT: &str = "64MiB";

/// `run`'s exit codes, shown under its `--help`.
pub const RUN_EXIT_CODES: &str = "\
Exit codes:
  0  stopped cleanly (SIGINT or SIGTERM)
  1  failed while starting or running (an event source that cannot load, an address in use, ...)
  2  usage or configuration error: nothing started";

#[derive(clap::Args, Debug)]
#[command(after_help = RUN_EXIT_CODES)]
pub struct RunArgs {
    /// Event source (default: the configuration's `[daemon] source`, else
    /// `auto`).
    #[arg(long, value_name = "SOURCE", value_parser = source_values())]
    pub source: Option<SourceChoice>,

    /// pidfd and poll tiers: time between /proc scans, e.g. `500ms`, `2s`,
    /// or seconds (`0.5`); at least 10ms (default: the configuration's
    /// `[daemon] poll_interval`, else 1s).
    #[arg(long, value_name = "DURATION", value_parser = values::poll_interval)]
    pub poll_interval: Option<Duration>,

    /// eBPF tier: ring buffer size, e.g. `4MiB`: a power of two, at least
    /// a page. Raise it if mcp_reaper_lost_events_total grows: each loss
    /// costs a /proc resync. Resident memory grows by twice this size.
    #[arg(long, default_value = RING_BYTES_DEFAULT, value_name = "SIZE", value_parser = values::ring_bytes)]
    pub ring_buffer_bytes: u32,

    /// eBPF tier: how many processes of hosts and trees the kernel can
    /// watch. When it is full, lineage is incomplete: tracking stays
    /// degraded (nothing is reaped) and
    /// mcp_reaper_lineage_gaps_total{cause="watch_full"} grows.
    #[arg(long, default_value_t = DEFAULT_WATCH_CAPACITY, value_name = "PROCESSES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_capacity: u32,

    /// eBPF tier: copy the kernel programs' own debug messages into this
    /// log.
    #[arg(long)]
    pub kernel_log: bool,

    /// eBPF tier: how a host's release of a tree's stdio is seen.
    #[arg(long, default_value = "auto", value_name = "WHEN", value_parser = close_tier_values())]
    pub close_tier: CloseTier,

    /// eBPF tier, with the close tier on: where it enters the kernel.
    #[arg(long, default_value = "auto", value_name = "HOOK", value_parser = close_hook_values())]
    pub close_hook: CloseHook,

    /// Where procfs is mounted (a host's /proc inside a container, say).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,

    /// Configuration file; it must exist (default:
    /// /etc/mcp-reaper/config.toml if it exists, else the built-in
    /// defaults that `mcp-reaper config default` prints). An invalid file
    /// is exit 2 and nothing starts.
    #[arg(long, short, value_name = "FILE", env = "MCP_REAPER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Decide and report, but signal nothing (overrides the configuration).
    #[arg(long)]
    pub dry_run: bool,

    /// Metrics endpoint address, or `off` (default: the configuration's
    /// `[daemon] listen`, else 127.0.0.1:9863).
    #[arg(long, value_name = "ADDR|off", value_parser = values::listen)]
    pub listen: Option<Listen>,

    /// Audit log: a file path (JSON lines, rotated by size), `-` for
    /// stdout, or `off` (default: the configuration's `[daemon]
    /// audit_log`, else off).
    #[arg(long, value_name = "PATH|-|off")]
    pub audit_log: Option<String>,

    /// Rotate the audit log past this size, e.g. `64MiB`.
    #[arg(long, default_value = AUDIT_MAX_BYTES_DEFAULT, value_name = "SIZE", value_parser = values::size)]
    pub audit_max_bytes: u64,

    /// Rotated audit files to keep.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub audit_keep: u32,

    /// The root-only control socket for `release`, or `off`.
    #[arg(long, default_value = crate::outputs::control::DEFAULT_SOCKET, value_name = "PATH|off")]
    pub control_socket: String,

    /// Where a reap records the processes it stops, so that a daemon killed
    /// mid-reap continues them at its next start; `off` records nothing.
    #[arg(long, default_value = "/run/mcp-reaper", value_name = "DIR|off")]
    pub state_dir: String,
}

fn source_values() -> impl TypedValueParser<Value = SourceChoice> {
    PossibleValuesParser::new([
        PossibleValue::new("auto").help("eBPF if it loads, else pidfd if it works here, else poll"),
        PossibleValue::new("ebpf")
            .help("kernel tracepoints on fork, exec and exit; fail if they cannot load"),
        PossibleValue::new("pidfd").help(
            "/proc scans, woken at once by a tree root's exit or its stdin's hangup; \
             needs CAP_SYS_PTRACE; fail if that does not work",
        ),
        PossibleValue::new("poll").help("/proc scans only; runs wherever /proc is readable"),
    ])
    .try_map(|s| <SourceChoice as clap::ValueEnum>::from_str(&s, false))
}

fn close_tier_values() -> impl TypedValueParser<Value = CloseTier> {
    PossibleValuesParser::new([
        PossibleValue::new("auto").help(
            "watch each tree root's stdin (a duplicate of it, woken on hangup): other \
             processes pay nothing; where that cannot run (no CAP_SYS_PTRACE, or a security \
             module refuses), attach the close tier instead",
        ),
        PossibleValue::new("on").help(
            "attach the close tier: hosts' close, close_range, dup2 and dup3 seen in the \
             kernel, at the cost of a tracepoint on every process's syscalls (about 40 ns \
             each)",
        ),
        PossibleValue::new("off").help("never attach the close tier"),
    ])
    .try_map(|s| <CloseTier as clap::ValueEnum>::from_str(&s, false))
}

fn close_hook_values() -> impl TypedValueParser<Value = CloseHook> {
    PossibleValuesParser::new([
        PossibleValue::new("auto").help(
            "the per-syscall tracepoints (only close, close_range, dup2 and dup3 run a \
             program), mounting a tracefs private to the daemon if the machine has none",
        ),
        PossibleValue::new("sys-enter").help(
            "the raw sys_enter tracepoint: needs no tracefs, but runs a program on every \
             syscall of the machine",
        ),
    ])
    .try_map(|s| <CloseHook as clap::ValueEnum>::from_str(&s, false))
}
