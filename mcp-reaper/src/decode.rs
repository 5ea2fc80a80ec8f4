//! Decoding of kernel ring-buffer records.
//!
//! Owns: turning raw bytes from the ring buffer into `ProcessEvent`s, with
//! size and kind checks. Must never: transmute, trust a length or a kind,
//! or panic on any input; a bad record is an error the caller counts.

use mcp_reaper_common::{COMM_LEN, ProcEvent, WatchEntry, kind, watch};

use crate::event::{ProcessEvent, Watch};
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
}

/// The record kinds userspace understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec,
    Fork,
    Exit,
}

impl TryFrom<u32> for RecordKind {
    type Error = DecodeError;
    fn try_from(v: u32) -> Result<Self, DecodeError> {
        match v {
            kind::EXEC => Ok(Self::Exec),
            kind::FORK => Ok(Self::Fork),
            kind::EXIT => Ok(Self::Exit),
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
        },
        comm,
    }
}

/// A comm as text: up to the first NUL, invalid UTF-8 replaced.
pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn decode_watch(w: &WatchEntry) -> Watch {
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
    let need = size_of::<ProcEvent>();
    // The ring buffer rounds records up to 8 bytes; ProcEvent is a multiple
    // of 8, so anything but an exact size is a layout mismatch.
    if record.len() != need {
        return Err(DecodeError::WrongSize {
            kind: raw_kind,
            got: record.len(),
            need,
        });
    }
    let ev = read_proc_event(record);
    if ev.tgid == 0 {
        return Err(DecodeError::ZeroPid);
    }
    let key = ProcKey::from_kernel(ev.tgid, ev.start_ns);
    let parent = ProcKey::from_kernel(ev.ppid, ev.parent_start_ns);
    let comm = comm_to_string(&ev.comm);
    let watch = decode_watch(&ev.watch);
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
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
}
