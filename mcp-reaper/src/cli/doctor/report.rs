//! The doctor's report: one line per check, the tier verdict, and the two
//! shapes an operator reads it in (an aligned table and JSON).
//!
//! Owns: the report's types and their stable JSON names (`Status`,
//! `CheckId`, `Check`, `Tier`, `Privileges`, `Report`), the exit code per
//! tier (1 when what `run` is given fails), and the human rendering.
//! Must never: probe the system or reach the tier itself: every value here
//! was found by `checks` or `probes` and judged by `verdict`. Renaming a
//! JSON field or value breaks the scripts that read `doctor --json`.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

use super::detail::one_line;

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
    /// The daemon's PID namespace: it must be the host's initial one.
    PidNamespace,
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
    /// The configuration `run` would read.
    Config,
    /// The metrics endpoint's address.
    Metrics,
    /// Where the control socket goes.
    ControlSocket,
    /// A network namespace holding MCP hosts: whether ownership can be
    /// judged there (one check per namespace).
    Netns,
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
            Self::PidNamespace => "pid_namespace",
            Self::Tracepoint => "tracepoint",
            Self::RawTp => "raw_tp",
            Self::TpBtf => "tp_btf",
            Self::Fentry => "fentry",
            Self::Lsm => "lsm",
            Self::Kprobe => "kprobe",
            Self::EbpfSource => "ebpf_source",
            Self::PidfdGetfd => "pidfd_getfd",
            Self::Config => "config",
            Self::Metrics => "metrics",
            Self::ControlSocket => "control_socket",
            Self::Netns => "netns",
        }
    }

    /// Whether the check is about what `run` is given (its configuration,
    /// address and socket) rather than what the kernel allows.
    pub fn is_setup(self) -> bool {
        matches!(self, Self::Config | Self::Metrics | Self::ControlSocket)
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
    /// Each capability in [`CAPABILITIES`](crate::procs::caps::CAPABILITIES) and
    /// whether it is effective.
    pub capabilities: BTreeMap<String, bool>,
}

impl Privileges {
    pub(super) fn has(&self, cap: &str) -> bool {
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

impl Report {
    /// The check with `id`, if it ran.
    pub fn check(&self, id: CheckId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The first failed check of what `run` is given: `run` would stop at
    /// start, whatever the tier.
    pub fn setup_failure(&self) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.id.is_setup() && c.status == Status::Fail)
    }

    /// 0: eBPF tier; 3: pidfd or poll tier only (degraded); 1: cannot run
    /// (no tier, or a failed check of its configuration, address or socket).
    pub fn exit_code(&self) -> i32 {
        if self.setup_failure().is_some() {
            return 1;
        }
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
