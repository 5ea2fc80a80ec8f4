//! What a process controls in its /proc files, read back through the
//! whole reader: a comm or command line of any bytes, any length, with
//! fake `)` and newlines, stat lines no kernel writes, and command lines
//! made to forge a log line. Each case reads a fake /proc and checks that
//! the result is a bounded, faithful value or a `Malformed` error, never a
//! panic, and that the display escapes what the data keeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{
    display::{display_cmdline, needs_escape},
    error::ProcError,
    fake::{FakeProc, Fixture, stat_line},
    info::{MAX_CMDLINE_BYTES, ProcInfo},
    parse::parse_cmdline,
    read::{is_alive, read_key, read_process},
    walk::snapshot,
};
use crate::procs::identity::ProcKey;

#[test]
fn comm_with_parens_and_spaces_uses_the_last_paren() {
    let fake = FakeProc::new();
    fake.add(Fixture {
        comm: b"a) b (c",
        ..Fixture::default()
    });
    // A comm that imitates the fields after it: state Z, ppid 1.
    fake.add(Fixture {
        pid: 101,
        comm: b"x) Z 1 1 1 0 (",
        ppid: 100,
        start: 6000,
        ..Fixture::default()
    });

    let p = read_process(fake.root(), 100).unwrap();
    assert_eq!(p.comm, "a) b (c");
    assert_eq!((p.state, p.ppid, p.key.start_ticks), ('S', 1, 5000));

    let q = read_process(fake.root(), 101).unwrap();
    assert_eq!(q.comm, "x) Z 1 1 1 0 (");
    assert_eq!((q.state, q.ppid, q.key.start_ticks), ('S', 100, 6000));
    assert!(is_alive(fake.root(), q.key));
}

