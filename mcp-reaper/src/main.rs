//! `mcp-reaper`: command-line entry point.
//!
//! Owns: argument parsing, logging set-up and exit codes. Everything else
//! lives in the library; this file only dispatches.
//!
//! Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error;
//! 3 (`doctor`) the daemon can run, but only in a degraded tier.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use mcp_reaper::{
    config,
    daemon::{self, AgentOptions},
    doctor, scan,
    source::{
        SourceChoice,
        ebpf::{CloseHook, CloseTier, DEFAULT_RING_BYTES, DEFAULT_WATCH_CAPACITY, EbpfOptions},
        poll::PollOptions,
    },
};

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
    after_help = "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error, \
3 (doctor) degraded: only the pidfd or poll tier can run."
)]
struct Cli {
    /// Log format: human-readable lines or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "MCP_REAPER_LOG_FORMAT")]
    log_format: LogFormat,

    /// Log filter, e.g. `info`, `debug`, `mcp_reaper=debug`.
    #[arg(long, global = true, default_value = "info", env = "MCP_REAPER_LOG")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: track processes from kernel events (or /proc scans).
    ///
    /// Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH).
    /// Stops cleanly on SIGINT or SIGTERM, detaching every kernel program.
    Run(RunArgs),
    /// Check what this kernel and these privileges allow, and which detection
    /// tier `run` would use. Exit 0: eBPF tier; 3: pidfd or poll tier only; 1: cannot run.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// One-shot report of every MCP server tree: host, session, owner fds,
    /// state (live / orphaned / suspect / unknown) with its reason, members
    /// and memory. Works without the daemon and without eBPF.
    ///
    /// Exit codes: 0 ok; 1 with --check when orphaned trees exist (for cron
    /// and monitoring); 2 configuration error.
    Scan(ScanArgs),
    /// Check, print or explain the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Tell the running daemon that a session is over: its trees are reaped
    /// (reason session-ended) after the grace period, even though the host
    /// still holds their stdio. For hosts' session-end hooks (see
    /// deploy/hooks). Root only.
    ///
    /// Exit codes: 0 at least one tree matched; 1 none matched; 2 usage or
    /// a rejected request; 3 the daemon is unreachable or refused.
    Release(ReleaseArgs),
}

