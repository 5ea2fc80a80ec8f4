//! Loading and attaching the kernel programs.
//!
//! Owns: the steps of `EbpfSource::load`: offsets from the running
//! kernel's BTF, loading with those offsets as globals, attaching the
//! process tracepoints, the optional close tier and release hook (each
//! saying why when it is off), and taking the maps.
//! Must never: guess an offset, or let an optional program's failure stop
//! the process events.

use anyhow::{Context as _, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FEntry, KProbe, RawTracePoint, TracePoint},
};
use mcp_reaper_common::{CloseSyscalls, ExecOffsets, FileOffsets, SyscallTpArgs, TaskOffsets};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{debug, info, warn};

use super::super::tracefs;
use super::{
    CLOSE_TRACEPOINT, CloseHook, CloseTier, EbpfOptions, EbpfSource, PROGRAMS, RELEASE_FENTRY,
    RELEASE_FUNCTION, RELEASE_KPROBE, TRACEPOINTS, native_close_syscalls,
};
use crate::source::kernel_btf::KernelBtf;

/// Offsets from the kernel's BTF: the process programs' (required), the
/// exec program's argv (optional) and the close tier's (optional, with why
/// not).
struct Offsets {
    task: TaskOffsets,
    exec: ExecOffsets,
    close: Result<FileOffsets, String>,
}

impl EbpfSource {
    /// Resolves offsets, loads and attaches every program. Any failure is an
    /// error naming the step, so `auto` can fall back and `doctor` can say why.
    pub fn load(opts: &EbpfOptions) -> anyhow::Result<Self> {
        if PROGRAMS.is_empty() {
            return Err(anyhow!(
                "this binary was built without its kernel programs (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
            ));
        }
        let offsets = resolve_offsets(opts)?;
        // The per-syscall tracepoints' argument offsets, from tracefs.
        let tp_args = match (&offsets.close, opts.close_hook) {
            (Err(reason), _) => Err(reason.clone()),
            (Ok(_), CloseHook::SysEnter) => Err("raw_tp/sys_enter chosen by option".to_owned()),
            (Ok(_), CloseHook::Auto) => {
                tracefs::with_tracefs(tracefs::syscall_tp_args).and_then(|r| r)
            }
        };
        release_freed_memory();
        let mut ebpf = load_programs(opts, &offsets, tp_args.as_ref().ok())?;
        for tp in TRACEPOINTS {
            attach_raw(&mut ebpf, tp)?;
        }
        let (close, close_fallback) = attach_close_tier(&mut ebpf, opts, &offsets, &tp_args);
        let release = attach_release_hook(&mut ebpf, opts, &offsets, close.is_ok());
        release_freed_memory();
        let mut map = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("{name} map missing"))
        };
        let ring = RingBuf::try_from(map("EVENTS")?)?;
        let watch = HashMap::try_from(map("WATCH")?)?;
        let stdio = HashMap::try_from(map("STDIO_INODES")?)?;
        let counters = PerCpuArray::try_from(map("COUNTERS")?)?;
        Ok(Self {
            _programs: ebpf,
            ring: Some(ring),
            watch,
            stdio,
            stdio_known: std::collections::HashSet::new(),
            counters: Some(counters),
            opts: opts.clone(),
            close,
            close_fallback,
            release,
        })
    }
}

/// Reads the offsets the programs need from the kernel's BTF. Read in a
/// scope of its own (mapped where the kernel allows it): aya parses the
/// kernel's BTF again when loading, and holding both would raise the
/// daemon's peak RSS.
fn resolve_offsets(opts: &EbpfOptions) -> anyhow::Result<Offsets> {
    let kbtf = KernelBtf::load(&opts.btf_path)?;
    if kbtf.tracepoint_args("sched_process_exit").unwrap_or(0) < 2 {
        return Err(anyhow!(
            "this kernel's sched_process_exit tracepoint has no group_dead argument (needs Linux 6.x)"
        ));
    }
    let close = if opts.close_tier == CloseTier::Off {
        Err("left out (--close-tier)".to_string())
    } else if kbtf.tracepoint_args(CLOSE_TRACEPOINT) != Some(2) {
        Err("this kernel has no sys_enter(regs, id) tracepoint".to_string())
    } else {
        kbtf.file_offsets()
            .map_err(|e| format!("close-tier offsets: {e}"))
    };
    // Without them execs are still reported, only without argv: a root
    // that exits before /proc is read is then not classified.
    let exec = kbtf.exec_offsets().unwrap_or_else(|e| {
        warn!("exec records will carry no command line: {e}");
        ExecOffsets::default()
    });
    Ok(Offsets {
        task: kbtf.task_offsets()?,
        exec,
        close,
    })
}

