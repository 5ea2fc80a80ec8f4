//! Spawn storm: what the daemon's fork/exec/exit tracking costs every other
//! process on the machine. A storm is N sequential fork+exec+wait of
//! /bin/true; rounds alternate between no daemon and
//! `mcp-reaper run --source ebpf` running, and the medians are compared.
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::context::Context;
use super::report::Section;
use super::shared::{STORM_PROGRAM, median, storm};
use crate::child_daemon::{Daemon, Memory};

const TITLE: &str = "Spawn storm";
const DAEMON_ARGS: &[&str] = &["run", "--source", "ebpf"];
const TARGET_RATIO: f64 = 1.03;
const TARGET_RSS_MIB: f64 = 30.0;

#[derive(clap::Args)]
#[command(next_help_heading = "spawn-storm")]
pub struct Args {
    /// Spawns per storm.
    #[arg(long, default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(1..))]
    spawns: u32,
    /// Storms, alternating no daemon / daemon running (at least 2). Many
    /// short storms spread the machine's drift over both configurations.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..))]
    rounds: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    NoDaemon,
    Daemon,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Self::NoDaemon => "no daemon",
            Self::Daemon => "daemon running",
        }
    }
}

struct Round {
    config: Config,
    wall: Duration,
    memory: Option<Memory>,
}

pub fn run(ctx: &Context, args: &Args) -> Result<Section> {
    println!(
        "spawn-storm: {} rounds of {} spawns of {STORM_PROGRAM}",
        args.rounds, args.spawns
    );
    // Warm the page cache and the allocator; not recorded.
    storm(args.spawns.min(500))?;
    let mut rounds = Vec::new();
    for i in 0..args.rounds {
        let config = if i % 2 == 0 {
            Config::NoDaemon
        } else {
            Config::Daemon
        };
        let round = match config {
            Config::NoDaemon => Round {
                config,
                wall: storm(args.spawns)?,
                memory: None,
            },
            Config::Daemon => {
                let mut daemon = Daemon::start(&ctx.daemon_bin, DAEMON_ARGS)
                    .context("start the daemon for the spawn storm")?;
                let wall = storm(args.spawns)?;
                let memory = daemon.memory()?;
                daemon.stop()?;
                Round {
                    config,
                    wall,
                    memory: Some(memory),
                }
            }
        };
        println!(
            "round {}/{} ({}): {:.3} s, {:.1} us/spawn{}",
            i + 1,
            args.rounds,
            config.label(),
            round.wall.as_secs_f64(),
            per_spawn_us(round.wall, args.spawns),
            round.memory.map_or_else(String::new, |m| format!(
                ", daemon VmHWM {:.1} MiB",
                mib(m.hwm_kib)
            )),
        );
        rounds.push(round);
    }
    Ok(summarize(ctx, args, &rounds))
}

