//! The command line: every command, option and value `mcp-reaper`
//! accepts, as clap reads them. Defined in the library so that the
//! binary, its tests and the generated completions and manual page share
//! one definition.
//!
//! Owns: option names, their help text, defaults and exit-code notes.
//! Must never: act on an option (the binary does) or read anything.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use super::run_args::RunArgs;

/// The heading of the options every command takes, listed after its own.
const GLOBAL: &str = "Global options";

/// The exit codes every command shares, under `mcp-reaper --help`.
pub const TOP_EXIT_CODES: &str = "\
Exit codes (each command's --help lists its own):
  0  success
  1  failure; scan --check: a tree is orphaned; release: no tree matched
  2  usage or configuration error: nothing was done
  3  doctor: only the pidfd or poll tier can run; scan: /proc not read completely;
     release: the daemon is unreachable
A reader that stops early (`| head`) ends the output quietly: the exit code is unchanged.";

/// `doctor`'s exit codes.
pub const DOCTOR_EXIT_CODES: &str = "\
Exit codes:
  0  the eBPF tier can run
  1  the daemon cannot run here, or would stop at start (its configuration, metrics
     address or control socket fails)
  2  usage error
  3  only the pidfd or poll tier can run";

/// `release`'s exit codes.
pub const RELEASE_EXIT_CODES: &str = "\
Exit codes:
  0  at least one tree matched
  1  no tree matched
  2  usage error, or the daemon rejected the request
  3  the daemon is unreachable or refused the connection";

/// `config check`'s exit codes.
pub const CONFIG_CHECK_EXIT_CODES: &str = "\
Exit codes:
  0  the file is valid
  2  usage error, or the file has errors (each printed as FILE:LINE:COLUMN: message)";

/// The exit codes of the commands that only print.
pub const PRINT_EXIT_CODES: &str = "\
Exit codes:
  0  printed
  2  usage error";

/// `manpage`'s exit codes.
pub const MANPAGE_EXIT_CODES: &str = "\
Exit codes:
  0  printed, or every page written
  1  a page could not be written into DIR
  2  usage error";

