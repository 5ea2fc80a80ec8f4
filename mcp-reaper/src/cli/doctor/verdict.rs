//! The tier verdict: which detection tier the daemon would run, and why,
//! from the checks alone.
//!
//! Owns: the order of the tiers (eBPF, then pidfd, then poll, else none),
//! the reason sentence, and the short form of a failed check in it.
//! Must never: probe the system or read anything but the checks it is
//! given (so it is tested from made-up checks), or call a tier available
//! that a failed or skipped check rules out.

use std::fmt::Write as _;

use super::{
    detail::{KPROBE_PMU, TRACEFS_MISSING, errno_name},
    report::{Check, CheckId, Status, Tier},
};

/// The tier and why, from the checks alone; a failed check of what `run`
/// is given (configuration, address, socket) is added to the reason.
pub fn conclude(checks: &[Check]) -> (Tier, String) {
    let (tier, mut reason) = conclude_tier(checks);
    if let Some(c) = checks
        .iter()
        .find(|c| c.id.is_setup() && c.status == Status::Fail)
    {
        let _ = write!(
            reason,
            "; but run would stop at start: {} ({})",
            c.id.label(),
            c.detail
        );
    }
    (tier, reason)
}

/// The tier and why, from the kernel's checks.
fn conclude_tier(checks: &[Check]) -> (Tier, String) {
    let find = |id| checks.iter().find(|c| c.id == id);
    let ok = |id| find(id).is_some_and(|c| c.status == Status::Ok);
    let source = find(CheckId::EbpfSource);
    if let Some(c) = find(CheckId::PidNamespace).filter(|c| c.status == Status::Fail) {
        return (
            Tier::None,
            format!("{}; the daemon refuses to run there", c.detail),
        );
    }

    if ok(CheckId::EbpfSource) {
        let mut reason = String::from("raw tracepoint event programs load and attach");
        if !ok(CheckId::Tracepoint) {
            let why = find(CheckId::Tracepoint).map_or("not tried".into(), short_failure);
            let _ = write!(reason, "; classic tracepoints unavailable ({why})");
        }
        let hooks: Vec<String> = [CheckId::Fentry, CheckId::Kprobe]
            .into_iter()
            .filter_map(find)
            .map(|c| {
                if c.status == Status::Ok {
                    format!("{} attaches", c.id.label())
                } else {
                    format!("{} refused ({})", c.id.label(), short_failure(c))
                }
            })
            .collect();
        if !hooks.is_empty() {
            let any = ok(CheckId::Fentry) || ok(CheckId::Kprobe);
            let _ = write!(
                reason,
                "; {}, so UNIX-socket release hooks are {}",
                hooks.join(", "),
                if any { "available" } else { "off" }
            );
        }
        return (Tier::Ebpf, reason);
    }

    let why_not_ebpf = match source {
        Some(c) if c.status == Status::Skipped => format!("eBPF not tried ({})", c.detail),
        Some(c) => format!("eBPF event source failed ({})", short_failure(c)),
        None => "eBPF event source not tried".into(),
    };
    if ok(CheckId::Procfs) && ok(CheckId::PidfdGetfd) {
        return (
            Tier::Pidfd,
            format!(
                "{why_not_ebpf}; /proc is readable and pidfd_getfd works, so the daemon polls \
                 and wakes on tree roots' exits and stdin hangups (degraded)"
            ),
        );
    }
    if ok(CheckId::Procfs) {
        return (
            Tier::Poll,
            format!("{why_not_ebpf}; /proc is readable, so the daemon polls (degraded)"),
        );
    }
    let proc = find(CheckId::Procfs).map_or("not checked".into(), |c| c.detail.clone());
    (
        Tier::None,
        format!("{why_not_ebpf}; /proc is not readable ({proc}), so the daemon cannot run"),
    )
}

/// A short reason for a check that is not ok: the errno name when the
/// detail carries one, else the detail itself.
pub(super) fn short_failure(c: &Check) -> String {
    if c.status == Status::Skipped {
        return format!("skipped: {}", c.detail);
    }
    if c.detail.contains(TRACEFS_MISSING) {
        return "tracefs not mounted".into();
    }
    if c.detail.contains(KPROBE_PMU) {
        return "no kprobe support in this kernel".into();
    }
    errno_name(&c.detail).map_or_else(|| c.detail.clone(), str::to_owned)
}
