//! Decoding of kernel ring-buffer records.
//!
//! Owns: turning raw bytes from the ring buffer into `ProcessEvent`s, with
//! size and kind checks; a record's watch entry counts only when it names
//! the record's own process. Must never: transmute, trust a length or a kind,
//! or panic on any input; a bad record is an error the caller counts.

use mcp_reaper_common::{
    ARGV_LEN, COMM_LEN, CloseEvent, ExecArgvEvent, ProcEvent, WatchEntry, argv_flag, close_flag,
    close_kind, kind, watch,
};

use crate::procs::identity::ProcKey;
use crate::source::event::{CloseKind, ExecImage, ProcessEvent, Watch};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte header")]
    Truncated { got: usize, need: usize },
    #[error("record of kind {kind} has {got} bytes, expected {need}")]
    WrongSize { kind: u32, got: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("record for pid 0")]
    ZeroPid,
    #[error("close record of unknown file kind {0}")]
    UnknownCloseKind(u32),
    #[error("close_range record with first fd {first} > last fd {last}")]
    BadRange { first: u32, last: u32 },
    #[error("exec record with a {0}-byte command line (at most {ARGV_LEN})")]
    BadArgvLen(u32),
}

/// The record kinds userspace understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec,
    ExecArgv,
    Fork,
    Exit,
    Close,
}

impl RecordKind {
    /// The exact size of a record of this kind. The ring buffer rounds
    /// records up to 8 bytes; every record type is a multiple of 8, so
    /// anything but this size is a layout mismatch.
    pub fn size(self) -> usize {
        match self {
            Self::Exec | Self::Fork | Self::Exit => size_of::<ProcEvent>(),
            Self::Close => size_of::<CloseEvent>(),
            Self::ExecArgv => size_of::<ExecArgvEvent>(),
        }
    }
}