#[derive(clap::Args, Debug)]
struct ScanArgs {
    /// Print JSON (schema in the README; `schema_version` marks changes).
    #[arg(long)]
    json: bool,
    /// Exit 1 when any orphaned tree exists, 0 otherwise.
    #[arg(long)]
    check: bool,
    /// Configuration file (default: built-in presets and server shapes).
    #[arg(long, short, value_name = "FILE", env = "MCP_REAPER_CONFIG")]
    config: Option<PathBuf>,
    /// Where procfs is mounted.
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    proc_root: PathBuf,
    /// A running daemon's control socket: when it answers, trees it judges
    /// suspect (idle, superseded) or released by their session are shown
    /// as such (`judged_by: daemon`); `off` to scan alone.
    #[arg(long, default_value = mcp_reaper::control::DEFAULT_SOCKET, value_name = "PATH|off")]
    daemon_socket: String,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate FILE; print every error as FILE:LINE:COLUMN and exit 2 if any.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the documented default configuration.
    Default,
    /// Print the built-in host presets and server launch shapes.
    Presets,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Event source: `auto` uses eBPF when it loads, else pidfd (polling plus
    /// wakes on tree roots' exits and stdin hangups) when pidfd_getfd works,
    /// else polling.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    source: SourceChoice,

    /// Poll tier: seconds between /proc scans.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    poll_interval: f64,

    /// eBPF tier: ring buffer size in bytes (power of two, at least a
    /// page). Raise it if mcp_reaper_lost_events_total grows: each loss
    /// costs a /proc resync. Resident memory grows by twice this size.
    #[arg(long, default_value_t = DEFAULT_RING_BYTES, value_name = "BYTES")]
    ring_buffer_bytes: u32,

    /// eBPF tier: capacity of the kernel's watch map (processes of hosts
    /// and trees). When it is full, lineage is incomplete: tracking stays
    /// degraded (nothing is reaped) and mcp_reaper_lineage_gaps_total
    /// {cause="watch_full"} grows.
    #[arg(long, default_value_t = DEFAULT_WATCH_CAPACITY, value_name = "PROCESSES")]
    watch_capacity: u32,

    /// eBPF tier: forward the kernel programs' debug log (aya-log).
    #[arg(long)]
    kernel_log: bool,

    /// eBPF tier: how hosts' releases of a tree's stdio are seen. `auto`
    /// watches each tree root's stdin (a pidfd_getfd duplicate in epoll),
    /// which costs other processes nothing, and attaches the close tier
    /// only where that cannot run (no CAP_SYS_PTRACE, or a security module
    /// refuses). `on` attaches the close tier: hosts' close, close_range
    /// and dup2/dup3 seen in the kernel, with a tracepoint on every
    /// process's syscalls (about 40 ns each). `off` never attaches it.
    #[arg(long, value_enum, default_value_t = CloseTier::Auto, value_name = "WHEN")]
    close_tier: CloseTier,

    /// eBPF tier, close tier on: where it enters the kernel. `auto` uses the
    /// per-syscall tracepoints (only close, close_range, dup2 and dup3 run
    /// a program), mounting a tracefs private to the daemon if the machine
    /// has none; `sys-enter` uses raw_tp/sys_enter, which needs no tracefs
    /// but runs a program on every syscall of the machine.
    #[arg(long, value_enum, default_value_t = CloseHook::Auto, value_name = "HOOK")]
    close_hook: CloseHook,

    /// Where procfs is mounted (a host's /proc inside a container, say).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    proc_root: PathBuf,

    /// Configuration file (default: built-in presets, server shapes and
    /// policy; see `mcp-reaper config default`). An invalid file is exit 2
    /// and nothing starts.
    #[arg(long, short, value_name = "FILE", env = "MCP_REAPER_CONFIG")]
    config: Option<PathBuf>,

    /// Decide and report, but signal nothing (overrides the config).
    #[arg(long)]
    dry_run: bool,

    /// Metrics endpoint address, or `off` (default: the config's
    /// `[daemon] listen`, 127.0.0.1:9863).
    #[arg(long, value_name = "ADDR|off")]
    listen: Option<String>,

    /// Audit log: a file path (JSON lines, rotated by size), `-` for
    /// stdout, or `off` (default: the config's `[daemon] audit_log`, else off).
    #[arg(long, value_name = "PATH|-|off")]
    audit_log: Option<String>,

    /// Rotate the audit log past this many bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    audit_max_bytes: u64,

    /// Rotated audit files to keep.
    #[arg(long, default_value_t = 5, value_name = "N")]
    audit_keep: u32,

    /// The root-only control socket for `release`, or `off`.
    #[arg(long, default_value = mcp_reaper::control::DEFAULT_SOCKET, value_name = "PATH|off")]
    control_socket: String,

    /// Where a reap records the processes it stops, so that a daemon killed
    /// mid-reap continues them at its next start; `off` records nothing.
    #[arg(long, default_value = "/run/mcp-reaper", value_name = "DIR|off")]
    state_dir: String,
}

#[derive(clap::Args, Debug)]
struct ReleaseArgs {
    /// The owner whose trees are over: a host PID, or PID:FD for the trees
    /// whose stdio far end is that fd.
    #[arg(
        long,
        value_name = "PID[:FD]",
        conflicts_with = "session",
        required_unless_present = "session"
    )]
    owner: Option<String>,
    /// The session id the host passed to its servers' environment.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Show what would be reaped, reap nothing.
    #[arg(long)]
    dry_run: bool,
    /// The daemon's control socket.
    #[arg(long, default_value = mcp_reaper::control::DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    json: bool,
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

fn run(args: RunArgs, mut config: config::Config) -> anyhow::Result<()> {
    if !(args.poll_interval.is_finite() && args.poll_interval >= 0.01) {
        anyhow::bail!("--poll-interval must be at least 0.01 seconds");
    }
    if args.watch_capacity == 0 {
        anyhow::bail!("--watch-capacity must be at least 1");
    }
    if args.dry_run {
        config.policy.dry_run = true;
    }
    // SIGHUP reads the same file again, with the same command-line
    // overrides on top.
    let reload: Option<daemon::ConfigLoader> = args.config.clone().map(|path| {
        let dry_run = args.dry_run;
        let load: daemon::ConfigLoader = std::sync::Arc::new(move || {
            let mut c = config::Config::load(&path).map_err(|e| e.to_string())?;
            if dry_run {
                c.policy.dry_run = true;
            }
            Ok(c)
        });
        load
    });
    let opts = AgentOptions {
        source: args.source,
        ebpf: EbpfOptions {
            ring_bytes: args.ring_buffer_bytes,
            watch_capacity: args.watch_capacity,
            kernel_log: args.kernel_log,
            close_tier: args.close_tier,
            close_hook: args.close_hook,
            ..EbpfOptions::default()
        },
        poll: PollOptions {
            interval: Duration::from_secs_f64(args.poll_interval),
            proc_root: args.proc_root.clone(),
        },
        proc_root: args.proc_root,
        config: std::sync::Arc::new(config),
        state_dir: (args.state_dir != "off").then(|| PathBuf::from(&args.state_dir)),
        ..AgentOptions::default()
    };
    let listen = match args.listen.as_deref() {
        None => opts.config.daemon.listen,
        Some("off") => None,
        Some(a) => Some(
            a.parse()
                .map_err(|e| anyhow::anyhow!("--listen {a:?}: {e}"))?,
        ),
    };
    let audit_path = match args.audit_log.as_deref() {
        None => opts
            .config
            .daemon
            .audit_log
            .clone()
            .map(|p| p.display().to_string()),
        Some(s) => Some(s.to_string()),
    };
    let audit = match audit_path.as_deref() {
        None | Some("off") => None,
        Some("-") => Some(mcp_reaper::audit::AuditTarget::Stdout),
        Some(p) => Some(mcp_reaper::audit::AuditTarget::File {
            path: PathBuf::from(p),
            max_bytes: args.audit_max_bytes,
            keep: args.audit_keep,
        }),
    };
    let control_socket =
        (args.control_socket != "off").then(|| PathBuf::from(&args.control_socket));
    let services = daemon::Services {
        listen,
        audit,
        control_socket,
        reload,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(opts, services))
}

