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
    daemon::{self, AgentOptions},
    doctor,
    source::{SourceChoice, ebpf::EbpfOptions, poll::PollOptions},
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
3 (doctor) degraded: only the poll tier can run."
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
    /// tier `run` would use. Exit 0: eBPF tier; 3: poll tier only; 1: cannot run.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Event source: `auto` uses eBPF when it loads and falls back to polling.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    source: SourceChoice,

    /// Poll tier: seconds between /proc scans.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    poll_interval: f64,

    /// eBPF tier: ring buffer size in bytes (power of two, at least a page).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    ring_buffer_bytes: u32,

    /// eBPF tier: forward the kernel programs' debug log (aya-log).
    #[arg(long)]
    kernel_log: bool,

    /// Where procfs is mounted (a host's /proc inside a container, say).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    proc_root: PathBuf,
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("invalid --log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if !(args.poll_interval.is_finite() && args.poll_interval >= 0.01) {
        anyhow::bail!("--poll-interval must be at least 0.01 seconds");
    }
    let opts = AgentOptions {
        source: args.source,
        ebpf: EbpfOptions {
            ring_bytes: args.ring_buffer_bytes,
            kernel_log: args.kernel_log,
            ..EbpfOptions::default()
        },
        poll: PollOptions {
            interval: Duration::from_secs_f64(args.poll_interval),
            proc_root: args.proc_root.clone(),
        },
        proc_root: args.proc_root,
        ..AgentOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(opts))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("mcp-reaper: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
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
