//! Decoding over hand-encoded records: every kind, every size and field
//! check, and garbage.

use super::*;
use crate::procs::identity::NS_PER_TICK;

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

/// An exec-with-argv record: the exec header, then uid, length, flags,
/// padding and the command-line bytes (test-side encoder).
fn argv_bytes(argv: &[u8], len: u32, flags: u32) -> Vec<u8> {
    let mut head = fork_event();
    head.kind = kind::EXEC_ARGV;
    let mut v = bytes_of(&head);
    v.extend(1000u32.to_ne_bytes());
    v.extend(len.to_ne_bytes());
    v.extend(flags.to_ne_bytes());
    v.extend(0u32.to_ne_bytes());
    let mut buf = [0u8; ARGV_LEN];
    buf[..argv.len()].copy_from_slice(argv);
    v.extend(buf);
    v
}

fn image_of(record: &[u8]) -> Result<Option<ExecImage>, DecodeError> {
    match decode(record)? {
        ProcessEvent::Exec { image, key, .. } => {
            assert_eq!(key, ProcKey::new(4242, 500));
            Ok(image)
        }
        other => panic!("expected an exec, got {other:?}"),
    }
}

#[test]
fn an_exec_of_a_watched_process_carries_its_command_line() {
    let argv = b"sh\0-c\0sleep 1 & exit\0";
    let image = image_of(&argv_bytes(argv, argv.len() as u32, 0)).unwrap();
    assert_eq!(
        image,
        Some(ExecImage {
            uid: 1000,
            cmdline: vec!["sh".into(), "-c".into(), "sleep 1 & exit".into()],
            truncated: false,
        })
    );
    // Cut by the kernel: the last argument has no NUL and is kept.
    let cut = b"node\0/srv/mcp-ser";
    let image = image_of(&argv_bytes(cut, cut.len() as u32, argv_flag::TRUNCATED)).unwrap();
    assert_eq!(
        image.map(|i| (i.cmdline, i.truncated)),
        Some((vec!["node".into(), "/srv/mcp-ser".into()], true))
    );
}

