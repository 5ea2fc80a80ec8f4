//! What `mcp-reaper run` starts with: the command line over the
//! configuration file, as the agent's options and its outward services.
//!
//! Owns: which of the two wins for each setting (the command line, when it
//! gives one), `off`, and how SIGHUP reads the configuration again.
//! Must never: start anything, or read anything but the configuration.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tracing::warn;

use super::{run_args::RunArgs, values::Listen};
use crate::{
    config::{self, Config, ConfigFile},
    daemon::{AgentOptions, service::ConfigLoader},
    source::{SourceChoice, ebpf::EbpfOptions, poll::PollOptions},
};

/// The event source: `--source`, else the configuration's.
#[must_use]
pub fn source_choice(args: &RunArgs, config: &Config) -> SourceChoice {
    args.source.unwrap_or(match config.daemon.source {
        config::Source::Auto => SourceChoice::Auto,
        config::Source::Ebpf => SourceChoice::Ebpf,
        config::Source::Pidfd => SourceChoice::Pidfd,
        config::Source::Poll => SourceChoice::Poll,
    })
}

/// The time between /proc scans: `--poll-interval`, else the
/// configuration's.
#[must_use]
pub fn poll_interval(args: &RunArgs, config: &Config) -> Duration {
    args.poll_interval.unwrap_or(config.daemon.poll_interval)
}

/// How `run --source` spells `source`.
#[must_use]
pub fn source_name(source: SourceChoice) -> String {
    clap::ValueEnum::to_possible_value(&source)
        .map_or_else(|| format!("{source:?}"), |v| v.get_name().to_owned())
}

