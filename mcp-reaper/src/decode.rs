//! Decoding of kernel ring-buffer records.
//!
//! Owns: turning raw bytes from the ring buffer into `ProcessEvent`s, with
//! size and kind checks; a record's watch entry counts only when it names
//! the record's own process. Must never: transmute, trust a length or a kind,
//! or panic on any input; a bad record is an error the caller counts.

use mcp_reaper_common::{
    COMM_LEN, CloseEvent, ProcEvent, WatchEntry, close_flag, close_kind, kind, watch,
};

use crate::event::{CloseKind, ProcessEvent, Watch};
use crate::identity::ProcKey;

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
}

/// The record kinds userspace understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec,
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
    let ev = read_proc_event(record);
    if ev.tgid == 0 {
        return Err(DecodeError::ZeroPid);
    }
    let key = ProcKey::from_kernel(ev.tgid, ev.start_ns);
    let parent = ProcKey::from_kernel(ev.ppid, ev.parent_start_ns);
    let comm = comm_to_string(&ev.comm);
    let watch = decode_watch(&ev.watch, key);
    Ok(match kind {
        RecordKind::Exec => ProcessEvent::Exec {
            key,
            parent,
            comm,
            watch,
            ktime_ns: ev.ktime_ns,
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
mod tests {
    use super::*;
    use crate::identity::NS_PER_TICK;

    fn bytes_of(ev: &ProcEvent) -> Vec<u8> {
        // Test-side encoder, field by field, independent of the decoder.
        let mut v = Vec::new();
        v.extend(ev.kind.to_ne_bytes());
        v.extend(ev.tgid.to_ne_bytes());
        v.extend(ev.start_ns.to_ne_bytes());
        v.extend(ev.ppid.to_ne_bytes());
        v.extend(ev.exit_code.to_ne_bytes());
        v.extend(ev.parent_start_ns.to_ne_bytes());
        v.extend(ev.ktime_ns.to_ne_bytes());
        v.extend(ev.watch.root_tgid.to_ne_bytes());
        v.extend(ev.watch.flags.to_ne_bytes());
        v.extend(ev.watch.root_start_ns.to_ne_bytes());
        v.extend(ev.watch.self_start_ns.to_ne_bytes());
        v.extend(ev.comm);
        v
    }

    fn fork_event() -> ProcEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"node");
        ProcEvent {
            kind: kind::FORK,
            tgid: 4242,
            start_ns: 5_000_000_000,
            ppid: 100,
            exit_code: 0,
            parent_start_ns: 1_000_000_000,
            ktime_ns: 6_000_000_000,
            watch: WatchEntry {
                root_tgid: 4000,
                flags: watch::MEMBER,
                root_start_ns: 4_000_000_000,
                // The child's own start, as the fork program writes it.
                self_start_ns: 5_000_000_000,
            },
            comm,
        }
    }

    #[test]
    fn decodes_a_fork_with_identity_and_tree() {
        let ev = decode(&bytes_of(&fork_event())).unwrap();
        assert_eq!(
            ev,
            ProcessEvent::Fork {
                child: ProcKey::new(4242, 500),
                parent: ProcKey::new(100, 100),
                comm: "node".into(),
                watch: Watch {
                    root: Some(ProcKey::new(4000, 400)),
                    host: false
                },
                ktime_ns: 6_000_000_000,
            }
        );
    }

    #[test]
    fn truncated_oversized_and_empty_records_are_errors() {
        let good = bytes_of(&fork_event());
        assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
        assert!(matches!(
            decode(&good[..3]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::WrongSize { .. })
        ));
        let mut big = good.clone();
        big.extend([0u8; 8]);
        assert!(matches!(decode(&big), Err(DecodeError::WrongSize { .. })));
    }

    #[test]
    fn unknown_kinds_and_pid_zero_are_errors() {
        let mut ev = fork_event();
        ev.kind = 99;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::UnknownKind(99)));
        let mut ev = fork_event();
        ev.tgid = 0;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::ZeroPid));
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random garbage of every length up to 2 records.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..(2 * size_of::<ProcEvent>()) {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x & 0xff) as u8
                })
                .collect();
            let _ = decode(&buf);
        }
    }

    #[test]
    fn comm_stops_at_nul_and_survives_bad_utf8() {
        assert_eq!(comm_to_string(b"sh\0garbage"), "sh");
        assert_eq!(comm_to_string(&[0xff, b'a', 0]), "\u{fffd}a");
        assert_eq!(comm_to_string(b"sixteen_bytes_xx"), "sixteen_bytes_xx");
    }

    #[test]
    fn watch_flags_decode() {
        let mut ev = fork_event();
        ev.watch.flags = watch::HOST;
        match decode(&bytes_of(&ev)).unwrap() {
            ProcessEvent::Fork { watch, .. } => {
                assert!(watch.host);
                assert_eq!(watch.root, None);
            }
            other => panic!("expected fork, got {other:?}"),
        }
    }

    #[test]
    fn a_watch_written_for_another_process_is_no_watch() {
        // (self start in ns, event start in ns, watched?)
        let cases = [
            (5_000_000_000, 5_000_000_000, true),
            // Userspace writes ticks * NS_PER_TICK; the kernel's start has
            // sub-tick digits: the same tick is the same process.
            (500 * NS_PER_TICK, 5_009_999_999, true),
            (5_000_000_000, 5_010_000_000, false),
            (4_990_000_000, 5_000_000_000, false),
            (0, 5_000_000_000, false),
        ];
        for (self_start, start, watched) in cases {
            for k in [kind::EXEC, kind::FORK, kind::EXIT] {
                let mut ev = fork_event();
                ev.kind = k;
                ev.start_ns = start;
                ev.watch.self_start_ns = self_start;
                let got = match decode(&bytes_of(&ev)).unwrap() {
                    ProcessEvent::Exec { watch, .. }
                    | ProcessEvent::Fork { watch, .. }
                    | ProcessEvent::Exit { watch, .. } => watch,
                    other => panic!("unexpected {other:?}"),
                };
                assert_eq!(
                    got.root.is_some(),
                    watched,
                    "kind {k}, self {self_start}, start {start}"
                );
            }
        }
    }

    fn close_bytes(ev: &CloseEvent) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(ev.kind.to_ne_bytes());
        v.extend(ev.tgid.to_ne_bytes());
        v.extend(ev.start_ns.to_ne_bytes());
        v.extend(ev.ktime_ns.to_ne_bytes());
        v.extend(ev.inode.to_ne_bytes());
        v.extend(ev.peer_inode.to_ne_bytes());
        v.extend(ev.first_fd.to_ne_bytes());
        v.extend(ev.last_fd.to_ne_bytes());
        v.extend(ev.file_kind.to_ne_bytes());
        v.extend(ev.flags.to_ne_bytes());
        v.extend(ev.pipe_ends.to_ne_bytes());
        v.extend(ev._pad.to_ne_bytes());
        v
    }

    fn close_event() -> CloseEvent {
        CloseEvent {
            kind: kind::CLOSE,
            tgid: 777,
            start_ns: 3_000_000_000,
            ktime_ns: 9_000_000_000,
            inode: 123_456,
            peer_inode: 123_457,
            first_fd: 5,
            last_fd: 5,
            file_kind: close_kind::UNIX_SOCKET,
            flags: close_flag::LAST_REF | close_flag::WRITE_END,
            pipe_ends: 0,
            _pad: 0,
        }
    }

    #[test]
    fn decodes_socket_pipe_and_range_closes() {
        assert_eq!(
            decode(&close_bytes(&close_event())).unwrap(),
            ProcessEvent::Close {
                key: ProcKey::new(777, 300),
                fd: 5,
                inode: 123_456,
                peer_inode: 123_457,
                kind: CloseKind::UnixSocket,
                last_ref: true,
                via_dup: false,
                via_release: false,
                ktime_ns: 9_000_000_000,
            }
        );
        let mut released = close_event();
        released.flags = close_flag::LAST_REF | close_flag::RELEASE;
        released.first_fd = u32::MAX;
        released.last_fd = u32::MAX;
        match decode(&close_bytes(&released)).unwrap() {
            ProcessEvent::Close {
                via_release,
                last_ref,
                kind,
                ..
            } => {
                assert!(via_release && last_ref);
                assert_eq!(kind, CloseKind::UnixSocket);
            }
            other => panic!("expected close, got {other:?}"),
        }
        let mut pipe = close_event();
        pipe.file_kind = close_kind::PIPE;
        pipe.peer_inode = 0;
        pipe.flags = close_flag::WRITE_END | close_flag::VIA_DUP;
        pipe.pipe_ends = 2;
        match decode(&close_bytes(&pipe)).unwrap() {
            ProcessEvent::Close {
                kind,
                last_ref,
                via_dup,
                ..
            } => {
                assert_eq!(
                    kind,
                    CloseKind::Pipe {
                        write_end: true,
                        ends: 2
                    }
                );
                assert!(!last_ref);
                assert!(via_dup);
            }
            other => panic!("expected close, got {other:?}"),
        }
        let mut range = close_event();
        range.file_kind = close_kind::RANGE;
        range.first_fd = 3;
        range.last_fd = u32::MAX;
        match decode(&close_bytes(&range)).unwrap() {
            ProcessEvent::Close { fd, kind, .. } => {
                assert_eq!(fd, 3);
                assert_eq!(kind, CloseKind::Range { last_fd: u32::MAX });
            }
            other => panic!("expected close, got {other:?}"),
        }
        assert_eq!(
            decode(&close_bytes(&range)).unwrap().key(),
            ProcKey::new(777, 300)
        );
    }

    #[test]
    fn close_records_are_size_and_content_checked() {
        let good = close_bytes(&close_event());
        assert_eq!(good.len(), size_of::<CloseEvent>());
        assert!(matches!(
            decode(&good[..good.len() - 8]),
            Err(DecodeError::WrongSize {
                kind: kind::CLOSE,
                ..
            })
        ));
        let mut big = good.clone();
        big.extend([0u8; 8]);
        assert!(matches!(decode(&big), Err(DecodeError::WrongSize { .. })));
        // A close-kind header on a process-record-sized body, and the reverse.
        let mut as_proc = bytes_of(&fork_event());
        as_proc[..4].copy_from_slice(&kind::CLOSE.to_ne_bytes());
        assert!(matches!(
            decode(&as_proc),
            Err(DecodeError::WrongSize { .. })
        ));
        let mut as_close = good.clone();
        as_close[..4].copy_from_slice(&kind::FORK.to_ne_bytes());
        assert!(matches!(
            decode(&as_close),
            Err(DecodeError::WrongSize { .. })
        ));
        let mut ev = close_event();
        ev.file_kind = 9;
        assert_eq!(
            decode(&close_bytes(&ev)),
            Err(DecodeError::UnknownCloseKind(9))
        );
        let mut ev = close_event();
        ev.tgid = 0;
        assert_eq!(decode(&close_bytes(&ev)), Err(DecodeError::ZeroPid));
        let mut ev = close_event();
        ev.file_kind = close_kind::RANGE;
        ev.first_fd = 10;
        ev.last_fd = 2;
        assert!(matches!(
            decode(&close_bytes(&ev)),
            Err(DecodeError::BadRange { .. })
        ));
    }

    #[test]
    fn close_garbage_never_panics() {
        let mut x: u64 = 0xD1B5_4A32_D192_ED03;
        for len in 0..(2 * size_of::<CloseEvent>()) {
            for _ in 0..4 {
                let mut buf: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x & 0xff) as u8
                    })
                    .collect();
                if buf.len() >= 4 {
                    buf[..4].copy_from_slice(&kind::CLOSE.to_ne_bytes());
                }
                let _ = decode(&buf);
            }
        }
    }
}
