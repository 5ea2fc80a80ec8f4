//! `mcp-reaper doctor`: what this kernel and these privileges allow, and
//! which detection tier the daemon would run.
//!
//! Owns: the checks (kernel release, BTF and the task offsets, tracefs,
//! lockdown, capabilities, /proc), trial loads of one empty program per
//! attach type (the `mcp-reaper-probes` object) and of the real eBPF event
//! source, the tier verdict with its reason, and the report's human and JSON
//! shapes.
//! Must never: change the system (mount, raise limits, pin, write to sysfs
//! or tracefs), leave a program loaded or attached after `diagnose` returns,
//! send a signal, or panic on odd /proc or sysfs contents: every surprise
//! becomes a check with a status and a one-line detail.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, KProbe, Lsm, RawTracePoint, TracePoint},
};
use serde::{Deserialize, Serialize};

use crate::{
    kernel_btf::{KernelBtf, VMLINUX_BTF},
    source::{
        ebpf::{EbpfOptions, EbpfSource},
        tracefs,
    },
};

/// One empty program per attach type, embedded at build time.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-reaper-probes"));

/// Where tracefs may be mounted, in the order the loader looks.
const TRACEFS_EVENTS: [&str; 2] = [
    "/sys/kernel/tracing/events",
    "/sys/kernel/debug/tracing/events",
];
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";
const NEEDS_PRIVILEGE: &str = "needs root or CAP_BPF+CAP_PERFMON";
/// aya's error when no tracefs is mounted.
const TRACEFS_MISSING: &str = "tracefs not found";
/// The PMU kprobes attach through; absent when the kernel has no kprobes.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
/// Details longer than this are cut (verifier logs can be long).
const MAX_DETAIL: usize = 600;

/// Capabilities the daemon uses, with their bit numbers in CapEff.
pub const CAPABILITIES: [(&str, u32); 7] = [
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_KILL", 5),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_NET_ADMIN", 12),
];

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skipped => "skipped",
        }
    }
}

/// What a check is about; stable names for the JSON output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    Kernel,
    Btf,
    Tracefs,
    Lockdown,
    Privileges,
    Procfs,
    /// Classic tracepoint (`sched/sched_process_fork`).
    Tracepoint,
    /// Raw tracepoint (`raw_tp/sched_process_fork`), the event programs' kind.
    RawTp,
    /// BTF tracepoint (`tp_btf/sched_process_fork`).
    TpBtf,
    /// fentry on `unix_release`.
    Fentry,
    /// BPF LSM on `file_open`.
    Lsm,
    /// kprobe on `unix_release`.
    Kprobe,
    /// The daemon's own eBPF event source.
    EbpfSource,
    /// `pidfd_open` + `pidfd_getfd` with ptrace access (the pidfd tier).
    PidfdGetfd,
}

impl CheckId {
    pub fn label(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Btf => "btf",
            Self::Tracefs => "tracefs",
            Self::Lockdown => "lockdown",
            Self::Privileges => "privileges",
            Self::Procfs => "procfs",
            Self::Tracepoint => "tracepoint",
            Self::RawTp => "raw_tp",
            Self::TpBtf => "tp_btf",
            Self::Fentry => "fentry",
            Self::Lsm => "lsm",
            Self::Kprobe => "kprobe",
            Self::EbpfSource => "ebpf_source",
            Self::PidfdGetfd => "pidfd_getfd",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub id: CheckId,
    pub status: Status,
    /// One line: the value found, or the full error chain.
    pub detail: String,
}

impl Check {
    pub fn new(id: CheckId, status: Status, detail: impl Into<String>) -> Self {
        Self {
            id,
            status,
            detail: one_line(&detail.into()),
        }
    }
}

/// The detection tier the daemon would run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Kernel programs report process events.
    Ebpf,
    /// /proc scans plus wakes on tree roots' exits and stdin hangups
    /// (degraded: forks and execs between scans are missed).
    Pidfd,
    /// Periodic /proc scans (degraded: events between scans are missed).
    Poll,
    /// The daemon cannot run.
    None,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Pidfd => "pidfd",
            Self::Poll => "poll",
            Self::None => "none",
        }
    }
}

