#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn record_with(cmdline: &str) -> AuditRecord {
    let mut r = AuditRecord::new(AuditEvent::Reap).with_action(Action::Enforce, "peer released");
    r.tree = Some(AuditTree {
        root: ProcRef {
            tgid: 10,
            start_ticks: 20,
        },
        server: "server-everything".into(),
        host: None,
        session_id: Some("s-1".into()),
        owner_fds: vec![AuditOwnerFd {
            pid: 9,
            start_ticks: 3,
            fd: 5,
            inode: 77,
        }],
        chain: vec![ProcRef {
            tgid: 9,
            start_ticks: 1,
        }],
        released_link: None,
    });
    r.members = vec![AuditMember::new(10, 20, cmdline)];
    r.signals = vec![AuditSignal {
        pid: 10,
        signal: "SIGTERM".into(),
    }];
    r.timings = Some(AuditTimings {
        detected_ms: Some(1),
        confirmed_ms: None,
        reaped_ms: Some(30),
    });
    r.outcome = Some("reaped".into());
    r
}

#[test]
fn timestamps_are_rfc3339_utc_with_micros() {
    let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_micros(s * 1_000_000 + us);
    assert_eq!(rfc3339_micros(at(0, 0)), "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        rfc3339_micros(at(951_782_400, 5)),
        "2000-02-29T00:00:00.000005Z"
    );
    assert_eq!(
        rfc3339_micros(at(1_700_000_000, 123_456)),
        "2023-11-14T22:13:20.123456Z"
    );
    assert_eq!(
        rfc3339_micros(at(4_107_542_399, 999_999)),
        "2100-02-28T23:59:59.999999Z"
    );
    // Nanoseconds are truncated, never rounded up into the next second.
    assert_eq!(
        rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(1_999_999_999)),
        "1970-01-01T00:00:01.999999Z"
    );
}

#[test]
fn ids_are_unique_within_a_run() {
    let a = AuditRecord::new(AuditEvent::Startup);
    let b = AuditRecord::new(AuditEvent::Startup);
    assert_ne!(a.id, b.id);
    assert_eq!(a.id.split('-').next(), b.id.split('-').next());
}

#[test]
fn schema_names_and_optional_fields() {
    let r = record_with("node server.js");
    let v: serde_json::Value = serde_json::from_slice(&r.to_line().unwrap()).unwrap();
    assert_eq!(v["event"], "reap");
    assert_eq!(v["action"], "enforce");
    assert_eq!(v["tree"]["host"], serde_json::Value::Null);
    assert_eq!(v["tree"]["owner_fds"][0]["fd"], 5);
    assert_eq!(v["timings"]["reaped_ms"], 30);
    assert!(v["timings"].get("confirmed_ms").is_none());
    assert!(v.get("members_omitted").is_none());
    let s = AuditRecord::new(AuditEvent::Startup);
    let v: serde_json::Value = serde_json::from_slice(&s.to_line().unwrap()).unwrap();
    assert!(v.get("tree").is_none() && v.get("timings").is_none());
    let dry = serde_json::to_value(Action::DryRun).unwrap();
    assert_eq!(dry, "dry-run");
    let rr = serde_json::to_value(AuditEvent::ReleaseRequest).unwrap();
    assert_eq!(rr, "release-request");
}

#[test]
fn hostile_cmdline_cannot_break_a_line() {
    let hostile = "node x.js\n{\"event\":\"startup\"}\r\n\"quoted\" \u{2028}\u{202e}evil\u{7}\\";
    let mut raw = hostile.as_bytes().to_vec();
    raw.extend_from_slice(b"\0--flag\0\xff\xfe\0");
    let mut r = record_with(hostile);
    r.members.push(AuditMember::from_raw(11, 21, &raw));
    r.members
        .push(AuditMember::new(12, 22, &"A".repeat(100_000)));
    let line = r.to_line().unwrap();
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(line.last(), Some(&b'\n'));
    let text = std::str::from_utf8(&line).unwrap();
    assert!(!text.contains('\u{2028}') && !text.contains('\u{202e}'));
    let back: AuditRecord = serde_json::from_slice(&line).unwrap();
    assert_eq!(back, r);
    assert!(back.members[0].cmdline.contains("\\n{\"event\""));
    assert!(back.members[1].cmdline.contains('\u{fffd}'));
    assert!(back.members[1].cmdline.contains(" --flag "));
    assert!(back.members[2].cmdline.len() <= MAX_CMDLINE_BYTES);
    assert!(back.members[2].cmdline.ends_with("[truncated]"));
}

#[test]
fn bounded_text_cuts_on_char_boundaries() {
    let s = "é".repeat(50);
    let out = bounded_text(&s, 21);
    assert!(out.len() <= 21 && out.ends_with("[truncated]"), "{out}");
    assert_eq!(bounded_text("a\\nb", 100), "a\\nb");
    assert_eq!(bounded_text("a\nb", 100), "a\\nb");
}

#[test]
fn rotation_keeps_keep_files_and_every_line_parses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut probe = record_with("node server.js");
    probe.id = "test-0000".into();
    let one = probe.to_line().unwrap().len() as u64;
    let max = one * 3 + 1;
    let mut log = AuditLog::open(AuditTarget::File {
        path: path.clone(),
        max_bytes: max,
        keep: 2,
    })
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        // Fixed-width ids: every line has the same length.
        let mut r = record_with("node server.js");
        r.id = format!("test-{i:04}");
        ids.push(r.id.clone());
        log.write(&r).unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
    // Newest last: .2, .1, current hold the last records in order.
    let mut seen = Vec::new();
    for name in ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(text.len() as u64 <= max, "{name} is {} bytes", text.len());
        for line in text.lines() {
            let r: AuditRecord = serde_json::from_str(line).unwrap();
            seen.push(r.id);
        }
    }
    assert_eq!(seen, ids[ids.len() - seen.len()..]);
    assert_eq!(seen.len(), 3 + 3 + 2);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn sink_writes_off_thread_and_counts_failures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let log = AuditLog::open(AuditTarget::File {
        path: path.clone(),
        max_bytes: 0,
        keep: 0,
    })
    .unwrap();
    let sink = AuditSink::spawn(log, 16).unwrap();
    for _ in 0..5 {
        sink.record(record_with("x"));
    }
    assert!(sink.flush(Duration::from_secs(5)));
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
    assert_eq!(sink.stats().written, 5);

    // A target that fails every write: /dev/full.
    let full = AuditLog::open(AuditTarget::File {
        path: "/dev/full".into(),
        max_bytes: 0,
        keep: 0,
    });
    if let Ok(full) = full {
        let sink = AuditSink::spawn(full, 4).unwrap();
        sink.record(record_with("x"));
        sink.record(record_with("y"));
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(sink.stats().write_failures, 2);
        sink.shutdown();
        sink.record(record_with("z"));
        assert_eq!(sink.stats().dropped, 1);
    }
    sink.shutdown();
}

#[test]
fn off_target_writes_nothing() {
    let mut log = AuditLog::open(AuditTarget::Off).unwrap();
    log.write(&record_with("x")).unwrap();
}
