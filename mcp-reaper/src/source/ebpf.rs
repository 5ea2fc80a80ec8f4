//! The eBPF event source.
//!
//! Owns: loading the kernel programs with offsets from the running kernel's
//! BTF, attaching them, the watch map from userspace's side, and draining
//! the ring buffer into the tracker's channel (waking on readiness for
//! bursts, and on a short timer for the records the kernel submitted
//! without a wake-up). Dropping it detaches every program; nothing is
//! pinned, so nothing outlives the daemon. The close tier (hosts' closes of
//! sockets and pipes) is optional: when its offsets or its programs are
//! unavailable the source runs without it and says why (`close_tier`,
//! `close_tier_reason`). It enters through the per-syscall tracepoints
//! where tracefs can be reached (see `tracefs`), else through
//! `raw_tp/sys_enter`, which runs on every syscall of the machine.
//! Must never: block the runtime, hide a loss (every dropped record is
//! counted and reported as `SourceMsg::Lost`) or a gap in lineage (a failed
//! kernel read, a record that does not decode, a fork the watch map had no
//! room for: each is reported as `SourceMsg::Gap`), or write a watch entry
//! for a process it has not just seen alive.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{FEntry, KProbe, RawTracePoint, TracePoint},
};
use mcp_reaper_common::{CloseSyscalls, FileOffsets, SyscallTpArgs, WatchEntry, counter, watch};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::{debug, info, warn};

pub use super::watch::{WatchError, Watched};
use super::{
    SourceCounters, tracefs,
    watch::{self as checks, KernelSeen},
};
use crate::{
    decode::decode,
    event::SourceMsg,
    identity::{NS_PER_TICK, ProcKey},
    kernel_btf::{KernelBtf, VMLINUX_BTF},
};

/// The compiled kernel programs, embedded at build time.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-reaper"));

/// The tracepoints the source attaches, in attach order.
pub const TRACEPOINTS: [&str; 3] = [
    "sched_process_exit",
    "sched_process_fork",
    "sched_process_exec",
];

/// The close tier's fallback program (`raw_tp/sys_enter`, raw_syscalls).
pub const CLOSE_TRACEPOINT: &str = "sys_enter";

/// Whether the eBPF tier attaches its close tier (`--close-tier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseTier {
    /// Off where the per-tree stdin watches (pidfd_getfd + epoll) work:
    /// they see the same releases as fast, and cost other processes
    /// nothing. On where they do not. `EbpfSource::load` alone, which
    /// cannot judge the watches, treats it as `on`.
    #[default]
    Auto,
    /// Attach it: hosts' closes, dup2 and close_range are seen in the
    /// kernel, at the cost of a syscall tracepoint on the whole machine.
    On,
    /// Leave it out.
    Off,
}

/// How the close tier enters the kernel (`--close-hook`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseHook {
    /// The per-syscall tracepoints (syscalls:sys_enter_close, _close_range,
    /// _dup2, _dup3) where tracefs can be reached, mounting a private one if
    /// needed; otherwise raw_tp/sys_enter.
    #[default]
    Auto,
    /// raw_tp/sys_enter only: no tracefs needed, but a program runs on
    /// every syscall of the machine.
    SysEnter,
}

impl CloseHook {
    /// How it is shown in logs and `doctor`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auto => SYSCALL_TRACEPOINTS,
            Self::SysEnter => "raw_tp/sys_enter",
        }
    }
}

/// The label of the per-syscall entry.
const SYSCALL_TRACEPOINTS: &str = "syscalls:sys_enter_{close,close_range,dup2,dup3}";

/// The kernel function the optional release hook attaches to.
pub const RELEASE_FUNCTION: &str = "unix_release";
/// The release hook as fentry, and as kprobe where fentry is refused.
const RELEASE_FENTRY: &str = "unix_release_fentry";
const RELEASE_KPROBE: &str = "unix_release_kprobe";

/// The syscall numbers of this architecture the close program watches.
pub fn native_close_syscalls() -> CloseSyscalls {
    let nr = |n: libc::c_long| u32::try_from(n).unwrap_or(u32::MAX);
    CloseSyscalls {
        close: nr(libc::SYS_close),
        close_range: nr(libc::SYS_close_range),
        // dup2 is absent from the newer syscall tables (aarch64, riscv).
        #[cfg(target_arch = "x86_64")]
        dup2: nr(libc::SYS_dup2),
        #[cfg(not(target_arch = "x86_64"))]
        dup2: u32::MAX,
        dup3: nr(libc::SYS_dup3),
    }
}