#[derive(Parser, Debug)]
#[command(
    name = "mcp-reaper",
    version,
    about = "Finds leaked MCP server process trees and reaps them safely",
    long_about = "mcp-reaper watches the process trees that MCP hosts (agent gateways, IDEs, \
desktop assistants) start for their stdio servers, maps each tree to the host session that \
owns its stdio, and ends the trees whose owner has let go.\n\n\
Start with `mcp-reaper doctor` to see what this kernel allows, then run the daemon with \
`mcp-reaper run` (as root).",
    after_help = TOP_EXIT_CODES
)]
pub struct Cli {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human,
          value_name = "FORMAT", env = "MCP_REAPER_LOG_FORMAT", help_heading = GLOBAL)]
    pub log_format: LogFormat,

    /// Least severe messages logged: `error`, `warn`, `info`, `debug` or
    /// `trace` (default: `info`; for `doctor`, `off`: its report says it
    /// all, and log lines would break into it).
    #[arg(long, global = true, value_name = "LEVEL", env = "MCP_REAPER_LOG",
          help_heading = GLOBAL)]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter: `--log-level` when given, else `info`, or `off` for
    /// `doctor`, whose report is the whole answer.
    #[must_use]
    pub fn log_filter(&self) -> &str {
        match (&self.log_level, &self.command) {
            (Some(level), _) => level,
            (None, Command::Doctor(_)) => "off",
            (None, _) => "info",
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: track processes from kernel events (or /proc scans).
    ///
    /// Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
    /// Stops cleanly on SIGINT or SIGTERM, detaching every kernel program.
    Run(RunArgs),
    /// Check what this kernel and these privileges allow, which detection
    /// tier `run` would use, and whether the configuration, metrics address
    /// and control socket it would be given work.
    #[command(after_help = DOCTOR_EXIT_CODES)]
    Doctor(DoctorArgs),
    /// One-shot report of every MCP server tree: host, session, owner fds,
    /// state (live / orphaned / suspect / unknown) with its reason, members
    /// and memory. Works without the daemon and without eBPF.
    #[command(after_help = super::scan::EXIT_CODES_HELP)]
    Scan(ScanArgs),
    /// Check a configuration file, or print the defaults and the presets.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Tell the running daemon that a session is over: its trees are reaped
    /// (reason session-ended) after the grace period, even though the host
    /// still holds their stdio. For hosts' session-end hooks (see
    /// deploy/hooks). Root only.
    #[command(after_help = RELEASE_EXIT_CODES)]
    Release(ReleaseArgs),
    /// Print the completion script for SHELL.
    ///
    /// The Debian package installs the bash, zsh and fish scripts. Elsewhere,
    /// for example: `mcp-reaper completions bash >
    /// /etc/bash_completion.d/mcp-reaper`, or, for one shell, `source
    /// <(mcp-reaper completions bash)`.
    #[command(after_help = PRINT_EXIT_CODES)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a
    /// directory.
    ///
    /// Without --dir, prints mcp-reaper(1): `mcp-reaper manpage | man -l -`.
    /// With --dir, writes mcp-reaper.1 and one page per command
    /// (mcp-reaper-run.1, mcp-reaper-config-check.1, ...) and prints the
    /// path of each page written.
    #[command(after_help = MANPAGE_EXIT_CODES)]
    Manpage(ManpageArgs),
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The configuration file to check, as `run --config` takes it (default:
    /// /etc/mcp-reaper/config.toml if it exists, else the built-in
    /// defaults).
    #[arg(long, short, value_name = "FILE", env = "MCP_REAPER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The metrics address to check, as `run --listen` takes it (default:
    /// the configuration's `[daemon] listen`, else 127.0.0.1:9863).
    #[arg(long, value_name = "ADDR|off", value_parser = super::values::listen)]
    pub listen: Option<super::values::Listen>,
    /// The control socket to check, as `run --control-socket` takes it.
    #[arg(long, default_value = crate::outputs::control::DEFAULT_SOCKET, value_name = "PATH|off")]
    pub control_socket: String,
}

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// Print JSON (schema in the README; `schema_version` marks changes).
    #[arg(long)]
    pub json: bool,
    /// For cron and monitoring: exit 1 when any tree is orphaned, 3 when
    /// that cannot be ruled out (see below), else 0.
    #[arg(long)]
    pub check: bool,
    /// Configuration file; it must exist (default:
    /// /etc/mcp-reaper/config.toml if it exists, else the built-in
    /// presets and server shapes).
    #[arg(long, short, value_name = "FILE", env = "MCP_REAPER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where procfs is mounted.
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// A running daemon's control socket: when a daemon answers there, it
    /// answers the scan from what it tracks (source `daemon`); `off` to
    /// walk /proc without asking (see below).
    #[arg(long, default_value = crate::outputs::control::DEFAULT_SOCKET, value_name = "PATH|off")]
    pub daemon_socket: String,
    /// Walk /proc here, even when a daemon could answer (source
    /// `standalone`): the full ownership evidence, without the daemon's
    /// clocks.
    #[arg(long)]
    pub standalone: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate FILE; print every error as FILE:LINE:COLUMN: message.
    #[command(after_help = CONFIG_CHECK_EXIT_CODES)]
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the documented default configuration.
    #[command(after_help = PRINT_EXIT_CODES)]
    Default,
    /// Print the built-in host presets and server launch shapes.
    #[command(after_help = PRINT_EXIT_CODES)]
    Presets,
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// The owner whose trees are over: a host PID, or PID:FD for the trees
    /// whose stdio far end is that fd.
    #[arg(
        long,
        value_name = "PID[:FD]",
        conflicts_with = "session",
        required_unless_present = "session"
    )]
    pub owner: Option<String>,
    /// The session id the host passed to its servers' environment.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Show what would be reaped, reap nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The daemon's control socket.
    #[arg(long, default_value = crate::outputs::control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManpageArgs {
    /// Write every page into DIR (made if missing) instead of printing the
    /// top one.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
