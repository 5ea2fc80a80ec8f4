//! Trial loads: one empty program per attach type (the
//! `mcp-reaper-probes` object), then the daemon's real eBPF event source,
//! each loaded, attached, detached and unloaded in turn.
//!
//! Owns: the embedded probes object, which program tries which attach
//! type, which of them the eBPF tier requires, and the checks they become.
//! Must never: leave a program loaded or attached once its check is made,
//! mount tracefs anywhere but the private, per-thread mount the daemon
//! itself uses, pin anything, or run without the privilege check passing
//! first (`diagnose` asks `Privileges::can_load_bpf`).

use std::path::Path;

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, KProbe, Lsm, ProgramError, RawTracePoint, TracePoint},
};

use super::{
    checks::{NEEDS_PRIVILEGE, mounted_tracefs},
    detail::{KPROBE_PMU, TRACEFS_MISSING, error_chain},
    report::{Check, CheckId, Status},
};
use crate::source::{
    ebpf::{EbpfOptions, EbpfSource},
    tracefs,
};

/// One empty program per attach type, embedded at build time.
static PROBES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-reaper-probes"));

/// The checks this module makes, each skipped with why: without the
/// privileges to load programs, none is tried.
pub(super) fn skipped_without_privilege() -> Vec<Check> {
    [
        CheckId::Tracepoint,
        CheckId::RawTp,
        CheckId::TpBtf,
        CheckId::Fentry,
        CheckId::Lsm,
        CheckId::Kprobe,
        CheckId::EbpfSource,
    ]
    .into_iter()
    .map(|id| Check::new(id, Status::Skipped, NEEDS_PRIVILEGE))
    .collect()
}

/// Loads and attaches the daemon's own event source, as `run` would, and
/// drops it at once.
pub(super) fn check_ebpf_source() -> Check {
    match EbpfSource::load(&EbpfOptions::default()) {
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
    }
}

/// Loads the probes object and tries each attach type in turn; each
/// program is detached and unloaded before the next one is tried.
pub(super) fn try_attach_types() -> Vec<Check> {
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
    let kind = |e: ProgramError| format!("{name} is not the expected kind: {e}");
    let btf = || btf.map_err(Clone::clone);
    match id {
        CheckId::Tracepoint => try_tracepoint(prog.try_into().map_err(kind)?),
        CheckId::RawTp => {
            let p: &mut RawTracePoint = prog.try_into().map_err(kind)?;
            p.load().map_err(load_failed)?;
            let link = p.attach("sched_process_fork").map_err(attach_failed)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (raw_tp/sched_process_fork)".into())
        }
        CheckId::TpBtf => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(kind)?;
            p.load("sched_process_fork", btf()?).map_err(load_failed)?;
            let link = p.attach().map_err(attach_failed)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (tp_btf/sched_process_fork)".into())
        }
        CheckId::Fentry => {
            let p: &mut FEntry = prog.try_into().map_err(kind)?;
            p.load("unix_release", btf()?).map_err(load_failed)?;
            let link = p.attach().map_err(attach_failed)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (fentry/unix_release)".into())
        }
        CheckId::Lsm => {
            let p: &mut Lsm = prog.try_into().map_err(kind)?;
            p.load("file_open", btf()?).map_err(load_failed)?;
            let link = p.attach().map_err(attach_failed)?;
            let _ = p.detach(link);
            let _ = p.unload();
            Ok("loads and attaches (lsm/file_open)".into())
        }
        CheckId::Kprobe => try_kprobe(prog.try_into().map_err(kind)?),
        other => Err(format!("{} is not an attach type", other.label())),
    }
}

fn load_failed(e: ProgramError) -> String {
    format!("load: {}", error_chain(&e))
}

fn attach_failed(e: ProgramError) -> String {
    format!("attach: {}", error_chain(&e))
}

/// A classic tracepoint, attached as the daemon does it: through a tracefs
/// private to one thread when the machine has not mounted one.
fn try_tracepoint(p: &mut TracePoint) -> Result<String, String> {
    p.load().map_err(load_failed)?;
    let private = mounted_tracefs().is_none();
    let attached = tracefs::with_tracefs(|_| {
        let link = p
            .attach("sched", "sched_process_fork")
            .map_err(attach_failed)?;
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

/// A kprobe on `unix_release`; a failed attach says when the kernel has no
/// kprobe PMU at all.
fn try_kprobe(p: &mut KProbe) -> Result<String, String> {
    p.load().map_err(load_failed)?;
    let link = p.attach("unix_release", 0).map_err(|e| {
        let mut detail = attach_failed(e);
        if !Path::new(KPROBE_PMU).exists() {
            detail.push_str(" (no kprobe PMU: kernel built without CONFIG_KPROBES)");
        }
        detail
    })?;
    let _ = p.detach(link);
    let _ = p.unload();
    Ok("loads and attaches (kprobe/unix_release)".into())
}
