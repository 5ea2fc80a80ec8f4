//! `mcp-reaper`: command-line entry point.
//!
//! Owns: logging set-up, running the command the command line names
//! (defined in `cli::args`), and its exit code. Everything else lives in
//! the library; this file only dispatches.
//!
//! Exit codes: as each command's `--help` says (`cli::args`): 0 success;
//! 1 failure (`scan --check`: orphans; `release`: no match); 2 usage or
//! configuration error; 3 degraded or incomplete (`doctor`, `scan`,
//! `release`).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mcp_reaper::{
    cli::{
        args::{
            Cli, Command, CompletionsArgs, ConfigCommand, DoctorArgs, LogFormat, ManpageArgs,
            ReleaseArgs, ScanArgs,
        },
        docs, output,
        run_args::RunArgs,
        run_options::{
            agent_options, poll_interval, reload_loader, services, source_choice, source_name,
        },
    },
    config::{self, ConfigFile},
    daemon, doctor, scan,
};

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

/// `run`: the configuration in force (an invalid one is exit 2 and
/// nothing starts), then the daemon until it stops. Outside the host's
/// initial PID namespace nothing starts either (exit 2): every PID the
/// daemon would act on would name another process.
fn run_cmd(args: &RunArgs) -> ExitCode {
    if let Some(why) = mcp_reaper::procs::pidns::daemon_refusal(mcp_reaper::procs::pidns::own_ns())
    {
        error(why);
        return ExitCode::from(2);
    }
    let default_path = config::default_config_path();
    let file = ConfigFile::resolve_with(args.config.as_deref(), &default_path);
    let mut config = match load_config(&file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.dry_run {
        config.policy.dry_run = true;
    }
    tracing::info!(
        config = %file,
        source = %source_name(source_choice(args, &config)),
        poll_interval = %config::format_duration(poll_interval(args, &config)),
        dry_run = config.policy.dry_run,
        "configuration in force"
    );
    let reload = reload_loader(args, &default_path, &config);
    match run(args, config, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    args: &RunArgs,
    config: config::Config,
    reload: daemon::service::ConfigLoader,
) -> anyhow::Result<()> {
    let services = services(args, &config, Some(reload));
    let opts = agent_options(args, config);
    mcp_reaper::heap::configure();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(daemon::service::run(opts, services))
}

fn release_cmd(args: &ReleaseArgs) -> ExitCode {
    use mcp_reaper::control::{self, OwnerRef, ReleaseTarget, Request};
    let target = match (&args.owner, &args.session) {
        (Some(o), _) => match control::parse_owner(o) {
            Ok((pid, fd)) => ReleaseTarget::Owner(OwnerRef { pid, fd }),
            Err(e) => {
                error(format!("--owner {o:?}: {e}"));
                return ExitCode::from(control::EXIT_USAGE);
            }
        },
        (None, Some(s)) => ReleaseTarget::Session(s.clone()),
        (None, None) => {
            error("give --owner or --session");
            return ExitCode::from(control::EXIT_USAGE);
        }
    };
    let req = Request::Release {
        target,
        dry_run: args.dry_run,
    };
    let res = control::request(&args.socket, &req, Duration::from_secs(5));
    let printed = match &res {
        Ok(r) if args.json => output::print_json(r),
        Ok(r) => {
            let mut text = String::new();
            if let Some(m) = &r.message {
                text.push_str(&format!("{m}\n"));
            }
            for t in r.matched.iter().flatten() {
                text.push_str(&format!("  {} {} ({})\n", t.root.tgid, t.server, t.state));
            }
            if let Some(e) = &r.error {
                error(e);
            }
            output::print(&text)
        }
        Err(e) => {
            error(e);
            Ok(())
        }
    };
    if let Err(e) = printed {
        error(e);
    }
    ExitCode::from(control::exit_code(&res))
}

/// A message on stderr, after the program's name.
fn error(msg: impl std::fmt::Display) {
    output::say(&format!("mcp-reaper: {msg}\n"));
}

/// Prints a command's answer; a failure other than a reader that went
/// away is exit 1.
fn answer(printed: Result<(), String>) -> Result<(), ExitCode> {
    printed.map_err(|e| {
        error(e);
        ExitCode::FAILURE
    })
}

/// Loads the configuration in force; an invalid one is exit 2, with every
/// error.
fn load_config(file: &ConfigFile) -> Result<config::Config, ExitCode> {
    file.load().map_err(|errors| {
        let mut text = errors.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        output::say(&text);
        ExitCode::from(2)
    })
}

/// `scan`: the daemon's answer when one is asked and answers, else a walk
/// of /proc (a fallback says why on stderr); the same output and exit
/// codes either way.
fn scan_cmd(args: &ScanArgs) -> ExitCode {
    use mcp_reaper::cli::scan_source::{self, Answer, Plan};
    let plan = scan_source::plan(args.standalone, &args.daemon_socket, &args.proc_root);
    let mut why = match plan {
        Plan::Standalone(why) => why.to_owned(),
        Plan::AskDaemon(socket) => {
            match scan_source::ask_daemon(socket, scan_source::DAEMON_TIMEOUT) {
                Ok(reply) => return print_scan(args, Answer::daemon(reply, socket)),
                Err(note) => {
                    error(&note);
                    note
                }
            }
        }
    };
    if let Some((head, _)) = why.split_once(": scanning /proc") {
        why = head.to_owned();
    }
    let file = ConfigFile::resolve(args.config.as_deref());
    tracing::debug!(config = %file, "configuration in force");
    let config = match load_config(&file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = match scan::scan(&config, &args.proc_root) {
        Ok(r) => r,
        Err(e) => {
            error(format!("{e:#}"));
            return ExitCode::from(scan::EXIT_INCOMPLETE);
        }
    };
    match Answer::standalone(&report, &why) {
        Ok(answer) => print_scan(args, answer),
        Err(e) => {
            error(e);
            ExitCode::FAILURE
        }
    }
}

/// Prints a scan's answer as `args` ask; its exit code.
fn print_scan(args: &ScanArgs, mut reply: mcp_reaper::cli::scan_source::Answer) -> ExitCode {
    let rows = if args.check || !args.json {
        match reply.rows() {
            Ok(r) => Some(r.clone()),
            Err(e) => {
                error(e);
                return ExitCode::from(scan::EXIT_INCOMPLETE);
            }
        }
    } else {
        None
    };
    let printed = match &rows {
        Some(r) if !args.json => output::print(&scan::render_human(r, &reply.source_line)),
        _ => output::print(reply.json()).and_then(|()| output::print("\n")),
    };
    if let Err(code) = answer(printed) {
        return code;
    }
    ExitCode::from(rows.map_or(0, |r| scan::exit_code(&r, args.check)))
}

fn config_cmd(cmd: &ConfigCommand) -> ExitCode {
    let printed = match cmd {
        ConfigCommand::Check { file } => match load_config(&ConfigFile::Given(file.clone())) {
            Ok(_) => output::print(&format!("{}: ok\n", file.display())),
            Err(code) => return code,
        },
        ConfigCommand::Default => output::print(config::default_toml()),
        ConfigCommand::Presets => output::print(config::presets_toml()),
    };
    match answer(printed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn completions_cmd(args: &CompletionsArgs) -> ExitCode {
    match answer(docs::completions(args.shell).and_then(|script| output::print(&script))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `manpage`: the top page on stdout, or every page into `--dir` and the
/// paths written on stdout; a page not written is exit 1.
fn manpage_cmd(args: &ManpageArgs) -> ExitCode {
    let printed = match &args.dir {
        None => docs::manpage().and_then(|page| output::print(&page)),
        Some(dir) => docs::write_pages(dir).and_then(|written| {
            let list: String = written
                .iter()
                .map(|path| format!("{}\n", path.display()))
                .collect();
            output::print(&list)
        }),
    };
    match answer(printed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn doctor_cmd(args: &DoctorArgs) -> ExitCode {
    let setup = doctor::Setup {
        config: ConfigFile::resolve(args.config.as_deref()),
        listen: args.listen,
        control_socket: (args.control_socket != "off").then(|| PathBuf::from(&args.control_socket)),
    };
    let report = doctor::diagnose_for(&setup);
    let printed = if args.json {
        output::print_json(&report)
    } else {
        output::print(&report.render_human())
    };
    match answer(printed) {
        Ok(()) => ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(1)),
        Err(code) => code,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, cli.log_filter()) {
        error(e);
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Scan(args) => scan_cmd(&args),
        Command::Config(cmd) => config_cmd(&cmd),
        Command::Release(args) => release_cmd(&args),
        Command::Run(args) => run_cmd(&args),
        Command::Doctor(args) => doctor_cmd(&args),
        Command::Completions(args) => completions_cmd(&args),
        Command::Manpage(args) => manpage_cmd(&args),
    }
}