/// The ring buffer's default size: about 13,000 records, while the reader
/// is woken every 64 KiB and drains every 5 ms. The kernel maps its pages
/// twice into the daemon, so every MiB here is two MiB of resident memory.
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

/// The watch map's default capacity (processes of hosts and trees).
pub const DEFAULT_WATCH_CAPACITY: u32 = 65_536;

/// Tunables for the eBPF source.
#[derive(Clone, Debug)]
pub struct EbpfOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Capacity of the in-kernel watch map (processes).
    pub watch_capacity: u32,
    /// How often the reader drains records submitted without a wake-up.
    pub drain_interval: Duration,
    /// Forward the programs' aya-log debug output to the daemon's log.
    pub kernel_log: bool,
    /// Kernel BTF to resolve offsets from.
    pub btf_path: PathBuf,
    /// Load the close tier (hosts' closes of sockets and pipes) when the
    /// kernel allows it; `Auto` loads it here (the agent resolves `Auto`
    /// before it loads the source).
    pub close_tier: CloseTier,
    /// Where the close tier enters the kernel.
    pub close_hook: CloseHook,
    /// Try the UNIX-socket release hook (fentry, else kprobe) when the
    /// kernel allows it.
    pub release_hook: bool,
}

impl Default for EbpfOptions {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            watch_capacity: DEFAULT_WATCH_CAPACITY,
            drain_interval: Duration::from_millis(5),
            kernel_log: false,
            btf_path: PathBuf::from(VMLINUX_BTF),
            close_tier: CloseTier::Auto,
            close_hook: CloseHook::Auto,
            release_hook: true,
        }
    }
}

/// Loaded and attached kernel programs plus their maps.
pub struct EbpfSource {
    /// Owns the programs and their links: dropping it detaches them.
    _programs: Ebpf,
    ring: Option<RingBuf<MapData>>,
    watch: HashMap<MapData, u32, WatchEntry>,
    /// Tracked trees' stdio inodes (`STDIO_INODES`) and this side's copy.
    stdio: HashMap<MapData, u64, u8>,
    stdio_known: std::collections::HashSet<u64>,
    counters: Option<PerCpuArray<MapData, u64>>,
    opts: EbpfOptions,
    /// Where the close tier entered, or why it is off.
    close: Result<CloseHook, String>,
    /// Why the per-syscall tracepoints were not used, when they were not.
    close_fallback: Option<String>,
    /// The UNIX-socket release hook: how it attached, or why it did not.
    release: Result<&'static str, String>,
}