impl TryFrom<u32> for RecordKind {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<Self, DecodeError> {
        match v {
            kind::EXEC => Ok(Self::Exec),
            kind::FORK => Ok(Self::Fork),
            kind::EXIT => Ok(Self::Exit),
            kind::CLOSE => Ok(Self::Close),
            kind::EXEC_ARGV => Ok(Self::ExecArgv),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

/// Reads a `ProcEvent` field by field from exactly `size_of::<ProcEvent>()`
/// bytes. Offsets come from `offset_of!`, so they follow the shared type.
fn read_proc_event(b: &[u8]) -> ProcEvent {
    use std::mem::offset_of;
    let w = offset_of!(ProcEvent, watch);
    let c = offset_of!(ProcEvent, comm);
    let mut comm = [0u8; COMM_LEN];
    comm.copy_from_slice(&b[c..c + COMM_LEN]);
    ProcEvent {
        kind: u32_at(b, offset_of!(ProcEvent, kind)),
        tgid: u32_at(b, offset_of!(ProcEvent, tgid)),
        start_ns: u64_at(b, offset_of!(ProcEvent, start_ns)),
        ppid: u32_at(b, offset_of!(ProcEvent, ppid)),
        exit_code: u32_at(b, offset_of!(ProcEvent, exit_code)),
        parent_start_ns: u64_at(b, offset_of!(ProcEvent, parent_start_ns)),
        ktime_ns: u64_at(b, offset_of!(ProcEvent, ktime_ns)),
        watch: WatchEntry {
            root_tgid: u32_at(b, w + offset_of!(WatchEntry, root_tgid)),
            flags: u32_at(b, w + offset_of!(WatchEntry, flags)),
            root_start_ns: u64_at(b, w + offset_of!(WatchEntry, root_start_ns)),
            self_start_ns: u64_at(b, w + offset_of!(WatchEntry, self_start_ns)),
        },
        comm,
    }
}

/// Reads a `CloseEvent` field by field from exactly
/// `size_of::<CloseEvent>()` bytes.
fn read_close_event(b: &[u8]) -> CloseEvent {
    use std::mem::offset_of;
    CloseEvent {
        kind: u32_at(b, offset_of!(CloseEvent, kind)),
        tgid: u32_at(b, offset_of!(CloseEvent, tgid)),
        start_ns: u64_at(b, offset_of!(CloseEvent, start_ns)),
        ktime_ns: u64_at(b, offset_of!(CloseEvent, ktime_ns)),
        inode: u64_at(b, offset_of!(CloseEvent, inode)),
        peer_inode: u64_at(b, offset_of!(CloseEvent, peer_inode)),
        first_fd: u32_at(b, offset_of!(CloseEvent, first_fd)),
        last_fd: u32_at(b, offset_of!(CloseEvent, last_fd)),
        file_kind: u32_at(b, offset_of!(CloseEvent, file_kind)),
        flags: u32_at(b, offset_of!(CloseEvent, flags)),
        pipe_ends: u32_at(b, offset_of!(CloseEvent, pipe_ends)),
        _pad: 0,
    }
}

fn decode_close(b: &[u8]) -> Result<ProcessEvent, DecodeError> {
    let ev = read_close_event(b);
    if ev.tgid == 0 {
        return Err(DecodeError::ZeroPid);
    }
    let kind = match ev.file_kind {
        close_kind::UNIX_SOCKET => CloseKind::UnixSocket,
        close_kind::PIPE => CloseKind::Pipe {
            write_end: ev.flags & close_flag::WRITE_END != 0,
            ends: ev.pipe_ends,
        },
        close_kind::RANGE if ev.first_fd <= ev.last_fd => CloseKind::Range {
            last_fd: ev.last_fd,
        },
        close_kind::RANGE => {
            return Err(DecodeError::BadRange {
                first: ev.first_fd,
                last: ev.last_fd,
            });
        }
        other => return Err(DecodeError::UnknownCloseKind(other)),
    };
    Ok(ProcessEvent::Close {
        key: ProcKey::from_kernel(ev.tgid, ev.start_ns),
        fd: ev.first_fd,
        inode: ev.inode,
        peer_inode: ev.peer_inode,
        kind,
        last_ref: ev.flags & close_flag::LAST_REF != 0,
        via_dup: ev.flags & close_flag::VIA_DUP != 0,
        via_release: ev.flags & close_flag::RELEASE != 0,
        ktime_ns: ev.ktime_ns,
    })
}

/// The image part of an exec record of a watched process: `None` when the
/// kernel could not read the command line.
fn decode_image(b: &[u8]) -> Result<Option<ExecImage>, DecodeError> {
    use std::mem::offset_of;
    let len = u32_at(b, offset_of!(ExecArgvEvent, argv_len));
    let flags = u32_at(b, offset_of!(ExecArgvEvent, flags));
    let n = usize::try_from(len)
        .ok()
        .filter(|&n| n <= ARGV_LEN)
        .ok_or(DecodeError::BadArgvLen(len))?;
    if flags & argv_flag::UNREAD != 0 {
        return Ok(None);
    }
    let start = offset_of!(ExecArgvEvent, argv);
    let raw = &b[start..start + n];
    // As /proc/PID/cmdline: arguments end in NUL; a cut one has none.
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let cmdline = if raw.is_empty() {
        Vec::new()
    } else {
        raw.split(|&c| c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    Ok(Some(ExecImage {
        uid: u32_at(b, offset_of!(ExecArgvEvent, uid)),
        cmdline,
        truncated: flags & argv_flag::TRUNCATED != 0,
    }))
}

/// A comm as text: up to the first NUL, invalid UTF-8 replaced.
pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The watch state of the process `key`: none when the entry was written
/// for another process (an earlier holder of the PID; the kernel programs
/// drop such entries too, this is the second line).
fn decode_watch(w: &WatchEntry, key: ProcKey) -> Watch {
    if ProcKey::from_kernel(key.tgid, w.self_start_ns) != key {
        return Watch::default();
    }
    Watch {
        root: (w.flags & watch::MEMBER != 0 && w.root_tgid != 0)
            .then(|| ProcKey::from_kernel(w.root_tgid, w.root_start_ns)),
        host: w.flags & watch::HOST != 0,
    }
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<ProcessEvent, DecodeError> {
    const HEADER: usize = 4;
    if record.len() < HEADER {
        return Err(DecodeError::Truncated {
            got: record.len(),
            need: HEADER,
        });
    }
    let raw_kind = u32_at(record, 0);
    let kind = RecordKind::try_from(raw_kind)?;
    let need = kind.size();
    if record.len() != need {
        return Err(DecodeError::WrongSize {
            kind: raw_kind,
            got: record.len(),
            need,
        });
    }
    if kind == RecordKind::Close {
        return decode_close(record);
    }
    let image = if kind == RecordKind::ExecArgv {
        decode_image(record)?
    } else {
        None
    };
    // An exec-with-argv record starts with an ordinary exec header.
    let ev = read_proc_event(&record[..size_of::<ProcEvent>()]);
    if ev.tgid == 0 {
        return Err(DecodeError::ZeroPid);
    }
    let key = ProcKey::from_kernel(ev.tgid, ev.start_ns);
    let parent = ProcKey::from_kernel(ev.ppid, ev.parent_start_ns);
    let comm = comm_to_string(&ev.comm);
    let watch = decode_watch(&ev.watch, key);
    Ok(match kind {
        RecordKind::Exec | RecordKind::ExecArgv => ProcessEvent::Exec {
            key,
            parent,
            comm,
            watch,
            ktime_ns: ev.ktime_ns,
            image,
        },
        RecordKind::Fork => ProcessEvent::Fork {
            child: key,
            parent,
            comm,
            watch,
            ktime_ns: ev.ktime_ns,
        },
        RecordKind::Exit => ProcessEvent::Exit {
            key,
            exit_code: ev.exit_code,
            watch,
            ktime_ns: ev.ktime_ns,
        },
        // Handled above (its layout differs); kept total without a panic.
        RecordKind::Close => return decode_close(record),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