fn per_spawn_us(wall: Duration, spawns: u32) -> f64 {
    wall.as_secs_f64() * 1e6 / f64::from(spawns)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The wall times of the rounds run in `config`, in order.
fn walls(rounds: &[Round], config: Config) -> Vec<Duration> {
    rounds
        .iter()
        .filter(|r| r.config == config)
        .map(|r| r.wall)
        .collect()
}

fn summarize(ctx: &Context, args: &Args, rounds: &[Round]) -> Section {
    let mut body = ctx.header();
    write_rounds(&mut body, args, rounds);
    let missed = write_targets(&mut body, rounds);
    Section::with_targets(TITLE, body, missed)
}

/// How the rounds ran and their wall times per configuration.
fn write_rounds(body: &mut String, args: &Args, rounds: &[Round]) {
    let _ = writeln!(
        body,
        "\nEach round runs {} sequential fork+exec+wait of `{STORM_PROGRAM}` (`std::process::Command`). \
         Rounds alternate between no daemon and `mcp-reaper {}` running (started before the round, \
         ready when it logs `ready`, stopped with SIGTERM after it); {} rounds in all.\n",
        args.spawns,
        DAEMON_ARGS.join(" "),
        args.rounds,
    );
    body.push_str("| configuration | rounds | median wall time | per spawn | each round (s) |\n");
    body.push_str("| --- | --- | --- | --- | --- |\n");
    for config in [Config::NoDaemon, Config::Daemon] {
        let all = walls(rounds, config);
        let each: Vec<String> = all
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect();
        let (med, per) = median(all.clone()).map_or_else(
            || ("n/a".to_owned(), "n/a".to_owned()),
            |m| {
                (
                    format!("{:.3} s", m.as_secs_f64()),
                    format!("{:.1} us", per_spawn_us(m, args.spawns)),
                )
            },
        );
        let _ = writeln!(
            body,
            "| {} | {} | {med} | {per} | {} |",
            config.label(),
            all.len(),
            each.join(", ")
        );
    }
}

/// The targets table; the targets missed.
fn write_targets(body: &mut String, rounds: &[Round]) -> Vec<String> {
    let base = median(walls(rounds, Config::NoDaemon));
    let with = median(walls(rounds, Config::Daemon));
    let ratio = base
        .zip(with)
        .map(|(b, w)| w.as_secs_f64() / b.as_secs_f64());
    let hwm = rounds
        .iter()
        .filter_map(|r| r.memory.map(|m| m.hwm_kib))
        .max();
    let rss = rounds
        .iter()
        .rev()
        .find_map(|r| r.memory.map(|m| m.rss_kib));
    let mut missed = Vec::new();
    let ratio_text = ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}"));
    let ratio_met = ratio.is_some_and(|r| r <= TARGET_RATIO);
    if !ratio_met {
        missed.push(format!(
            "spawn-storm ratio {ratio_text} > {TARGET_RATIO:.2}"
        ));
    }
    let hwm_mib = hwm.map(mib);
    let hwm_text = hwm_mib.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.1} MiB"));
    let rss_met = hwm_mib.is_some_and(|m| m <= TARGET_RSS_MIB);
    if !rss_met {
        missed.push(format!(
            "daemon peak RSS {hwm_text} > {TARGET_RSS_MIB:.0} MiB"
        ));
    }
    let verdict = |met| if met { "met" } else { "**missed**" };
    body.push_str("\n| metric | result | target | |\n| --- | --- | --- | --- |\n");
    let _ = writeln!(
        body,
        "| wall time ratio (daemon / no daemon) | {ratio_text} | <= {TARGET_RATIO:.2} | {} |",
        verdict(ratio_met)
    );
    let _ = writeln!(
        body,
        "| daemon peak RSS (VmHWM, max over rounds) | {hwm_text} | <= {TARGET_RSS_MIB:.0} MiB | {} |",
        verdict(rss_met)
    );
    if let Some(rss) = rss {
        let _ = writeln!(
            body,
            "| daemon RSS at the end of the last round (VmRSS) | {:.1} MiB | | |",
            mib(rss)
        );
    }
    missed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ctx() -> Context {
        Context {
            daemon_bin: PathBuf::from("/nonexistent/mcp-reaper"),
            command_line: "cargo xtask bench spawn-storm".to_owned(),
            date: "2026-11-25".to_owned(),
            kernel: "6.18.0".to_owned(),
            machine: "test".to_owned(),
            busy_note: None,
        }
    }

    fn round(config: Config, ms: u64, hwm_kib: u64) -> Round {
        Round {
            config,
            wall: Duration::from_millis(ms),
            memory: (config == Config::Daemon).then_some(Memory {
                hwm_kib,
                rss_kib: hwm_kib / 2,
                anon_kib: hwm_kib / 4,
            }),
        }
    }

    #[test]
    fn summary_meets_targets() {
        let args = Args {
            spawns: 1000,
            rounds: 3,
        };
        let rounds = [
            round(Config::NoDaemon, 1000, 0),
            round(Config::Daemon, 1010, 20 * 1024),
            round(Config::NoDaemon, 1000, 0),
        ];
        let s = summarize(&ctx(), &args, &rounds);
        assert!(s.missed_targets.is_empty(), "{:?}", s.missed_targets);
        assert!(s.body.contains("| 1.010 |"), "{}", s.body);
        assert!(
            s.body
                .contains("- Command: `cargo xtask bench spawn-storm`")
        );
        assert!(!s.body.contains("Target missed"));
    }

    #[test]
    fn summary_reports_missed_targets() {
        let args = Args {
            spawns: 1000,
            rounds: 2,
        };
        let rounds = [
            round(Config::NoDaemon, 1000, 0),
            round(Config::Daemon, 1100, 40 * 1024),
        ];
        let s = summarize(&ctx(), &args, &rounds);
        assert_eq!(s.missed_targets.len(), 2, "{:?}", s.missed_targets);
        assert!(s.body.contains("**Target missed:**"));
    }

    #[test]
    fn daemon_start_failure_is_clear() {
        let args = Args {
            spawns: 1,
            rounds: 2,
        };
        let Err(e) = run(&ctx(), &args) else {
            panic!("a missing daemon binary must fail the benchmark");
        };
        let msg = format!("{e:#}");
        assert!(
            msg.contains("start the daemon") && msg.contains("/nonexistent/mcp-reaper"),
            "{msg}"
        );
    }

    #[test]
    fn full_run_with_stand_in_daemon() -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir()?;
        let bin = dir.path().join("mcp-reaper");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho \"INFO mcp_reaper: ready\" >&2\nexec sleep 60\n",
        )?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        let ctx = Context {
            daemon_bin: bin,
            ..ctx()
        };
        let args = Args {
            spawns: 200,
            rounds: 3,
        };
        let s = run(&ctx, &args)?;
        println!("{}", s.body);
        assert!(s.body.contains("| no daemon | 2 |"), "{}", s.body);
        assert!(s.body.contains("| daemon running | 1 |"), "{}", s.body);
        assert!(!s.body.contains("n/a"), "{}", s.body);
        Ok(())
    }
}