/// Loads the programs with their globals and map sizes (nothing is
/// attached yet).
fn load_programs(
    opts: &EbpfOptions,
    offsets: &Offsets,
    tp_args: Option<&SyscallTpArgs>,
) -> anyhow::Result<Ebpf> {
    let (file_offsets, close_syscalls) = match &offsets.close {
        Ok(o) => (*o, native_close_syscalls()),
        Err(_) => (FileOffsets::default(), CloseSyscalls::NONE),
    };
    // Raising RLIMIT_MEMLOCK fails without CAP_SYS_RESOURCE; kernels
    // since 5.11 account BPF memory by memcg and do not need it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!("could not raise RLIMIT_MEMLOCK (fine on memcg-accounted kernels)");
    }
    let log_level: u8 = if opts.kernel_log { 5 } else { 0 };
    // The programs carry no CO-RE relocations (offsets come from the
    // globals above) and attach as raw tracepoints, so the loader needs
    // no kernel BTF. Its constructor parses one anyway (some 20 MB):
    // dropped at once and the heap trimmed. Only the optional fentry
    // release hook parses it again.
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    release_freed_memory();
    let mut ebpf = loader
        .override_global("OFFSETS", &offsets.task, true)
        .override_global("EXEC_OFFSETS", &offsets.exec, true)
        .override_global("FILE_OFFSETS", &file_offsets, true)
        .override_global("CLOSE_SYSCALLS", &close_syscalls, true)
        .override_global(
            "SYSCALL_TP_ARGS",
            tp_args.unwrap_or(&SyscallTpArgs::NONE),
            true,
        )
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .map_max_entries("EVENTS", opts.ring_bytes)
        .map_max_entries("WATCH", opts.watch_capacity)
        .load(PROGRAMS)
        .context("loading the kernel programs")?;
    drop(loader);
    release_freed_memory();
    if opts.kernel_log {
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_kernel_logger(logger),
            Err(e) => warn!("kernel log unavailable: {e}"),
        }
    }
    Ok(ebpf)
}

/// Attaches the close tier where it can run (optional: process events run
/// without it): the per-syscall tracepoints, else `raw_tp/sys_enter`.
/// Returns where it entered (or why it is off) and why the per-syscall
/// tracepoints were not used, and says so in the log.
fn attach_close_tier(
    ebpf: &mut Ebpf,
    opts: &EbpfOptions,
    offsets: &Offsets,
    tp_args: &Result<SyscallTpArgs, String>,
) -> (Result<CloseHook, String>, Option<String>) {
    let mut close_fallback = None;
    let close = match (&offsets.close, tp_args) {
        (Err(reason), _) => Err(reason.clone()),
        (Ok(_), Ok(_)) => match attach_close_tracepoints(ebpf) {
            Ok(()) => Ok(CloseHook::Auto),
            Err(e) => {
                close_fallback = Some(e);
                attach_close(ebpf)
            }
        },
        (Ok(_), Err(why)) => {
            close_fallback = Some(why.clone());
            attach_close(ebpf)
        }
    };
    match (&close, &close_fallback) {
        // Left out on purpose: the agent says what runs instead.
        (Err(reason), _) if opts.close_tier == CloseTier::Off => {
            debug!("eBPF close tier not attached: {reason}");
        }
        (Err(reason), _) => warn!("eBPF close tier off: {reason}"),
        (Ok(hook), None) => info!("eBPF close tier on: {}", hook.label()),
        (Ok(hook), Some(why)) => info!(
            "eBPF close tier on: {} (per-syscall tracepoints unused: {why})",
            hook.label()
        ),
    }
    (close, close_fallback)
}

