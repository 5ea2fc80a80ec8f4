//! The host checks: kernel release, BTF and the task offsets, tracefs,
//! lockdown, privileges, /proc and `pidfd_getfd`.
//!
//! Owns: reading what the kernel and this process expose about themselves
//! and turning each into one `Check` with a status and a one-line detail,
//! and the parsers for the release and lockdown texts.
//! Must never: load a program, mount, or write anywhere (the trial loads
//! are `probes`'), or fail the report on odd contents: an unreadable or
//! surprising file is a check's status, never an error.

use std::{fmt::Write as _, fs, path::Path};

use super::{
    detail::error_chain,
    report::{Check, CheckId, Privileges, Status},
};
use crate::{
    procs::caps::{self, CAPABILITIES, decode_caps},
    source::kernel_btf::{KernelBtf, VMLINUX_BTF},
};

/// Where tracefs may be mounted, in the order the loader looks.
pub(super) const TRACEFS_EVENTS: [&str; 2] = [
    "/sys/kernel/tracing/events",
    "/sys/kernel/debug/tracing/events",
];
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
pub(super) const NEEDS_PRIVILEGE: &str = "needs root or CAP_BPF+CAP_PERFMON";

/// The first of [`TRACEFS_EVENTS`] that is mounted (lists entries).
pub(super) fn mounted_tracefs() -> Option<&'static str> {
    TRACEFS_EVENTS
        .iter()
        .find(|p| dir_has_entries(Path::new(p)))
        .copied()
}

pub(super) fn check_tracefs(mounted: Option<&str>) -> Check {
    match mounted {
        Some(p) => Check::new(CheckId::Tracefs, Status::Ok, format!("mounted ({p})")),
        // Not an operator fix: the tracepoint check says whether a
        // private mount works.
        None => Check::new(
            CheckId::Tracefs,
            Status::Ok,
            "not mounted; classic tracepoints go through a tracefs the daemon mounts privately",
        ),
    }
}

/// The active lockdown mode, if securityfs shows one.
pub(super) fn read_lockdown() -> Option<String> {
    fs::read_to_string(LOCKDOWN)
        .ok()
        .and_then(|s| parse_lockdown(&s))
}

pub(super) fn check_pidfd_getfd() -> Check {
    match caps::probe_pidfd_getfd() {
        Ok(()) => Check::new(
            CheckId::PidfdGetfd,
            Status::Ok,
            "pidfd_open and pidfd_getfd work, CAP_SYS_PTRACE effective",
        ),
        Err(e) => Check::new(CheckId::PidfdGetfd, Status::Warn, e),
    }
}

pub(super) fn privileges(euid: u32, cap_eff: Option<u64>) -> Privileges {
    Privileges {
        euid,
        cap_eff: cap_eff.map(|m| format!("{m:016x}")),
        capabilities: cap_eff.map(decode_caps).unwrap_or_default(),
    }
}

pub(super) fn check_privileges(p: &Privileges) -> Check {
    let Some(mask) = &p.cap_eff else {
        let status = if p.euid == 0 {
            Status::Warn
        } else {
            Status::Fail
        };
        return Check::new(
            CheckId::Privileges,
            status,
            format!("euid {}; CapEff unreadable in /proc/self/status", p.euid),
        );
    };
    let missing: Vec<&str> = CAPABILITIES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !p.has(n))
        .collect();
    let mut detail = format!("euid {}; CapEff {mask}", p.euid);
    if missing.is_empty() {
        detail.push_str("; all needed capabilities effective");
    } else {
        let _ = write!(detail, "; missing {}", missing.join(" "));
    }
    let status = if !p.can_load_bpf() {
        detail.push_str(&format!("; BPF checks skipped ({NEEDS_PRIVILEGE})"));
        Status::Warn
    } else if missing.is_empty() {
        Status::Ok
    } else {
        Status::Warn
    };
    Check::new(CheckId::Privileges, status, detail)
}

