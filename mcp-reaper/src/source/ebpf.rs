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

mod load;
mod reader;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
};
use mcp_reaper_common::{CloseSyscalls, WatchEntry, watch};

use super::watch::{self as checks};
pub use super::watch::{WatchError, Watched};
use crate::{
    procs::identity::{NS_PER_TICK, ProcKey},
    source::kernel_btf::VMLINUX_BTF,
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
