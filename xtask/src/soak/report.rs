//! RELIABILITY.md's "Soak" section, written by `cargo xtask soak --record`.
//!
//! Owns: the section's shape. Must never: decide the verdict (`SoakResult`
//! does) or write anything but RELIABILITY.md.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use crate::paths::repo_root;
use crate::stats::percentile;

use super::result::SoakResult;

const PREAMBLE: &str = "# Reliability\n";

fn body(command: &str, r: &SoakResult) -> String {
    let date = crate::cmd::Cmd::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .stdout()
        .unwrap_or_default();
    let ms = |q| percentile(&r.reap_ms, q).map_or_else(|| "n/a".to_owned(), |v| format!("{v} ms"));
    let mut b = format!(
        "- Command: `{}` (as root)\n- Date: {}\n- Verdict: **{}** in {} s\n\n",
        command,
        date.trim(),
        if r.passed() { "pass" } else { "fail" },
        r.elapsed.as_secs()
    );
    b.push_str("| kind | lifecycles |\n| --- | --- |\n");
    for (k, n) in &r.by_kind {
        let _ = writeln!(b, "| {k} | {n} |");
    }
    let _ = write!(
        b,
        "\n| measure | value |\n| --- | --- |\n\
         | false kills | {} |\n| leaks | {} |\n\
         | withheld: let go while the daemon reported degraded tracking (by design) | {} |\n\
         | share of the daemon's answers that said degraded | {:.1}% |\n\
         | harness errors | {} |\n\
         | trees let go (reap latency measured) | {} |\n\
         | reap latency p50 / p99 / max (let go to gone; 100 ms sweeps) | {} / {} / {} |\n\
         | verdict and reap records in the audit log (all checked) / lines not JSON | {} / {} |\n\
         | daemon restarts survived (SIGKILL) / starts retried | {} / {} |\n| release calls | {} |\n\
         | unrelated fork/exec in bursts | {} |\n\
         | PID reuse: bystanders placed on a recycled tree PID / tries | {} / {} |\n\
         | events lost (kernel ring) | {} |\n| resyncs | {} |\n\
         | daemon peak RSS (VmHWM, highest of its runs) | {:.1} MiB |\n",
        r.false_kills.len(),
        r.leaks.len(),
        r.withheld.len(),
        r.degraded_share * 100.0,
        r.problems.len(),
        r.reap_ms.len(),
        ms(50.0),
        ms(99.0),
        r.reap_ms
            .last()
            .map_or_else(|| "n/a".to_owned(), |v| format!("{v} ms")),
        r.audit_reaps,
        r.audit_unparsable,
        r.restarts,
        r.start_retries,
        r.release_calls,
        r.burst_spawns,
        r.pid_reuse.0,
        r.pid_reuse.1,
        r.lost_events,
        r.resyncs,
        r.peak_hwm_kib as f64 / 1024.0,
    );
    b.push_str(
        "\nGround truth is the soak's own: each tree member carries a tag in its \
         environment that a sweep of /proc finds, and kept members are held by pidfd. \
         A false kill is a kept tree's member, a host or a bystander that died unasked, \
         or a verdict or reap record in the audit log naming a tree before the soak let it go; a leak is a let-go \
         tree's member alive after grace (1 s) + kill_after (1 s) + the margin.\n",
    );
    let problems: Vec<&String> = r
        .false_kills
        .iter()
        .chain(&r.leaks)
        .chain(&r.problems)
        .take(10)
        .collect();
    if !problems.is_empty() {
        b.push_str("\nThe first problems:\n\n");
    }
    for p in problems {
        let _ = writeln!(b, "- {p}");
    }
    b
}

/// Replaces (or appends) RELIABILITY.md's soak section for this set of
/// chaos flags (`Soak: <flags>`): runs under different chaos keep their
/// own sections.
pub fn record(command: &str, chaos: &str, r: &SoakResult) -> Result<()> {
    let title = format!("Soak: {chaos}");
    let path = repo_root().join("RELIABILITY.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let text = crate::sections::upsert(&old, PREAMBLE, &title, &body(command, r));
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    eprintln!("soak: wrote section \"{title}\" of {}", path.display());
    Ok(())
}