#[test]
fn comm_with_newline_and_non_utf8() {
    let fake = FakeProc::new();
    fake.add(Fixture {
        comm: b"ev\nil\xff",
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 100).unwrap();
    assert_eq!(p.comm, "ev\nil\u{fffd}");
    assert_eq!(p.key, ProcKey::new(100, 5000));
}

#[test]
fn non_utf8_cmdline_is_converted_lossily() {
    let fake = FakeProc::new();
    fake.add(Fixture {
        cmdline: b"py\xfe\xffthon\0-c\0\xc3\0",
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 100).unwrap();
    assert_eq!(p.cmdline, ["py\u{fffd}\u{fffd}thon", "-c", "\u{fffd}"]);
    assert!(!p.cmdline_truncated);
}

#[test]
fn long_cmdline_is_bounded_and_marked() {
    let fake = FakeProc::new();
    let mut long = Vec::new();
    for i in 0..(128 * 1024 / 8) {
        long.extend_from_slice(format!("arg{i:04}").as_bytes());
        long.push(0);
    }
    assert!(long.len() >= 128 * 1024);
    fake.add(Fixture {
        cmdline: &long,
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 100).unwrap();
    assert!(p.cmdline_truncated);
    let stored: usize = p.cmdline.iter().map(|a| a.len() + 1).sum();
    assert!(stored <= MAX_CMDLINE_BYTES, "{stored}");
    assert!(stored > MAX_CMDLINE_BYTES - 16, "{stored}");
    assert_eq!(p.cmdline[0], "arg0000");
    assert!(display_cmdline(&p).ends_with(" [truncated]"));
}

#[test]
fn long_invalid_cmdline_stays_within_budget_after_conversion() {
    let fake = FakeProc::new();
    let junk = vec![0xffu8; 3 * MAX_CMDLINE_BYTES];
    fake.add(Fixture {
        cmdline: &junk,
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 100).unwrap();
    assert!(p.cmdline_truncated);
    assert_eq!(p.cmdline.len(), 1);
    assert!(p.cmdline[0].len() < MAX_CMDLINE_BYTES);
    assert!(p.cmdline[0].chars().all(|c| c == '\u{fffd}'));
}

#[test]
fn cmdline_exactly_at_the_limit_is_not_truncated() {
    let fake = FakeProc::new();
    let mut exact = vec![b'a'; MAX_CMDLINE_BYTES - 1];
    exact.push(0);
    fake.add(Fixture {
        cmdline: &exact,
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 100).unwrap();
    assert!(!p.cmdline_truncated);
    assert_eq!(p.cmdline[0].len(), MAX_CMDLINE_BYTES - 1);
}

#[test]
fn empty_arguments_are_kept_and_kernel_threads_have_none() {
    assert_eq!(
        parse_cmdline(b"sh\0\0-c\0\0", false).0,
        ["sh", "", "-c", ""]
    );
    // setproctitle-style: one string, no terminator.
    assert_eq!(parse_cmdline(b"nginx: worker", false).0, ["nginx: worker"]);

    let fake = FakeProc::new();
    fake.add(Fixture {
        pid: 2,
        comm: b"kthreadd",
        ppid: 0,
        cmdline: b"",
        rss_kib: 0,
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 2).unwrap();
    assert!(p.cmdline.is_empty());
    assert_eq!(p.ppid, 0);
    assert_eq!(p.exe, None);
    assert_eq!(display_cmdline(&p), "[kthreadd]");
}

#[test]
fn display_escapes_what_could_forge_a_log_line() {
    let fake = FakeProc::new();
    fake.add(Fixture {
        cmdline: b"node\0x\nlevel=error msg=\"forged\"\0a\x1b[2Jb\0\0tab\there\0back\\n\0rtl\xe2\x80\xaeexe\0",
        ..Fixture::default()
    });
    let p = read_process(fake.root(), 100).unwrap();
    // The data keeps the raw characters...
    assert_eq!(p.cmdline[1], "x\nlevel=error msg=\"forged\"");
    // ...the display cannot break a line, clear a screen or reorder text.
    let shown = display_cmdline(&p);
    assert!(!shown.chars().any(needs_escape), "{shown:?}");
    assert_eq!(
        shown,
        r#"node "x\nlevel=error msg=\"forged\"" a\u{1b}[2Jb "" "tab\there" back\\n rtl\u{202e}exe"#
    );

    let kthread = ProcInfo {
        cmdline: Vec::new(),
        comm: "k\r\nX".to_owned(),
        ..p
    };
    assert_eq!(display_cmdline(&kthread), r"[k\r\nX]");
}

#[test]
fn garbage_stat_files_are_errors_not_panics() {
    let cases: &[&[u8]] = &[
        b"",
        b"\n",
        b"100",
        b"100 (trunc",
        b"100 (trunc)",
        b"100 (trunc)\n",
        b"100 (x) ",
        b"100 (x) S",
        b"100 (x) S 1 100 100",
        b") 100 (x",
        b"(x) S 1 2 3",
        b"100(x) S 1 2 3",
        b"\xc3\xa9(x) S",
        b"100 (x)\xc3\xa9 S 1",
        b"100 (x) S one 2 3",
        b"100 (x) S -1 100 100 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 5000 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        b"\xff\xfe\xfd\xfc",
    ];
    for (i, stat) in cases.iter().enumerate() {
        let fake = FakeProc::new();
        fake.add(Fixture::default());
        fake.write(100, "stat", stat);
        let err = read_process(fake.root(), 100).expect_err(&format!("case {i}"));
        assert!(
            matches!(err, ProcError::Malformed { pid: 100, .. }),
            "case {i}: {err}"
        );
        assert_eq!(read_key(fake.root(), 100), None, "case {i}");
        assert!(!is_alive(fake.root(), ProcKey::new(100, 5000)), "case {i}");
        let snap = snapshot(fake.root());
        assert_eq!((snap.procs.len(), snap.skipped), (0, 1), "case {i}");
    }
}

#[test]
fn negative_ppid_and_wrong_pid_are_malformed() {
    let fake = FakeProc::new();
    fake.add(Fixture {
        ppid: -4,
        ..Fixture::default()
    });
    let err = read_process(fake.root(), 100).unwrap_err();
    assert!(err.to_string().contains("negative ppid"), "{err}");

    let fake = FakeProc::new();
    fake.add(Fixture::default());
    fake.write(100, "stat", &stat_line(101, b"node", 'S', 1, 5000));
    let err = read_process(fake.root(), 100).unwrap_err();
    assert!(err.to_string().contains("names pid 101"), "{err}");
}