/// The bracketed mode of /sys/kernel/security/lockdown
/// (`none [integrity] confidentiality` -> `integrity`).
pub fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let len = text.get(start..)?.find(']')?;
    let mode = text.get(start..start + len)?.trim();
    (!mode.is_empty()).then(|| mode.to_owned())
}

pub(super) fn check_lockdown(mode: Option<&str>) -> Check {
    match mode {
        None => Check::new(
            CheckId::Lockdown,
            Status::Skipped,
            format!("{LOCKDOWN} not readable (securityfs not mounted or no lockdown LSM)"),
        ),
        Some("none") => Check::new(CheckId::Lockdown, Status::Ok, "none"),
        Some("integrity") => Check::new(
            CheckId::Lockdown,
            Status::Ok,
            "integrity (BPF may read kernel memory; it may not write user memory)",
        ),
        Some("confidentiality") => Check::new(
            CheckId::Lockdown,
            Status::Fail,
            "confidentiality: BPF programs may not read kernel memory, so the event programs cannot work",
        ),
        Some(other) => Check::new(
            CheckId::Lockdown,
            Status::Warn,
            format!("unknown mode {other:?}"),
        ),
    }
}

pub(super) fn kernel_release() -> Option<String> {
    // SAFETY: an all-zero utsname is valid; uname fills it and NUL-terminates
    // each field.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `(major, minor)` from a release such as `6.18.44-fc-v669`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn check_kernel(release: Option<&str>) -> Check {
    let Some(release) = release else {
        return Check::new(
            CheckId::Kernel,
            Status::Warn,
            "release unknown (uname failed)",
        );
    };
    match parse_release(release) {
        Some(v) if v < (5, 8) => Check::new(
            CheckId::Kernel,
            Status::Warn,
            format!("{release}: older than 5.8, which the BPF ring buffer needs"),
        ),
        Some(_) => Check::new(CheckId::Kernel, Status::Ok, release),
        None => Check::new(
            CheckId::Kernel,
            Status::Warn,
            format!("{release}: version not recognised"),
        ),
    }
}

pub(super) fn check_btf() -> Check {
    let path = Path::new(VMLINUX_BTF);
    if !path.exists() {
        return Check::new(
            CheckId::Btf,
            Status::Fail,
            format!("{VMLINUX_BTF} missing (kernel built without CONFIG_DEBUG_INFO_BTF)"),
        );
    }
    match KernelBtf::load(path).and_then(|b| b.task_offsets()) {
        Ok(_) => Check::new(
            CheckId::Btf,
            Status::Ok,
            format!("{VMLINUX_BTF} parsed; task_struct offsets resolve"),
        ),
        Err(e) => Check::new(CheckId::Btf, Status::Fail, error_chain(&e)),
    }
}

pub(super) fn check_procfs() -> Check {
    let stat = fs::read_to_string("/proc/self/stat");
    let pids = fs::read_dir("/proc").map(|d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .count()
    });
    match (stat, pids) {
        (Ok(_), Ok(n)) if n > 0 => Check::new(
            CheckId::Procfs,
            Status::Ok,
            format!("/proc readable ({n} processes visible)"),
        ),
        (Ok(_), Ok(_)) => Check::new(CheckId::Procfs, Status::Fail, "/proc lists no processes"),
        (Err(e), _) => Check::new(
            CheckId::Procfs,
            Status::Fail,
            format!("/proc/self/stat: {e}"),
        ),
        (_, Err(e)) => Check::new(CheckId::Procfs, Status::Fail, format!("/proc: {e}")),
    }
}

/// The daemon's PID namespace (`own`: its nsfs inode): `run` refuses to
/// start outside the host's initial one.
pub(super) fn check_pid_namespace(own: std::io::Result<u64>) -> Check {
    match crate::procs::pidns::daemon_refusal(own) {
        None => Check::new(
            CheckId::PidNamespace,
            Status::Ok,
            "the host's initial PID namespace",
        ),
        Some(why) => Check::new(CheckId::PidNamespace, Status::Fail, why),
    }
}

fn dir_has_entries(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
}