impl std::fmt::Debug for EbpfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfSource")
            .field("opts", &self.opts)
            .field("close", &self.close)
            .finish()
    }
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
        // Read in a scope of its own (mapped where the kernel allows it):
        // aya parses the kernel's BTF again below, and holding both would
        // raise the daemon's peak RSS.
        let (offsets, close_offsets) = {
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
            (kbtf.task_offsets()?, close)
        };
        let (file_offsets, close_syscalls) = match &close_offsets {
            Ok(o) => (*o, native_close_syscalls()),
            Err(_) => (FileOffsets::default(), CloseSyscalls::NONE),
        };
        // The per-syscall tracepoints' argument offsets, from tracefs.
        let tp_args = match (&close_offsets, opts.close_hook) {
            (Err(reason), _) => Err(reason.clone()),
            (Ok(_), CloseHook::SysEnter) => Err("raw_tp/sys_enter chosen by option".to_owned()),
            (Ok(_), CloseHook::Auto) => {
                tracefs::with_tracefs(tracefs::syscall_tp_args).and_then(|r| r)
            }
        };
        release_freed_memory();
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
            .override_global("OFFSETS", &offsets, true)
            .override_global("FILE_OFFSETS", &file_offsets, true)
            .override_global("CLOSE_SYSCALLS", &close_syscalls, true)
            .override_global(
                "SYSCALL_TP_ARGS",
                tp_args.as_ref().unwrap_or(&SyscallTpArgs::NONE),
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
        for tp in TRACEPOINTS {
            attach_raw(&mut ebpf, tp)?;
        }
        // The close tier is optional: process events run without it.
        let mut close_fallback = None;
        let close = match (&close_offsets, &tp_args) {
            (Err(reason), _) => Err(reason.clone()),
            (Ok(_), Ok(_)) => match attach_close_tracepoints(&mut ebpf) {
                Ok(()) => Ok(CloseHook::Auto),
                Err(e) => {
                    close_fallback = Some(e);
                    attach_close(&mut ebpf)
                }
            },
            (Ok(_), Err(why)) => {
                close_fallback = Some(why.clone());
                attach_close(&mut ebpf)
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
        // Optional too: most kernels without it still run the close tier.
        let release = match (&close_offsets, opts.release_hook) {
            (Err(reason), _) => Err(reason.clone()),
            (Ok(_), false) => Err("disabled".to_owned()),
            (Ok(_), true) => attach_release(&mut ebpf),
        };
        match (&release, &close) {
            (Ok(how), _) => info!("UNIX-socket release hook attached ({how}/{RELEASE_FUNCTION})"),
            (Err(reason), Ok(_)) => info!(
                "UNIX-socket release hook off ({reason}); hosts' closes come from the close tier"
            ),
            (Err(reason), Err(_)) => debug!("UNIX-socket release hook off ({reason})"),
        }
        release_freed_memory();
        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("EVENTS map missing"))?,
        )?;
        let watch = HashMap::try_from(
            ebpf.take_map("WATCH")
                .ok_or_else(|| anyhow!("WATCH map missing"))?,
        )?;
        let stdio = HashMap::try_from(
            ebpf.take_map("STDIO_INODES")
                .ok_or_else(|| anyhow!("STDIO_INODES map missing"))?,
        )?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or_else(|| anyhow!("COUNTERS map missing"))?,
        )?;
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

    /// Whether the close tier is loaded and attached.
    pub fn close_tier(&self) -> bool {
        self.close.is_ok()
    }

    /// Where the close tier entered the kernel, while it runs.
    pub fn close_hook(&self) -> Option<CloseHook> {
        self.close.as_ref().ok().copied()
    }

    /// Why the close tier runs on `raw_tp/sys_enter` rather than the
    /// per-syscall tracepoints, when it does.
    pub fn close_fallback_reason(&self) -> Option<&str> {
        self.close_fallback.as_deref()
    }

    /// How the UNIX-socket release hook is attached (`fentry`, `kprobe`), or
    /// `None` when it is not.
    pub fn release_hook(&self) -> Option<&'static str> {
        self.release.as_ref().ok().copied()
    }

    /// Why the release hook is off (`None` while it runs).
    pub fn release_hook_reason(&self) -> Option<&str> {
        self.release.as_ref().err().map(String::as_str)
    }

    /// Why the close tier is off (`None` while it runs).
    pub fn close_tier_reason(&self) -> Option<&str> {
        self.close.as_ref().err().map(String::as_str)
    }

    /// Marks `key` as a host: every process it forks from now on is the
    /// watched root of a new tree. `Gone` (nothing written) when `key` is
    /// no longer alive.
    pub fn watch_host(&mut self, key: ProcKey) -> Result<Watched, WatchError> {
        self.watch_live(
            key,
            WatchEntry {
                root_tgid: key.tgid,
                flags: watch::HOST,
                root_start_ns: key.start_ticks * NS_PER_TICK,
                self_start_ns: key.start_ticks * NS_PER_TICK,
            },
        )
    }

    /// Marks `member` as part of the tree rooted at `root`; its forks
    /// inherit. `Gone` (nothing written) when `member` is no longer alive:
    /// an entry for a dead process would be inherited by the next process
    /// given its PID.
    pub fn watch_member(&mut self, member: ProcKey, root: ProcKey) -> Result<Watched, WatchError> {
        self.watch_live(
            member,
            WatchEntry {
                root_tgid: root.tgid,
                flags: watch::MEMBER,
                root_start_ns: root.start_ticks * NS_PER_TICK,
                self_start_ns: member.start_ticks * NS_PER_TICK,
            },
        )
    }

    /// Writes `entry` for `key` only while `key` is shown alive: a pidfd is
    /// opened first, /proc must then show the key's start time (so the
    /// pidfd is that process), the entry is written, and the pidfd is
    /// polled once more after the write. Had the process exited meanwhile,
    /// the entry is taken back (if it still names `key`). A process that
    /// passes the exit tracepoint in the instant between the /proc check
    /// and the write is still missed; its entry names it, so the kernel
    /// programs ignore it for any later holder of the PID, and the next
    /// holder's exit deletes it.
    fn watch_live(&mut self, key: ProcKey, entry: WatchEntry) -> Result<Watched, WatchError> {
        let Some(pidfd) = checks::open_if_alive(key)? else {
            return Ok(Watched::Gone);
        };
        self.watch
            .insert(key.tgid, entry, 0)
            .map_err(|e| WatchError::from_map(key.tgid, &e))?;
        if checks::exited(&pidfd) {
            self.unwatch(key);
            return Ok(Watched::Gone);
        }
        Ok(Watched::Added)
    }

    /// Writes `entry` for `tgid` as given, unchecked. For tests of the
    /// kernel programs' own checks (an entry left for a process that has
    /// exited); the daemon never calls it.
    #[doc(hidden)]
    pub fn watch_unchecked(&mut self, tgid: u32, entry: WatchEntry) -> Result<(), WatchError> {
        self.watch
            .insert(tgid, entry, 0)
            .map_err(|e| WatchError::from_map(tgid, &e))
    }

    /// Stops watching `key`: its entry is removed if it still names `key`
    /// (an entry the kernel wrote since for a new process on the PID stays).
    /// Returns whether an entry was removed.
    pub fn unwatch(&mut self, key: ProcKey) -> bool {
        let names_key = self
            .watch
            .get(&key.tgid, 0)
            .is_ok_and(|e| ProcKey::from_kernel(key.tgid, e.self_start_ns) == key);
        names_key && self.watch.remove(&key.tgid).is_ok()
    }

    /// Makes the kernel's set of tracked stdio inodes equal `wanted`: a
    /// watched host's close of one of them wakes the reader at once. Only
    /// the difference is written. A full map (more trees than it holds) is
    /// no loss: those closes still arrive with the next drain.
    pub fn sync_stdio_inodes(&mut self, wanted: &std::collections::HashSet<u64>) {
        let gone: Vec<u64> = self.stdio_known.difference(wanted).copied().collect();
        for ino in gone {
            let _ = self.stdio.remove(&ino);
            self.stdio_known.remove(&ino);
        }
        for &ino in wanted {
            if !self.stdio_known.contains(&ino) && self.stdio.insert(ino, 1, 0).is_ok() {
                self.stdio_known.insert(ino);
            }
        }
    }

    /// A second handle on the kernel's watch map (a duplicate of its fd),
    /// for a reap running on another thread: the tree's members by the
    /// kernel's own lineage, found however they forked or were reparented.
    ///
    /// # Errors
    /// When the map's fd cannot be duplicated or opened again.
    pub fn lineage_reader(&self) -> anyhow::Result<LineageReader> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let fd = self
            .watch
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the watch map's fd")?;
        let data = MapData::from_fd(fd).context("opening the watch map again")?;
        let map =
            HashMap::try_from(aya::maps::Map::HashMap(data)).context("the watch map's type")?;
        Ok(LineageReader { map })
    }

    /// The watch entry the kernel holds for `tgid`, if any.
    pub fn watched(&self, tgid: u32) -> Option<WatchEntry> {
        self.watch.get(&tgid, 0).ok()
    }

    /// Starts draining the ring buffer into `tx`; the reader task also
    /// polls the kernel's loss counters. Callable once.
    pub fn spawn_reader(
        &mut self,
        tx: mpsc::Sender<SourceMsg>,
        counters: Arc<SourceCounters>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let (Some(ring), Some(kernel_counters)) = (self.ring.take(), self.counters.take()) else {
            return Err(anyhow!("the ring-buffer reader is already running"));
        };
        // SAFETY: the RingBuf owns its map fd for its whole life and always
        // returns the same one from as_raw_fd; the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
        Ok(tokio::spawn(read_loop(
            fd,
            kernel_counters,
            tx,
            counters,
            self.opts.drain_interval,
        )))
    }
}