/// What the agent runs with: the command line over the configuration.
#[must_use]
pub fn agent_options(args: &RunArgs, config: Config) -> AgentOptions {
    AgentOptions {
        source: source_choice(args, &config),
        ebpf: EbpfOptions {
            ring_bytes: args.ring_buffer_bytes,
            watch_capacity: args.watch_capacity,
            kernel_log: args.kernel_log,
            close_tier: args.close_tier,
            close_hook: args.close_hook,
            ..EbpfOptions::default()
        },
        poll: PollOptions {
            interval: poll_interval(args, &config),
            proc_root: args.proc_root.clone(),
        },
        proc_root: args.proc_root.clone(),
        config: Arc::new(config),
        state_dir: (args.state_dir != "off").then(|| PathBuf::from(&args.state_dir)),
        // Fault injection for tests of a daemon starved of CPU.
        classify_delay: std::env::var("MCP_REAPER_FAULT_CLASSIFY_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis),
        ..AgentOptions::default()
    }
}

/// The daemon's outward services: the command line over the
/// configuration, `off` turning each one off.
#[must_use]
pub fn services(
    args: &RunArgs,
    config: &Config,
    reload: Option<ConfigLoader>,
) -> crate::daemon::service::Services {
    let listen = match args.listen {
        None => config.daemon.listen,
        Some(Listen::Off) => None,
        Some(Listen::At(a)) => Some(a),
    };
    let audit_path = match args.audit_log.as_deref() {
        None => config
            .daemon
            .audit_log
            .clone()
            .map(|p| p.display().to_string()),
        Some(s) => Some(s.to_string()),
    };
    let audit = match audit_path.as_deref() {
        None | Some("off") => None,
        Some("-") => Some(crate::outputs::audit::AuditTarget::Stdout),
        Some(p) => Some(crate::outputs::audit::AuditTarget::File {
            path: PathBuf::from(p),
            max_bytes: args.audit_max_bytes,
            keep: args.audit_keep,
        }),
    };
    let control_socket =
        (args.control_socket != "off").then(|| PathBuf::from(&args.control_socket));
    crate::daemon::service::Services {
        listen,
        audit,
        control_socket,
        reload,
    }
}

/// How SIGHUP reads the configuration again: by the same rules as at
/// start (the file named, else the default path's file if there now,
/// else the built-in defaults), with `--dry-run` on top. `[daemon] source`
/// and `poll_interval` are read at start only: a change is logged, not
/// applied.
#[must_use]
pub fn reload_loader(args: &RunArgs, default_path: &Path, at_start: &Config) -> ConfigLoader {
    let given = args.config.clone();
    let default_path = default_path.to_path_buf();
    let dry_run = args.dry_run;
    let (source, interval) = (at_start.daemon.source, at_start.daemon.poll_interval);
    Arc::new(move || {
        let file = ConfigFile::resolve_with(given.as_deref(), &default_path);
        let mut c = file.load().map_err(|e| e.to_string())?;
        if c.daemon.source != source || c.daemon.poll_interval != interval {
            warn!(
                config = %file,
                "[daemon] source and poll_interval take effect at the next start, not on reload"
            );
        }
        if dry_run {
            c.policy.dry_run = true;
        }
        Ok(c)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::args::{Cli, Command};

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["mcp-reaper", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => a,
            other => panic!("not run: {other:?}"),
        }
    }

    fn config(daemon: &str) -> Config {
        Config::from_toml_str(&format!("[daemon]\n{daemon}\n"), "t").unwrap()
    }

    #[test]
    fn the_configuration_chooses_the_source_unless_the_command_line_does() {
        let none = run_args(&[]);
        assert_eq!(source_choice(&none, &Config::default()), SourceChoice::Auto);
        for (file, want) in [
            ("auto", SourceChoice::Auto),
            ("ebpf", SourceChoice::Ebpf),
            ("pidfd", SourceChoice::Pidfd),
            ("poll", SourceChoice::Poll),
        ] {
            let c = config(&format!("source = \"{file}\""));
            assert_eq!(source_choice(&none, &c), want, "{file}");
            assert_eq!(agent_options(&none, c.clone()).source, want, "{file}");
            assert_eq!(source_name(want), file);
            let cli = run_args(&["--source", "poll"]);
            assert_eq!(agent_options(&cli, c).source, SourceChoice::Poll, "{file}");
        }
    }

    #[test]
    fn the_configuration_sets_the_poll_interval_unless_the_command_line_does() {
        let none = run_args(&[]);
        let c = config("poll_interval = \"250ms\"");
        assert_eq!(
            poll_interval(&none, &Config::default()),
            Duration::from_secs(1)
        );
        let opts = agent_options(&none, c.clone());
        assert_eq!(opts.poll.interval, Duration::from_millis(250));
        for given in ["2s", "2"] {
            let cli = run_args(&["--poll-interval", given]);
            let opts = agent_options(&cli, c.clone());
            assert_eq!(opts.poll.interval, Duration::from_secs(2), "{given}");
        }
    }

    #[test]
    fn the_configuration_sets_listen_and_audit_log_unless_the_command_line_does() {
        let c = config("listen = \"127.0.0.1:1234\"\naudit_log = \"/var/log/a.jsonl\"");
        let s = services(&run_args(&[]), &c, None);
        assert_eq!(s.listen, Some("127.0.0.1:1234".parse().unwrap()));
        assert!(matches!(
            s.audit,
            Some(crate::outputs::audit::AuditTarget::File { ref path, .. })
                if path == Path::new("/var/log/a.jsonl")
        ));
        let cli = run_args(&["--listen", "off", "--audit-log", "off"]);
        let s = services(&cli, &c, None);
        assert_eq!((s.listen, s.audit.is_none()), (None, true));
    }

    #[test]
    fn defaults_shown_in_units_are_the_defaults_in_force() {
        let none = run_args(&[]);
        assert_eq!(
            none.ring_buffer_bytes,
            crate::source::ebpf::DEFAULT_RING_BYTES
        );
        assert_eq!(none.audit_max_bytes, 64 << 20);
        let given = run_args(&[
            "--ring-buffer-bytes",
            "4MiB",
            "--audit-max-bytes",
            "512 KiB",
        ]);
        assert_eq!(given.ring_buffer_bytes, 4 << 20);
        assert_eq!(given.audit_max_bytes, 512 << 10);
    }

    #[test]
    fn a_reload_reads_the_same_file_by_the_same_rules() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config.toml");
        let args = run_args(&["--dry-run"]);
        let load = reload_loader(&args, &default, &Config::default());
        // No file at the default path: the built-in defaults, dry run on top.
        let c = load().unwrap();
        assert!(c.policy.dry_run);
        assert_eq!(c.policy.grace, Config::default().policy.grace);
        // A file put there since start is read.
        std::fs::write(&default, "[policy]\ngrace = \"9s\"\n").unwrap();
        assert_eq!(load().unwrap().policy.grace, Duration::from_secs(9));
        std::fs::write(&default, "[policy]\ngrace = \"never\"\n").unwrap();
        assert!(load().is_err());
    }
}