fn release_cmd(args: &ReleaseArgs) -> ExitCode {
    use mcp_reaper::control::{self, OwnerRef, ReleaseTarget, Request};
    let target = match (&args.owner, &args.session) {
        (Some(o), _) => match control::parse_owner(o) {
            Ok((pid, fd)) => ReleaseTarget::Owner(OwnerRef { pid, fd }),
            Err(e) => {
                eprintln!("mcp-reaper: --owner {o:?}: {e}");
                return ExitCode::from(control::EXIT_USAGE);
            }
        },
        (None, Some(s)) => ReleaseTarget::Session(s.clone()),
        (None, None) => {
            eprintln!("mcp-reaper: give --owner or --session");
            return ExitCode::from(control::EXIT_USAGE);
        }
    };
    let req = Request::Release {
        target,
        dry_run: args.dry_run,
    };
    let res = control::request(&args.socket, &req, Duration::from_secs(5));
    match &res {
        Ok(r) if args.json => match serde_json::to_string_pretty(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("mcp-reaper: {e}"),
        },
        Ok(r) => {
            if let Some(m) = &r.message {
                println!("{m}");
            }
            for t in r.matched.iter().flatten() {
                println!("  {} {} ({})", t.root.tgid, t.server, t.state);
            }
            if let Some(e) = &r.error {
                eprintln!("mcp-reaper: {e}");
            }
        }
        Err(e) => eprintln!("mcp-reaper: {e}"),
    }
    ExitCode::from(control::exit_code(&res))
}

/// Loads `--config` or the defaults; a bad file is exit 2 with every error.
fn load_config(path: Option<&std::path::Path>) -> Result<config::Config, ExitCode> {
    match path {
        None => Ok(config::Config::default()),
        Some(p) => config::Config::load(p).map_err(|errors| {
            eprint!("{errors}");
            if !errors.to_string().ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(2)
        }),
    }
}

fn scan_cmd(args: &ScanArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut report = match scan::scan(&config, &args.proc_root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcp-reaper: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.daemon_socket != "off" {
        let req = mcp_reaper::control::Request::Status;
        if let Ok(resp) = mcp_reaper::control::request(
            std::path::Path::new(&args.daemon_socket),
            &req,
            Duration::from_secs(2),
        ) && let Some(trees) = resp.status.as_ref().and_then(|s| s["trees"].as_array())
        {
            scan::merge_daemon_view(&mut report, trees);
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("mcp-reaper: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", scan::render_human(&report));
    }
    if args.check && report.totals.orphaned > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn config_cmd(cmd: &ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Check { file } => match load_config(Some(file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        ConfigCommand::Default => {
            print!("{}", config::default_toml());
            ExitCode::SUCCESS
        }
        ConfigCommand::Presets => {
            print!("{}", config::presets_toml());
            ExitCode::SUCCESS
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("mcp-reaper: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Scan(args) => scan_cmd(&args),
        Command::Config(cmd) => config_cmd(&cmd),
        Command::Release(args) => release_cmd(&args),
        Command::Run(args) => match load_config(args.config.as_deref()) {
            Err(code) => code,
            Ok(config) => match run(args, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            },
        },
        Command::Doctor { json } => {
            let report = doctor::diagnose();
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("mcp-reaper: cannot encode the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.render_human());
            }
            ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(1))
        }
    }
}
