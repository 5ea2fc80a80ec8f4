//! `mcp-reaper doctor`: what this kernel and these privileges allow, and
//! which detection tier the daemon would run; and whether what `run` would
//! be given (configuration, metrics address, control socket) works.
//!
//! Owns: the checks (kernel release, BTF and the task offsets, tracefs,
//! lockdown, capabilities, /proc, the PID namespace, the configuration in force, the metrics
//! address, the control socket's place, the network namespaces of the
//! running hosts), trial loads of one empty program
//! per attach type (the `mcp-reaper-probes` object) and of the real eBPF
//! event source, the tier verdict with its reason, and the report's human
//! and JSON shapes.
//! Must never: change the system (mount, raise limits, pin, write to sysfs
//! or tracefs, create a file), leave a program loaded or attached after
//! `diagnose` returns, send a signal, or panic on odd /proc or sysfs
//! contents: every surprise becomes a check with a status and a one-line
//! detail.
//!
//! Layout: `checks` reads the host, `probes` makes the trial loads, `setup`
//! checks what `run` would be given, `namespaces` where the running hosts
//! are and whether they can be judged there, `verdict` turns the checks into a
//! tier, `report` holds the result and renders it, and `detail` makes every
//! error a one-line detail. This file only runs them in order.

mod checks;
mod detail;
mod namespaces;
mod probes;
mod report;
mod setup;
#[cfg(test)]
mod tests;
mod verdict;

pub use checks::{parse_lockdown, parse_release};
pub use detail::{errno_name, error_chain};
pub use report::{Check, CheckId, Privileges, Report, Status, Tier};
pub use setup::Setup;
pub use verdict::conclude;

use crate::procs::caps;
pub use crate::procs::caps::{CAPABILITIES, decode_caps, parse_cap_eff};

/// Runs every check of the kernel and privileges, and those of what `run`
/// would be given in `setup`.
pub fn diagnose_for(setup: &Setup) -> Report {
    let mut report = diagnose();
    report.checks.extend(setup::setup_checks(setup));
    let config = setup.config.load().ok();
    report
        .checks
        .extend(namespaces::netns_checks(config.as_ref()));
    (report.tier, report.reason) = conclude(&report.checks);
    report
}

/// Runs every check of the kernel and privileges. Synchronous; loads and
/// unloads programs when privileged.
pub fn diagnose() -> Report {
    let mut checks = Vec::new();

    let kernel_release = checks::kernel_release();
    checks.push(checks::check_kernel(kernel_release.as_deref()));
    checks.push(checks::check_btf());

    let tracefs = checks::mounted_tracefs().map(str::to_owned);
    checks.push(checks::check_tracefs(tracefs.as_deref()));

    let lockdown = checks::read_lockdown();
    checks.push(checks::check_lockdown(lockdown.as_deref()));

    let privileges = checks::privileges(rustix::process::geteuid().as_raw(), caps::own_cap_eff());
    checks.push(checks::check_privileges(&privileges));
    checks.push(checks::check_procfs());
    checks.push(checks::check_pid_namespace(crate::procs::pidns::own_ns()));
    checks.push(checks::check_pidfd_getfd());

    if privileges.can_load_bpf() {
        checks.extend(probes::try_attach_types());
        checks.push(probes::check_ebpf_source());
    } else {
        checks.extend(probes::skipped_without_privilege());
    }

    let (tier, reason) = conclude(&checks);
    Report {
        kernel_release: kernel_release.unwrap_or_else(|| "unknown".into()),
        tracefs,
        lockdown,
        privileges,
        checks,
        tier,
        reason,
    }
}