#[test]
fn an_unread_or_impossible_command_line_is_no_image_or_an_error() {
    assert_eq!(
        image_of(&argv_bytes(b"", 0, argv_flag::UNREAD)).unwrap(),
        None
    );
    // An empty command line (a process that exec'd with no argv).
    assert_eq!(
        image_of(&argv_bytes(b"", 0, 0)).unwrap().map(|i| i.cmdline),
        Some(Vec::new())
    );
    let too_long = ARGV_LEN as u32 + 1;
    assert_eq!(
        decode(&argv_bytes(b"x", too_long, 0)),
        Err(DecodeError::BadArgvLen(too_long))
    );
    let good = argv_bytes(b"x\0", 2, 0);
    assert!(matches!(
        decode(&good[..good.len() - 8]),
        Err(DecodeError::WrongSize { .. })
    ));
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

/// Deterministic xorshift noise.
struct Noise(u64);

impl Noise {
    fn byte(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 & 0xff) as u8
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
    fn word(&mut self) -> u32 {
        u32::from_ne_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

fn put(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn word_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

/// What the record format says of `b`, written from the shared layout
/// rather than from the decoder: the error it must be rejected with, or
/// the tgid of the process it must decode to.
fn verdict(b: &[u8]) -> Result<u32, DecodeError> {
    use std::mem::offset_of;
    if b.len() < 4 {
        return Err(DecodeError::Truncated {
            got: b.len(),
            need: 4,
        });
    }
    let k = word_at(b, 0);
    let need = match k {
        kind::EXEC | kind::FORK | kind::EXIT => size_of::<ProcEvent>(),
        kind::CLOSE => size_of::<CloseEvent>(),
        kind::EXEC_ARGV => size_of::<ExecArgvEvent>(),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if b.len() != need {
        return Err(DecodeError::WrongSize {
            kind: k,
            got: b.len(),
            need,
        });
    }
    if k == kind::CLOSE {
        let tgid = word_at(b, offset_of!(CloseEvent, tgid));
        let (first, last) = (
            word_at(b, offset_of!(CloseEvent, first_fd)),
            word_at(b, offset_of!(CloseEvent, last_fd)),
        );
        return match word_at(b, offset_of!(CloseEvent, file_kind)) {
            _ if tgid == 0 => Err(DecodeError::ZeroPid),
            close_kind::UNIX_SOCKET | close_kind::PIPE => Ok(tgid),
            close_kind::RANGE if first <= last => Ok(tgid),
            close_kind::RANGE => Err(DecodeError::BadRange { first, last }),
            other => Err(DecodeError::UnknownCloseKind(other)),
        };
    }
    if k == kind::EXEC_ARGV {
        let argv_len = word_at(b, offset_of!(ExecArgvEvent, argv_len));
        if argv_len as usize > ARGV_LEN {
            return Err(DecodeError::BadArgvLen(argv_len));
        }
    }
    match word_at(b, offset_of!(ProcEvent, tgid)) {
        0 => Err(DecodeError::ZeroPid),
        tgid => Ok(tgid),
    }
}

/// Noise of `len` bytes, then (if long enough) shaped by `shape`: 0 leaves
/// it, 1..=5 set a known kind, and higher shapes also make the fields the
/// checks read valid or not (tgid 0, a known close kind, a fitting argv
/// length), so every check is reached, on both sides.
fn garbage(noise: &mut Noise, len: usize, shape: u32) -> Vec<u8> {
    use std::mem::offset_of;
    let mut b = noise.bytes(len);
    let kinds = [
        kind::EXEC,
        kind::FORK,
        kind::EXIT,
        kind::CLOSE,
        kind::EXEC_ARGV,
    ];
    if len < 4 || shape == 0 {
        return b;
    }
    let k = kinds[(shape as usize - 1) % kinds.len()];
    put(&mut b, 0, k);
    let fits = |off: usize| off + 4 <= b.len();
    match (k, shape / 6) {
        (kind::CLOSE, 1) if fits(offset_of!(CloseEvent, file_kind)) => {
            let valid = [close_kind::UNIX_SOCKET, close_kind::PIPE, close_kind::RANGE];
            let fk = valid[noise.byte() as usize % valid.len()];
            put(&mut b, offset_of!(CloseEvent, file_kind), fk);
        }
        (kind::EXEC_ARGV, 1) if fits(offset_of!(ExecArgvEvent, argv_len)) => {
            let n = noise.word() % (ARGV_LEN as u32 + 1);
            put(&mut b, offset_of!(ExecArgvEvent, argv_len), n);
        }
        (_, 2) if fits(8) => put(&mut b, offset_of!(ProcEvent, tgid), 0),
        _ => {}
    }
    b
}

#[test]
fn garbage_is_rejected_for_what_is_wrong_with_it_and_sound_records_decode() {
    let sizes = [
        size_of::<ProcEvent>(),
        size_of::<CloseEvent>(),
        size_of::<ExecArgvEvent>(),
    ];
    let mut lens: Vec<usize> = (0..2 * size_of::<ProcEvent>()).collect();
    for n in sizes {
        lens.extend([n - 1, n, n + 1, n + 8]);
    }
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for &len in &lens {
        // Exact sizes get more tries: they reach the content checks.
        let tries = if sizes.contains(&len) { 64 } else { 2 };
        for shape in 0..18 {
            for _ in 0..tries {
                let b = garbage(&mut noise, len, shape);
                let want = verdict(&b);
                let got = decode(&b);
                match (&want, &got) {
                    (Ok(tgid), Ok(ev)) => assert_eq!(ev.key().tgid, *tgid, "{b:?}"),
                    (Err(w), Err(g)) => assert_eq!(g, w, "{b:?}"),
                    _ => panic!("{len} bytes, shape {shape}: want {want:?}, got {got:?}: {b:?}"),
                }
                let class = match &want {
                    Ok(_) => "decoded".to_owned(),
                    Err(e) => format!("{e:?}")
                        .split([' ', '('])
                        .next()
                        .unwrap()
                        .to_owned(),
                };
                *seen.entry(class).or_default() += 1;
            }
        }
    }
    // Not vacuous: every rejection was met, and sound records decoded.
    for class in [
        "decoded",
        "Truncated",
        "WrongSize",
        "UnknownKind",
        "ZeroPid",
        "UnknownCloseKind",
        "BadRange",
        "BadArgvLen",
    ] {
        assert!(
            seen.get(class).copied().unwrap_or(0) >= 3,
            "{class}: {seen:?}"
        );
    }
}