/// The kernel's watch map read from another thread (`lineage_reader`).
pub struct LineageReader {
    map: HashMap<MapData, u32, WatchEntry>,
}

impl LineageReader {
    /// Every process the kernel has as a member of the tree rooted at
    /// `root`, each named by the identity its entry was written for (an
    /// entry left by a dead process names that dead process: the reaper's
    /// pidfd check then finds it gone or reused, never another process).
    pub fn members(&self, root: ProcKey) -> Vec<ProcKey> {
        self.map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, e)| {
                e.flags & watch::MEMBER != 0
                    && ProcKey::from_kernel(e.root_tgid, e.root_start_ns) == root
            })
            .map(|(tgid, e)| ProcKey::from_kernel(tgid, e.self_start_ns))
            .collect()
    }
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
    crate::heap::release_freed();
}

fn kernel_counter(map: &PerCpuArray<MapData, u64>, slot: u32) -> u64 {
    map.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

async fn read_loop(
    mut fd: AsyncFd<RingBuf<MapData>>,
    kernel_counters: PerCpuArray<MapData, u64>,
    tx: mpsc::Sender<SourceMsg>,
    counters: Arc<SourceCounters>,
    drain_interval: Duration,
) {
    let mut tick = tokio::time::interval(drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = KernelSeen::default();
    let mut batch = Vec::with_capacity(256);
    // Drain marks: after a drain that read anything, and every
    // DRAIN_MARK_TICKS timer ticks when nothing happens.
    let mut quiet_ticks = 0u32;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => match guard {
                Ok(mut g) => g.clear_ready(),
                Err(e) => {
                    warn!("ring buffer poll failed, reader stops: {e}");
                    return;
                }
            },
            _ = tick.tick() => {}
        }
        // Drain everything available, decoding each record before the next
        // borrow of the ring; sending happens outside the borrow. Every
        // record committed before `mark` is read by the time the ring is
        // empty (one reserved earlier but still being written can trail
        // it by the program's run time: DRAIN_MARK_SLACK_NS covers that).
        let mark = crate::identity::boottime_ns();
        let mut undecoded = 0u64;
        let mut read_any = false;
        loop {
            batch.clear();
            {
                let ring = fd.get_mut();
                while batch.len() < batch.capacity() {
                    let Some(item) = ring.next() else { break };
                    match decode(&item) {
                        Ok(ev) => batch.push(ev),
                        Err(e) => {
                            counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                            undecoded += 1;
                            debug!("skipped a kernel record: {e}");
                        }
                    }
                }
            }
            let drained = batch.len();
            read_any |= drained > 0;
            for ev in batch.drain(..) {
                counters.count_event(&ev);
                if tx.send(SourceMsg::Event(ev)).await.is_err() {
                    return; // the tracker is gone: shutting down
                }
            }
            if drained < batch.capacity() {
                break;
            }
        }
        let read_errors = kernel_counter(&kernel_counters, counter::READ_ERRORS);
        counters
            .kernel_read_errors
            .store(read_errors, Ordering::Relaxed);
        let msgs = seen.advance(
            kernel_counter(&kernel_counters, counter::LOST),
            read_errors,
            kernel_counter(&kernel_counters, counter::WATCH_FULL),
            undecoded,
        );
        for msg in msgs {
            if let SourceMsg::Lost(n) = msg {
                counters.lost.fetch_add(n, Ordering::Relaxed);
            }
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        quiet_ticks = if read_any { 0 } else { quiet_ticks + 1 };
        if (read_any || quiet_ticks >= DRAIN_MARK_TICKS)
            && let Some(mark) = mark
        {
            quiet_ticks = 0;
            let upto = mark.saturating_sub(DRAIN_MARK_SLACK_NS);
            if tx.send(SourceMsg::Drained(upto)).await.is_err() {
                return;
            }
        }
    }
}

/// A drain mark is sent at least every this many quiet timer ticks.
const DRAIN_MARK_TICKS: u32 = 20;

/// How far a drain mark stays behind the instant the drain began: a record
/// reserved before it may still be being written while the reader passes.
const DRAIN_MARK_SLACK_NS: u64 = 2_000_000;

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