/// Attaches the UNIX-socket release hook where it can run (optional too:
/// most kernels without it still run the close tier), and says so.
fn attach_release_hook(
    ebpf: &mut Ebpf,
    opts: &EbpfOptions,
    offsets: &Offsets,
    close_on: bool,
) -> Result<&'static str, String> {
    let release = match (&offsets.close, opts.release_hook) {
        (Err(reason), _) => Err(reason.clone()),
        (Ok(_), false) => Err("disabled".to_owned()),
        (Ok(_), true) => attach_release(ebpf),
    };
    match (&release, close_on) {
        (Ok(how), _) => info!("UNIX-socket release hook attached ({how}/{RELEASE_FUNCTION})"),
        (Err(reason), true) => {
            info!("UNIX-socket release hook off ({reason}); hosts' closes come from the close tier")
        }
        (Err(reason), false) => debug!("UNIX-socket release hook off ({reason})"),
    }
    release
}

/// Loads and attaches the per-syscall close programs, all or none: a
/// partial set would miss closes, and is unloaded before the fallback.
fn attach_close_tracepoints(ebpf: &mut Ebpf) -> Result<(), String> {
    let attached = tracefs::with_tracefs(|_| -> anyhow::Result<()> {
        for (name, event, _) in tracefs::CLOSE_TRACEPOINTS {
            let prog: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()
                .with_context(|| format!("{name} is not a tracepoint program"))?;
            prog.load().with_context(|| format!("loading {name}"))?;
            match prog.attach("syscalls", event) {
                Ok(_) => {}
                Err(_) if tracefs::optional(event) => {
                    debug!("syscalls:{event} absent on this architecture");
                    prog.unload().ok();
                }
                Err(e) => return Err(e).with_context(|| format!("attaching syscalls:{event}")),
            }
        }
        Ok(())
    })
    .and_then(|r| r.map_err(|e| format!("{e:#}")));
    if attached.is_err() {
        for (name, _, _) in tracefs::CLOSE_TRACEPOINTS {
            if let Some(Ok(prog)) = ebpf.program_mut(name).map(<&mut TracePoint>::try_from) {
                let _ = prog.unload();
            }
        }
    }
    attached
}

/// Loads and attaches the close program on `raw_tp/sys_enter`.
fn attach_close(ebpf: &mut Ebpf) -> Result<CloseHook, String> {
    attach_raw(ebpf, CLOSE_TRACEPOINT)
        .map(|()| CloseHook::SysEnter)
        .map_err(|e| format!("{e:#}"))
}

/// Loads `name` and attaches it as a raw tracepoint of the same name: no
/// kernel BTF needed.
fn attach_raw(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()
        .with_context(|| format!("{name} is not a raw tracepoint program"))?;
    prog.load()
        .with_context(|| format!("loading raw_tp/{name}"))?;
    prog.attach(name)
        .with_context(|| format!("attaching raw_tp/{name}"))?;
    Ok(())
}

/// Attaches the release hook: fentry where the kernel allows it, else a
/// kprobe. Returns which, or why neither (both failures, shortened).
fn attach_release(ebpf: &mut Ebpf) -> Result<&'static str, String> {
    let fentry = (|| -> anyhow::Result<()> {
        // fentry needs the kernel's BTF; parsed only here, and dropped with
        // this closure.
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        let btf = &btf;
        let prog: &mut FEntry = ebpf
            .program_mut(RELEASE_FENTRY)
            .ok_or_else(|| anyhow!("program {RELEASE_FENTRY} missing from the object"))?
            .try_into()?;
        prog.load(RELEASE_FUNCTION, btf).context("load")?;
        prog.attach().context("attach")?;
        Ok(())
    })();
    let Err(fentry) = fentry else {
        return Ok("fentry");
    };
    let kprobe = (|| -> anyhow::Result<()> {
        let prog: &mut KProbe = ebpf
            .program_mut(RELEASE_KPROBE)
            .ok_or_else(|| anyhow!("program {RELEASE_KPROBE} missing from the object"))?
            .try_into()?;
        prog.load().context("load")?;
        prog.attach(RELEASE_FUNCTION, 0).context("attach")?;
        Ok(())
    })();
    let Err(kprobe) = kprobe else {
        return Ok("kprobe");
    };
    Err(format!("fentry: {fentry:#}; kprobe: {kprobe:#}"))
}

/// Returns freed heap pages to the kernel, so the BTF parsed at start-up
/// does not stay in the daemon's resident set.
fn release_freed_memory() {
    crate::daemon::heap::release_freed();
}

fn spawn_kernel_logger(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    tokio::spawn(async move {
        // SAFETY: the logger owns its ring-buffer fd for its whole life and
        // the AsyncFd owns the logger.
        let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
        else {
            warn!("kernel log: cannot register with tokio");
            return;
        };
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
