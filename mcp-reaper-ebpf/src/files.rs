//! Reads of the fd table, `struct file`, inodes, sockets and pipes through
//! the offsets in `FILE_OFFSETS`.
//!
//! Owns: the walk `current->files->fdt->fd[fd]` and what the close program
//! learns from the file. Must never: dereference kernel memory directly,
//! assume a field offset, or index the fd table without its bound.

use mcp_reaper_common::{AF_UNIX, FMODE_WRITE, FileOffsets, S_IFIFO, S_IFMT, S_IFSOCK};

use crate::task::{Task, read};

/// What a descriptor refers to, as far as the close tier cares.
pub enum Target {
    /// An AF_UNIX socket: its inode and its peer's (0: no peer).
    Unix { inode: u64, peer_inode: u64 },
    /// A pipe end: its inode, and readers (read end) or writers (write
    /// end) before this close, this one included.
    Pipe { inode: u64, ends: u32 },
}

/// A file the close program looked at.
pub struct Closing {
    pub target: Target,
    /// Opened for writing (`FMODE_WRITE`).
    pub write: bool,
    /// Closing it drops the last reference.
    pub last_ref: bool,
}

/// `task->files->fdt->fd[fd]`, or `None` when `fd` is not open.
#[inline(always)]
fn file_of(task: Task, fd: u32, o: &FileOffsets) -> Result<Option<*const u8>, i32> {
    let files = read::<*const u8>(task.0, o.task_files)?;
    if files.is_null() {
        return Ok(None);
    }
    let fdt = read::<*const u8>(files, o.files_fdt)?;
    let max_fds = read::<u32>(fdt, o.fdt_max_fds)?;
    if fd >= max_fds {
        return Ok(None);
    }
    let table = read::<*const u8>(fdt, o.fdt_fd)?;
    let file = read::<*const u8>(table, fd.wrapping_mul(8))?;
    Ok((!file.is_null()).then_some(file))
}

/// The inode number of a `struct sock *` (0 for a null sock or one whose
/// socket is gone, on kernels without `sk_ino`).
#[inline(always)]
fn sock_ino(sk: *const u8, o: &FileOffsets) -> Result<u64, i32> {
    if sk.is_null() {
        return Ok(0);
    }
    if o.sock_ino != u32::MAX {
        return read::<u64>(sk, o.sock_ino);
    }
    let socket = read::<*const u8>(sk, o.sock_socket)?;
    if socket.is_null() {
        return Ok(0);
    }
    read::<u64>(socket, o.socket_to_inode.wrapping_add(o.inode_ino))
}

/// A `struct socket *` being released: its inode and its peer's, when it
/// is an AF_UNIX socket (`None` otherwise, or when it has no sock left).
#[inline(always)]
pub fn unix_released(socket: *const u8, o: &FileOffsets) -> Result<Option<(u64, u64)>, i32> {
    if socket.is_null() {
        return Ok(None);
    }
    let sk = read::<*const u8>(socket, o.socket_sk)?;
    if sk.is_null() || read::<u16>(sk, o.sock_family)? != AF_UNIX {
        return Ok(None);
    }
    let inode = read::<u64>(socket, o.socket_to_inode.wrapping_add(o.inode_ino))?;
    let peer = read::<*const u8>(sk, o.unix_peer)?;
    Ok(Some((inode, sock_ino(peer, o)?)))
}

/// Looks at what `fd` of `task` refers to. `None`: not open, or neither an
/// AF_UNIX socket nor a pipe.
#[inline(always)]
pub fn closing(task: Task, fd: u32, o: &FileOffsets) -> Result<Option<Closing>, i32> {
    let Some(file) = file_of(task, fd, o)? else {
        return Ok(None);
    };
    let inode = read::<*const u8>(file, o.file_inode)?;
    let mode = read::<u16>(inode, o.inode_mode)? & S_IFMT;
    let target = if mode == S_IFSOCK {
        let socket = read::<*const u8>(file, o.file_private)?;
        let sk = read::<*const u8>(socket, o.socket_sk)?;
        if sk.is_null() || read::<u16>(sk, o.sock_family)? != AF_UNIX {
            return Ok(None);
        }
        // A unix_sock begins with its struct sock (checked in userspace).
        let peer = read::<*const u8>(sk, o.unix_peer)?;
        Target::Unix {
            inode: read::<u64>(inode, o.inode_ino)?,
            peer_inode: sock_ino(peer, o)?,
        }
    } else if mode == S_IFIFO {
        Target::Pipe {
            inode: read::<u64>(inode, o.inode_ino)?,
            ends: 0,
        }
    } else {
        return Ok(None);
    };
    let write = read::<u32>(file, o.file_mode)? & FMODE_WRITE != 0;
    let target = match target {
        Target::Pipe { inode: ino, .. } => {
            let pipe = read::<*const u8>(inode, o.inode_pipe)?;
            let ends = if pipe.is_null() {
                0
            } else if write {
                read::<u32>(pipe, o.pipe_writers)?
            } else {
                read::<u32>(pipe, o.pipe_readers)?
            };
            Target::Pipe { inode: ino, ends }
        }
        t => t,
    };
    let refs = read::<i64>(file, o.file_ref)?;
    Ok(Some(Closing {
        target,
        write,
        last_ref: refs == i64::from(o.ref_one),
    }))
}
