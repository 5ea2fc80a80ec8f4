//! A watched host releasing a descriptor, and its raw entry point.
//!
//! Owns: for close, close_range, dup2 and dup3 by a process whose watch
//! entry has `watch::HOST` and names this very process, reporting which AF_UNIX socket or pipe is about
//! to be closed, its peer, and whether this close drops the file's last
//! reference (`host_close`). close_range is reported as a range, not
//! walked. A host's exec drops its close-on-exec descriptors: EXEC already
//! reports that. Two entry points share it: the per-syscall tracepoints in
//! `close_tp` (preferred: other syscalls never run a program), and
//! `raw_tp/sys_enter` here, for machines where tracefs cannot be reached.
//! Must never: do more than compare the syscall number and one map lookup
//! for any other syscall or process (`sys_enter` runs on every syscall), or
//! loop over descriptors.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext,
};
use mcp_reaper_common::{
    CLOSE_RANGE_CLOEXEC, WatchEntry, close_flag, close_kind, counter, kind, watch::HOST,
};

use crate::{
    events::emit_close,
    files::{Target, closing},
    maps::{CLOSE_SYSCALLS, FILE_OFFSETS, OFFSETS, STDIO_INODES, WATCH, count},
    task::{Task, read},
    watch,
};

/// The close-family syscall being entered.
#[derive(Clone, Copy)]
pub enum Call {
    Close,
    CloseRange,
    Dup,
}

/// `sys_enter` for every syscall: picks out the close family by number.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    let s = CLOSE_SYSCALLS.load();
    let call = if id == i64::from(s.close) {
        Call::Close
    } else if id == i64::from(s.close_range) {
        Call::CloseRange
    } else if id == i64::from(s.dup2) || id == i64::from(s.dup3) {
        Call::Dup
    } else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    host_close(call, |i| {
        let off = pick(&FILE_OFFSETS.load().regs_arg, i);
        read::<u64>(regs, off).map(|v| v as u32)
    });
    0
}

/// A close-family syscall entered by the current process: reported when it
/// is a watched host, with `arg(i)` reading argument `i` (0..=2) as the
/// `unsigned int` every one of these syscalls takes. Shared by `sys_enter`
/// and the per-syscall tracepoints (`close_tp`).
#[inline(always)]
pub fn host_close(call: Call, arg: impl Fn(usize) -> Result<u32, i32>) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: map lookup; the entry is copied out at once.
    let Some(entry) = (unsafe { WATCH.get(tgid) }).copied() else {
        return;
    };
    if entry.flags & HOST == 0 {
        return;
    }
    if try_close(call, tgid, &entry, arg).is_err() {
        count(counter::READ_ERRORS);
    }
}

fn try_close(
    call: Call,
    tgid: u32,
    entry: &WatchEntry,
    arg: impl Fn(usize) -> Result<u32, i32>,
) -> Result<(), i32> {
    let o = FILE_OFFSETS.load();
    let to = OFFSETS.load();
    if o.valid == 0 || to.valid == 0 {
        return Ok(());
    }
    let task = Task::current();
    let start_ns = task.process_start_ns(&to)?;
    if !watch::names(entry, start_ns) {
        return Ok(()); // the entry was left for an earlier holder of the PID
    }
    let (fd, via_dup) = match call {
        Call::Close => (arg(0)?, 0),
        Call::Dup => {
            let (old, new) = (arg(0)?, arg(1)?);
            if old == new {
                return Ok(()); // dup2(fd, fd) closes nothing
            }
            (new, close_flag::VIA_DUP)
        }
        Call::CloseRange => {
            let (first, last) = (arg(0)?, arg(1)?);
            if arg(2)? & CLOSE_RANGE_CLOEXEC != 0 || first > last {
                return Ok(()); // marks close-on-exec only, or EINVAL
            }
            emit_close(true, |ev| {
                ev.kind = kind::CLOSE;
                ev.tgid = tgid;
                ev.start_ns = start_ns;
                ev.first_fd = first;
                ev.last_fd = last;
                ev.file_kind = close_kind::RANGE;
            });
            return Ok(());
        }
    };
    let Some(c) = closing(task, fd, &o)? else {
        return Ok(());
    };
    let mut flags = via_dup;
    if c.last_ref {
        flags |= close_flag::LAST_REF;
    }
    if c.write {
        flags |= close_flag::WRITE_END;
    }
    let (file_kind, inode, peer_inode, pipe_ends) = match c.target {
        Target::Unix { inode, peer_inode } => (close_kind::UNIX_SOCKET, inode, peer_inode, 0),
        Target::Pipe { inode, ends } => (close_kind::PIPE, inode, 0, ends),
    };
    // The tree's side of the link: the socket's peer, or the pipe itself.
    let tree_side = if peer_inode != 0 { peer_inode } else { inode };
    // SAFETY: map lookup; only presence is used.
    let urgent = unsafe { STDIO_INODES.get(tree_side) }.is_some();
    emit_close(urgent, |ev| {
        ev.kind = kind::CLOSE;
        ev.tgid = tgid;
        ev.start_ns = start_ns;
        ev.inode = inode;
        ev.peer_inode = peer_inode;
        ev.first_fd = fd;
        ev.last_fd = fd;
        ev.file_kind = file_kind;
        ev.flags = flags;
        ev.pipe_ends = pipe_ends;
    });
    Ok(())
}

/// `offsets[i]` for `i` in 0..=2, without an index the verifier must bound.
#[inline(always)]
pub fn pick(offsets: &[u32; 3], i: usize) -> u32 {
    match i {
        0 => offsets[0],
        1 => offsets[1],
        _ => offsets[2],
    }
}
