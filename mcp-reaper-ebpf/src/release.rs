//! fentry, or kprobe where fentry is refused, on `unix_release`: the last
//! reference to a UNIX socket is gone.
//!
//! Owns: reporting the release of a socket whose peer is a tracked tree's
//! stdio (`STDIO_INODES`), whichever path dropped it: a host's close, dup2,
//! exec (close-on-exec) or exit, or a kernel worker finishing a deferred
//! fput. Optional: userspace attaches it only where the kernel allows, and
//! the close tier covers hosts' closes without it.
//! Must never: report a socket outside the set (this runs for every UNIX
//! socket release on the machine), or do more than one map lookup for one.

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use mcp_reaper_common::{close_flag, close_kind, counter, kind};

use crate::{
    events::emit_close,
    files::unix_released,
    maps::{FILE_OFFSETS, OFFSETS, STDIO_INODES, count},
    task::Task,
};

#[fentry(function = "unix_release")]
pub fn unix_release_fentry(ctx: FEntryContext) -> i32 {
    // `unix_release(struct socket *sock)`: argument 0 is the socket.
    released(ctx.arg::<*const u8>(0));
    0
}

#[kprobe(function = "unix_release")]
pub fn unix_release_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sock) = ctx.arg::<*const u8>(0) {
        released(sock);
    }
    0
}

#[inline(always)]
fn released(socket: *const u8) {
    let o = FILE_OFFSETS.load();
    let to = OFFSETS.load();
    if o.valid == 0 || to.valid == 0 {
        return;
    }
    let (inode, peer_inode) = match unix_released(socket, &o) {
        Ok(Some(pair)) => pair,
        Ok(None) => return,
        Err(_) => {
            count(counter::READ_ERRORS);
            return;
        }
    };
    // SAFETY: map lookup; only presence is used.
    if peer_inode == 0 || unsafe { STDIO_INODES.get(peer_inode) }.is_none() {
        return;
    }
    let task = Task::current();
    let (tgid, start_ns) = match (task.tgid(&to), task.process_start_ns(&to)) {
        (Ok(t), Ok(s)) => (t, s),
        _ => {
            count(counter::READ_ERRORS);
            return;
        }
    };
    emit_close(true, |ev| {
        ev.kind = kind::CLOSE;
        ev.tgid = tgid;
        ev.start_ns = start_ns;
        ev.inode = inode;
        ev.peer_inode = peer_inode;
        ev.first_fd = u32::MAX;
        ev.last_fd = u32::MAX;
        ev.file_kind = close_kind::UNIX_SOCKET;
        ev.flags = close_flag::LAST_REF | close_flag::RELEASE;
    });
}