/// Who the process is, as far as the kernel's checks go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges {
    pub euid: u32,
    /// CapEff from /proc/self/status as printed there (hex), if readable.
    pub cap_eff: Option<String>,
    /// Each capability in [`CAPABILITIES`] and whether it is effective.
    pub capabilities: BTreeMap<String, bool>,
}

impl Privileges {
    fn has(&self, cap: &str) -> bool {
        self.capabilities.get(cap).copied().unwrap_or(false)
    }

    /// Whether loading tracing programs can be attempted at all.
    pub fn can_load_bpf(&self) -> bool {
        if self.cap_eff.is_none() {
            return self.euid == 0;
        }
        (self.has("CAP_BPF") && self.has("CAP_PERFMON")) || self.has("CAP_SYS_ADMIN")
    }
}

/// Everything `doctor` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub kernel_release: String,
    /// The tracefs events directory in use, if mounted.
    pub tracefs: Option<String>,
    /// The active lockdown mode (`none`, `integrity`, `confidentiality`), if readable.
    pub lockdown: Option<String>,
    pub privileges: Privileges,
    pub checks: Vec<Check>,
    pub tier: Tier,
    pub reason: String,
}

/// Runs every check. Synchronous; loads and unloads programs when privileged.
pub fn diagnose() -> Report {
    let mut checks = Vec::new();

    let kernel_release = kernel_release();
    checks.push(check_kernel(kernel_release.as_deref()));
    checks.push(check_btf());

    let tracefs = TRACEFS_EVENTS
        .iter()
        .find(|p| dir_has_entries(Path::new(p)))
        .map(|p| (*p).to_owned());
    checks.push(match &tracefs {
        Some(p) => Check::new(CheckId::Tracefs, Status::Ok, format!("mounted ({p})")),
        // Not an operator fix: the tracepoint check below says whether a
        // private mount works.
        None => Check::new(
            CheckId::Tracefs,
            Status::Ok,
            "not mounted; classic tracepoints go through a tracefs the daemon mounts privately",
        ),
    });

    let lockdown = fs::read_to_string(LOCKDOWN)
        .ok()
        .and_then(|s| parse_lockdown(&s));
    checks.push(check_lockdown(lockdown.as_deref()));

    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let privileges = privileges(rustix::process::geteuid().as_raw(), parse_cap_eff(&status));
    checks.push(check_privileges(&privileges));
    checks.push(check_procfs());
    checks.push(match crate::stdin_watch::probe() {
        Ok(()) => Check::new(
            CheckId::PidfdGetfd,
            Status::Ok,
            "pidfd_open and pidfd_getfd work, CAP_SYS_PTRACE effective",
        ),
        Err(e) => Check::new(CheckId::PidfdGetfd, Status::Warn, e),
    });

    if privileges.can_load_bpf() {
        checks.extend(try_attach_types());
        checks.push(match EbpfSource::load(&EbpfOptions::default()) {
            Ok(source) => {
                let close = match (source.close_hook(), source.close_fallback_reason()) {
                    (Some(hook), None) => format!("close tier on {}", hook.label()),
                    (Some(hook), Some(why)) => {
                        format!("close tier on {} ({why})", hook.label())
                    }
                    (None, _) => format!(
                        "close tier off ({})",
                        source.close_tier_reason().unwrap_or("unknown")
                    ),
                };
                drop(source);
                Check::new(
                    CheckId::EbpfSource,
                    Status::Ok,
                    format!(
                        "event programs load and attach (raw_tp sched_process_fork/exec/exit); {close}"
                    ),
                )
            }
            Err(e) => Check::new(CheckId::EbpfSource, Status::Fail, format!("{e:#}")),
        });
    } else {
        for id in [
            CheckId::Tracepoint,
            CheckId::RawTp,
            CheckId::TpBtf,
            CheckId::Fentry,
            CheckId::Lsm,
            CheckId::Kprobe,
            CheckId::EbpfSource,
        ] {
            checks.push(Check::new(id, Status::Skipped, NEEDS_PRIVILEGE));
        }
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

impl Report {
    /// The check with `id`, if it ran.
    pub fn check(&self, id: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// 0: eBPF tier; 3: pidfd or poll tier only (degraded); 1: cannot run.
    pub fn exit_code(&self) -> i32 {
        match self.tier {
            Tier::Ebpf => 0,
            Tier::Pidfd | Tier::Poll => 3,
            Tier::None => 1,
        }
    }

    /// An aligned table of the checks and a final verdict line.
    pub fn render_human(&self) -> String {
        let name_w = self
            .checks
            .iter()
            .map(|c| c.id.label().len())
            .chain(["CHECK".len()])
            .max()
            .unwrap_or(5);
        let status_w = "skipped".len();
        let mut out = String::new();
        let _ = writeln!(out, "mcp-reaper doctor (kernel {})", self.kernel_release);
        let _ = writeln!(out, "{:<name_w$}  {:<status_w$}  DETAIL", "CHECK", "STATUS");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{:<name_w$}  {:<status_w$}  {}",
                c.id.label(),
                c.status.as_str(),
                c.detail
            );
        }
        let _ = writeln!(
            out,
            "verdict: tier {} (exit {}): {}",
            self.tier.as_str(),
            self.exit_code(),
            self.reason
        );
        out
    }
}

/// The tier and why, from the checks alone.
pub fn conclude(checks: &[Check]) -> (Tier, String) {
    let find = |id| checks.iter().find(|c| c.id == id);
    let ok = |id| find(id).is_some_and(|c| c.status == Status::Ok);
    let source = find(CheckId::EbpfSource);

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
fn short_failure(c: &Check) -> String {
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

/// The symbolic name of the last `(os error N)` in `detail`, for common N.
pub fn errno_name(detail: &str) -> Option<&'static str> {
    const MARK: &str = "(os error ";
    let start = detail.rfind(MARK)? + MARK.len();
    let rest = detail.get(start..)?;
    let end = rest.find(')')?;
    let code: i32 = rest.get(..end)?.parse().ok()?;
    Some(match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESRCH => "ESRCH",
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// The CapEff mask from the text of /proc/PID/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    let hex = line.get("CapEff:".len()..)?.trim();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Which of [`CAPABILITIES`] `mask` holds.
pub fn decode_caps(mask: u64) -> BTreeMap<String, bool> {
    CAPABILITIES
        .iter()
        .map(|&(name, bit)| (name.to_owned(), bit < 64 && mask & (1u64 << bit) != 0))
        .collect()
}

fn privileges(euid: u32, cap_eff: Option<u64>) -> Privileges {
    Privileges {
        euid,
        cap_eff: cap_eff.map(|m| format!("{m:016x}")),
        capabilities: cap_eff.map(decode_caps).unwrap_or_default(),
    }
}

fn check_privileges(p: &Privileges) -> Check {
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

fn check_lockdown(mode: Option<&str>) -> Check {
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

fn kernel_release() -> Option<String> {
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

fn check_kernel(release: Option<&str>) -> Check {
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

fn check_btf() -> Check {
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

fn check_procfs() -> Check {
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

fn dir_has_entries(p: &Path) -> bool {
    fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
}

/// Loads the probes object and tries each attach type in turn; each
/// program is detached and unloaded before the next one is tried.
fn try_attach_types() -> Vec<Check> {
    // (check, program name in the probes object, required for the eBPF tier)
    const PROBE_PROGRAMS: [(CheckId, &str, bool); 6] = [
        (CheckId::Tracepoint, "doctor_tp", true),
        (CheckId::RawTp, "doctor_raw_tp", true),
        (CheckId::TpBtf, "doctor_tp_btf", false),
        (CheckId::Fentry, "doctor_fentry", false),
        (CheckId::Lsm, "doctor_lsm", false),
        (CheckId::Kprobe, "doctor_kprobe", false),
    ];
    let mut ebpf = match Ebpf::load(PROBES) {
        Ok(e) => e,
        Err(e) => {
            let detail = format!("loading the probe object: {}", error_chain(&e));
            return PROBE_PROGRAMS
                .iter()
                .map(|&(id, _, _)| Check::new(id, Status::Fail, detail.clone()))
                .collect();
        }
    };
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {}", error_chain(&e)));
    PROBE_PROGRAMS
        .iter()
        .map(|&(id, name, required)| {
            let failed = if required { Status::Fail } else { Status::Warn };
            match try_one(&mut ebpf, id, name, btf.as_ref()) {
                Ok(detail) => Check::new(id, Status::Ok, detail),
                // Loads, and only the mount is missing: an operator fix.
                Err(detail) if detail.contains(TRACEFS_MISSING) => Check::new(
                    id,
                    Status::Warn,
                    format!("loads; {detail} (mount -t tracefs tracefs /sys/kernel/tracing)"),
                ),
                Err(detail) => Check::new(id, failed, detail),
            }
        })
        .collect()
}

fn try_one(
    ebpf: &mut Ebpf,
    id: CheckId,
    name: &str,
    btf: Result<&Btf, &String>,
) -> Result<String, String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the probe object"))?;
    let kind = |e: aya::programs::ProgramError| format!("{name} is not the expected kind: {e}");
    let load = |e: aya::programs::ProgramError| format!("load: {}", error_chain(&e));
    let attach = |e: aya::programs::ProgramError| format!("attach: {}", error_chain(&e));
    let btf = || btf.map_err(Clone::clone);
    match id {
        CheckId::Tracepoint => {
            let p: &mut TracePoint = prog.try_into().map_err(kind)?;
            p.load().map_err(load)?;
            // As the daemon does it: through a tracefs private to one
            // thread when the machine has not mounted one.
            let private = !TRACEFS_EVENTS.iter().any(|p| dir_has_entries(Path::new(p)));
            let attached = tracefs::with_tracefs(|_| {
                let link = p.attach("sched", "sched_process_fork").map_err(attach)?;
                let _ = p.detach(link);
                Ok::<_, String>(())
            });
            let _ = p.unload();
            attached??;
            Ok(format!(
                "loads and attaches (sched/sched_process_fork){}",
                if private {
                    ", through a tracefs mounted privately (the machine's mounts are unchanged)"
                } else {
                    ""
                }
            ))
        }
        CheckId::RawTp => {
            let p: &mut RawTracePoint = prog.try_into().map_err(kind)?;
            p.load().map_err(load)?;
            let link = p.attach("sched_process_fork").map_err(attach)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (raw_tp/sched_process_fork)".into())
        }
        CheckId::TpBtf => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(kind)?;
            p.load("sched_process_fork", btf()?).map_err(load)?;
            let link = p.attach().map_err(attach)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (tp_btf/sched_process_fork)".into())
        }
        CheckId::Fentry => {
            let p: &mut FEntry = prog.try_into().map_err(kind)?;
            p.load("unix_release", btf()?).map_err(load)?;
            let link = p.attach().map_err(attach)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (fentry/unix_release)".into())
        }
        CheckId::Lsm => {
            let p: &mut Lsm = prog.try_into().map_err(kind)?;
            p.load("file_open", btf()?).map_err(load)?;
            let link = p.attach().map_err(attach)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (lsm/file_open)".into())
        }
        CheckId::Kprobe => {
            let p: &mut KProbe = prog.try_into().map_err(kind)?;
            p.load().map_err(load)?;
            let link = p.attach("unix_release", 0).map_err(|e| {
                let mut detail = attach(e);
                if !Path::new(KPROBE_PMU).exists() {
                    detail.push_str(" (no kprobe PMU: kernel built without CONFIG_KPROBES)");
                }
                detail
            })?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (kprobe/unix_release)".into())
        }
        other => Err(format!("{} is not an attach type", other.label())),
    }
}

/// `e` and its sources joined with ": ", skipping a source whose text the
/// chain already shows (aya repeats the io error in its own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Collapses whitespace (verifier logs are multi-line) and caps the length.
fn one_line(s: &str) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // aya appends the verifier log even when the kernel left it empty.
    if let Some(stripped) = out.strip_suffix(" Verifier output:") {
        out = stripped.trim_end_matches('.').to_owned();
    }
    if out.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" …");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn c(id: CheckId, status: Status, detail: &str) -> Check {
        Check::new(id, status, detail)
    }

    #[test]
    fn cap_eff_decodes_root_without_sys_resource() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                      CapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
        let mask = parse_cap_eff(status).unwrap();
        assert_eq!(mask, 0x1ff_feff_ffff);
        assert_eq!(mask & (1 << 24), 0, "CAP_SYS_RESOURCE is absent");
        let caps = decode_caps(mask);
        assert_eq!(caps.len(), CAPABILITIES.len());
        assert!(caps.values().all(|&v| v), "{caps:?}");
    }

    #[test]
    fn cap_eff_decodes_partial_and_empty_masks() {
        let bpf_perfmon = (1u64 << 39) | (1 << 38);
        let caps = decode_caps(bpf_perfmon);
        assert!(caps["CAP_BPF"] && caps["CAP_PERFMON"]);
        assert!(!caps["CAP_SYS_ADMIN"] && !caps["CAP_KILL"]);
        let p = privileges(1000, Some(bpf_perfmon));
        assert!(p.can_load_bpf());
        assert!(!privileges(1000, Some(0)).can_load_bpf());
        assert!(privileges(1000, Some(1 << 21)).can_load_bpf());
        // No CapEff line: fall back to euid.
        assert!(privileges(0, None).can_load_bpf());
        assert!(!privileges(1000, None).can_load_bpf());
        assert_eq!(
            check_privileges(&privileges(1000, Some(0))).status,
            Status::Warn
        );
        assert_eq!(
            check_privileges(&privileges(0, Some(u64::MAX))).status,
            Status::Ok
        );
    }

    #[test]
    fn cap_eff_rejects_odd_contents() {
        assert_eq!(parse_cap_eff(""), None);
        assert_eq!(parse_cap_eff("CapEff:\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzzzz\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\t00000000000000000001\n"), None);
        assert_eq!(parse_cap_eff("CapPrm:\tffff\n"), None);
        assert_eq!(parse_cap_eff("CapEff: ff"), Some(0xff));
    }

    #[test]
    fn lockdown_and_release_parse() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality").as_deref(),
            Some("none")
        );
        assert_eq!(parse_lockdown("garbage"), None);
        assert_eq!(parse_lockdown("[]"), None);
        assert_eq!(parse_lockdown("]["), None);
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("weird"), None);
        assert_eq!(check_kernel(Some("5.4.0")).status, Status::Warn);
        assert_eq!(check_kernel(Some("6.18.44")).status, Status::Ok);
    }

    #[test]
    fn errno_names_and_error_chains() {
        assert_eq!(
            errno_name(
                "load: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output: "
            ),
            Some("EPERM")
        );
        assert_eq!(errno_name("attach: (os error 524)"), Some("ENOTSUPP"));
        assert_eq!(errno_name("(os error x)"), None);
        assert_eq!(errno_name("no errno"), None);
        assert_eq!(errno_name("(os error 1"), None);

        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = anyhow::Error::new(io).context("loading tp_btf/x");
        let chain = error_chain(e.as_ref());
        assert!(chain.starts_with("loading tp_btf/x: "), "{chain}");
        assert_eq!(errno_name(&chain), Some("EPERM"));
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert_eq!(
            one_line("load: returned Operation not permitted (os error 1). Verifier output: \n"),
            "load: returned Operation not permitted (os error 1)"
        );
        let tp = c(
            CheckId::Tracepoint,
            Status::Warn,
            "loads; attach: tracefs not found",
        );
        assert_eq!(short_failure(&tp), "tracefs not mounted");
        let kp = c(
            CheckId::Kprobe,
            Status::Warn,
            "attach: `/sys/bus/event_source/devices/kprobe/type`: No such file (os error 2)",
        );
        assert_eq!(short_failure(&kp), "no kprobe support in this kernel");
        assert!(one_line(&"é".repeat(1000)).len() <= MAX_DETAIL + " …".len());
    }

    fn attach_checks(fentry: Status) -> Vec<Check> {
        vec![
            c(CheckId::Procfs, Status::Ok, "/proc readable"),
            c(CheckId::Tracepoint, Status::Ok, "loads and attaches"),
            c(CheckId::RawTp, Status::Ok, "loads and attaches"),
            c(CheckId::TpBtf, Status::Ok, "loads and attaches"),
            c(
                CheckId::Fentry,
                fentry,
                "load: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)",
            ),
            c(CheckId::Lsm, Status::Warn, "load: (os error 1)"),
            c(
                CheckId::Kprobe,
                Status::Warn,
                "attach: No such file or directory (os error 2)",
            ),
        ]
    }

    #[test]
    fn tier_is_ebpf_when_the_source_loads() {
        let mut checks = attach_checks(Status::Warn);
        checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
        let (tier, reason) = conclude(&checks);
        assert_eq!(tier, Tier::Ebpf);
        assert!(reason.contains("fentry refused (EPERM)"), "{reason}");
        assert!(reason.contains("kprobe refused (ENOENT)"), "{reason}");
        assert!(
            reason.ends_with("UNIX-socket release hooks are off"),
            "{reason}"
        );

        let mut checks = attach_checks(Status::Ok);
        checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
        let (tier, reason) = conclude(&checks);
        assert_eq!(tier, Tier::Ebpf);
        assert!(reason.contains("fentry attaches"), "{reason}");
        assert!(reason.ends_with("hooks are available"), "{reason}");
    }

    #[test]
    fn tier_is_pidfd_without_ebpf_when_pidfd_getfd_works() {
        let checks = vec![
            c(CheckId::Procfs, Status::Ok, "/proc readable"),
            c(CheckId::PidfdGetfd, Status::Ok, "works"),
            c(CheckId::EbpfSource, Status::Fail, "EPERM"),
        ];
        let (tier, reason) = conclude(&checks);
        assert_eq!(tier, Tier::Pidfd);
        assert!(reason.contains("pidfd_getfd works"), "{reason}");
        let warn = vec![
            c(CheckId::Procfs, Status::Ok, "/proc readable"),
            c(CheckId::PidfdGetfd, Status::Warn, "CAP_SYS_PTRACE missing"),
        ];
        assert_eq!(conclude(&warn).0, Tier::Poll);
        let mut with_ebpf = checks;
        with_ebpf.push(c(CheckId::EbpfSource, Status::Ok, "loads"));
        with_ebpf.retain(|x| x.id != CheckId::EbpfSource || x.status == Status::Ok);
        assert_eq!(conclude(&with_ebpf).0, Tier::Ebpf);
        assert_eq!(sample_report(Tier::Pidfd).exit_code(), 3);
    }

    #[test]
    fn tier_is_poll_when_only_proc_works() {
        let mut checks = attach_checks(Status::Warn);
        checks.push(c(
            CheckId::EbpfSource,
            Status::Fail,
            "loading tp_btf/sched_process_exit: Operation not permitted (os error 1)",
        ));
        let (tier, reason) = conclude(&checks);
        assert_eq!(tier, Tier::Poll);
        assert!(
            reason.contains("eBPF event source failed (EPERM)"),
            "{reason}"
        );

        let checks = vec![
            c(CheckId::Procfs, Status::Ok, "/proc readable"),
            c(CheckId::EbpfSource, Status::Skipped, NEEDS_PRIVILEGE),
        ];
        let (tier, reason) = conclude(&checks);
        assert_eq!(tier, Tier::Poll);
        assert!(reason.contains(NEEDS_PRIVILEGE), "{reason}");
    }

    #[test]
    fn tier_is_none_without_proc() {
        let checks = vec![
            c(CheckId::Procfs, Status::Fail, "/proc/self/stat: denied"),
            c(CheckId::EbpfSource, Status::Fail, "boom"),
        ];
        let (tier, reason) = conclude(&checks);
        assert_eq!(tier, Tier::None);
        assert!(reason.contains("cannot run"), "{reason}");
        assert_eq!(conclude(&[]).0, Tier::None);
    }

    fn sample_report(tier: Tier) -> Report {
        let mut checks = attach_checks(Status::Warn);
        checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
        Report {
            kernel_release: "6.18.44".into(),
            tracefs: Some(TRACEFS_EVENTS[0].into()),
            lockdown: Some("integrity".into()),
            privileges: privileges(0, Some(0x1ff_feff_ffff)),
            checks,
            tier,
            reason: "because".into(),
        }
    }

    #[test]
    fn exit_codes_follow_the_tier() {
        assert_eq!(sample_report(Tier::Ebpf).exit_code(), 0);
        assert_eq!(sample_report(Tier::Poll).exit_code(), 3);
        assert_eq!(sample_report(Tier::None).exit_code(), 1);
    }

    #[test]
    fn json_shape_round_trips() {
        let report = sample_report(Tier::Ebpf);
        let json = serde_json::to_string_pretty(&report).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["tier"], "ebpf");
        assert_eq!(v["reason"], "because");
        assert_eq!(v["kernel_release"], "6.18.44");
        assert_eq!(v["lockdown"], "integrity");
        assert_eq!(v["privileges"]["euid"], 0);
        assert_eq!(v["privileges"]["cap_eff"], "000001fffeffffff");
        assert_eq!(v["privileges"]["capabilities"]["CAP_BPF"], true);
        assert_eq!(v["checks"][0]["id"], "procfs");
        assert_eq!(v["checks"][0]["status"], "ok");
        assert_eq!(v["checks"][2]["id"], "raw_tp");
        assert_eq!(v["checks"][4]["id"], "fentry");
        assert_eq!(v["checks"][4]["status"], "warn");
        assert_eq!(v["checks"][7]["id"], "ebpf_source");
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn human_output_is_aligned_with_a_verdict() {
        let text = sample_report(Tier::Poll).render_human();
        let lines: Vec<&str> = text.lines().collect();
        let col = lines[1].find("STATUS").unwrap();
        for line in &lines[2..lines.len() - 1] {
            let status = line.get(col..).unwrap();
            assert!(
                ["ok ", "warn ", "fail ", "skipped "]
                    .iter()
                    .any(|s| status.starts_with(s)),
                "{line:?}"
            );
        }
        assert_eq!(
            lines.last().copied(),
            Some("verdict: tier poll (exit 3): because")
        );
    }

    /// Needs root (run through the privileged test runner). What this
    /// project's reference kernel allows: tracepoints, raw_tp and tp_btf, not
    /// fentry, LSM or kprobes.
    #[test]
    fn diagnose_on_this_kernel() {
        if !crate::test_has_root("BPF program loads and attaches") {
            return;
        }
        let report = diagnose();
        println!("{}", report.render_human());
        let status = |id| report.check(id).map(|c| c.status);
        // Classic tracepoints attach whether or not the machine mounts
        // tracefs: a private mount serves when it does not.
        let tp = report.check(CheckId::Tracepoint).expect("tracepoint check");
        assert_eq!(tp.status, Status::Ok, "{report:#?}");
        assert_eq!(
            tp.detail.contains("privately"),
            report.tracefs.is_none(),
            "{report:#?}"
        );
        // The close tier enters through the per-syscall tracepoints.
        let source = report.check(CheckId::EbpfSource).expect("source check");
        assert!(
            source.detail.contains("close tier on syscalls:sys_enter_"),
            "{report:#?}"
        );
        assert!(!report.reason.contains("classic tracepoints unavailable"));
        assert_eq!(status(CheckId::RawTp), Some(Status::Ok), "{report:#?}");
        assert_eq!(status(CheckId::TpBtf), Some(Status::Ok), "{report:#?}");
        assert_ne!(status(CheckId::Fentry), Some(Status::Ok), "{report:#?}");
        assert_ne!(status(CheckId::Lsm), Some(Status::Ok), "{report:#?}");
        assert_ne!(status(CheckId::Kprobe), Some(Status::Ok), "{report:#?}");
        assert_eq!(status(CheckId::EbpfSource), Some(Status::Ok), "{report:#?}");
        assert_eq!(report.tier, Tier::Ebpf, "{}", report.reason);
        assert_eq!(report.exit_code(), 0);
    }
}
