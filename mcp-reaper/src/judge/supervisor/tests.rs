use super::check::StdioLink;
use super::*;
use crate::judge::trees::{OwnerFd, TreeState};

fn record(root: u32, owner: (u32, u32), session: Option<&str>) -> TreeRecord {
    TreeRecord {
        root: ProcKey::new(root, 1),
        server: "s".into(),
        host: Some(ProcKey::new(owner.0, 1)),
        host_rule: "h".into(),
        session_id: session.map(str::to_string),
        owner_fds: vec![OwnerFd {
            pid: owner.0,
            start_ticks: 1,
            fd: owner.1,
            inode: 0,
        }],
        released_by: vec![],
        state: TreeState::Live,
        reason: None,
        orphan_since: None,
        owners_seen: vec![],
        stdio_inodes: vec![],
        chain: vec![],
        released_link: None,
        reaping: false,
        last_decision: None,
    }
}

#[test]
fn a_tree_waiting_for_queued_records_is_neither_reaped_nor_forgotten_early() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str("presets = []\n[policy]\ngrace = \"0s\"\n", "t").unwrap();
    let mut s = Supervisor::new(Arc::new(config), dir.path().into());
    s.wait_for_drain_marks();
    let tracker = Tracker::new(1024);
    let mut t = record(10, (1, 5), None);
    t.state = TreeState::Orphaned;
    t.reason = Some("peer-released".into());
    t.orphan_since = Some(Instant::now() - Duration::from_secs(60));
    s.trees.insert(t.root, t);
    s.recheck.insert(ProcKey::new(10, 1));
    // Nothing of it is alive in this /proc, but no drain mark has come:
    // kept, and not enforced (it used to be reaped again and again).
    for _ in 0..3 {
        assert!(s.tick(&tracker, false).is_empty());
        assert!(s.tree(ProcKey::new(10, 1)).is_some());
    }
    // A mark newer than the first empty look: forgotten, still no reap.
    s.drained_to(u64::MAX);
    assert!(s.tick(&tracker, false).is_empty());
    assert!(s.tree(ProcKey::new(10, 1)).is_none());
}

#[test]
fn enforcing_needs_the_same_verdict_on_the_last_look() {
    let mut now = record(10, (1, 5), None);
    let cases = [
        // (decided on, now, confirmed)
        (
            (TreeState::Orphaned, Some("peer-released")),
            (TreeState::Orphaned, Some("host-exited")),
            true,
        ),
        (
            (TreeState::Orphaned, Some("peer-released")),
            (TreeState::Live, None),
            false,
        ),
        (
            (TreeState::Orphaned, Some("peer-released")),
            (TreeState::Unknown, Some("scan-incomplete")),
            false,
        ),
        (
            (TreeState::Suspect, Some("idle")),
            (TreeState::Suspect, Some("idle")),
            true,
        ),
        (
            (TreeState::Suspect, Some("superseded")),
            (TreeState::Suspect, Some("superseded")),
            true,
        ),
        // Used again since the decision, or the newer tree went idle.
        (
            (TreeState::Suspect, Some("idle")),
            (TreeState::Live, None),
            false,
        ),
        (
            (TreeState::Suspect, Some("superseded")),
            (TreeState::Suspect, Some("idle")),
            false,
        ),
        (
            (TreeState::Suspect, Some("idle")),
            (TreeState::Unknown, Some("x")),
            false,
        ),
        ((TreeState::Live, None), (TreeState::Live, None), false),
        (
            (TreeState::Unknown, None),
            (TreeState::Orphaned, Some("remnant")),
            false,
        ),
    ];
    for ((was, was_reason), (is, is_reason), want) in cases {
        now.state = is;
        now.reason = is_reason.map(str::to_string);
        assert_eq!(
            verdict::still_confirmed(was, was_reason, now.state, now.reason.as_deref()),
            want,
            "{was:?} {was_reason:?} -> {is:?} {is_reason:?}"
        );
    }
}

// A table of cases over the release rules: long by nature.
#[test]
fn a_release_stands_only_while_nobody_else_holds_the_far_end() {
    let host = ProcKey::new(7, 100);
    let helper = ProcKey::new(8, 120);
    let recycled = ProcKey::new(7, 500);
    let r = |s: &str| Some(s.to_string());
    let orphaned = (TreeState::Orphaned, r(SESSION_ENDED), true, None);
    let cases = [
        // Not released: the check's verdict, whatever it is.
        (
            vec![],
            TreeState::Live,
            None,
            vec![host],
            (TreeState::Live, None, false, None),
        ),
        // Released, held only by the host that said so.
        (
            vec![host],
            TreeState::Live,
            None,
            vec![host],
            orphaned.clone(),
        ),
        (
            vec![host],
            TreeState::Suspect,
            r("idle"),
            vec![host],
            orphaned.clone(),
        ),
        // The end was handed to a helper: withdrawn.
        (
            vec![host],
            TreeState::Live,
            None,
            vec![host, helper],
            (TreeState::Live, None, false, Some(helper)),
        ),
        (
            vec![host],
            TreeState::Live,
            None,
            vec![helper],
            (TreeState::Live, None, false, Some(helper)),
        ),
        // A recycled PID is another process: withdrawn.
        (
            vec![host],
            TreeState::Live,
            None,
            vec![recycled],
            (TreeState::Live, None, false, Some(recycled)),
        ),
        // The kernel says the far end is gone: orphaned by its reason.
        (
            vec![host],
            TreeState::Orphaned,
            r("peer-released"),
            vec![],
            (TreeState::Orphaned, r("peer-released"), true, None),
        ),
        // Evidence incomplete: unknown, never reaped; the release waits.
        (
            vec![host],
            TreeState::Unknown,
            r("scan-incomplete"),
            vec![],
            (
                TreeState::Unknown,
                r("session-ended-unconfirmed: scan-incomplete"),
                true,
                None,
            ),
        ),
        (
            vec![host],
            TreeState::Live,
            None,
            vec![],
            (
                TreeState::Unknown,
                r("session-ended-unconfirmed"),
                true,
                None,
            ),
        ),
    ];
    for (by, state, reason, holders, want) in cases {
        let got = judge_release(&by, state, reason.clone(), &holders);
        assert_eq!(
            (got.state, got.reason, got.keep, got.withdrawn_by),
            want,
            "{by:?} {state:?} {reason:?} {holders:?}"
        );
    }
}

fn close(inode: u64, peer_inode: u64, kind: CloseKind) -> ProcessEvent {
    ProcessEvent::Close {
        key: ProcKey::new(1, 1),
        fd: 9,
        inode,
        peer_inode,
        kind,
        last_ref: true,
        via_dup: false,
        via_release: false,
        ktime_ns: 0,
    }
}

#[test]
fn a_close_rechecks_only_the_tree_whose_stdio_it_names() {
    let mut t = record(10, (1, 5), None);
    t.stdio_inodes = vec![100, 200];
    let sock = |ino, peer| close(ino, peer, CloseKind::UnixSocket);
    let pipe = |ino| {
        close(
            ino,
            0,
            CloseKind::Pipe {
                write_end: true,
                ends: 1,
            },
        )
    };
    // The host's end of the tree's socket: its peer is the tree's stdin.
    assert!(close_may_release(&sock(99, 100), &t));
    assert!(close_may_release(&sock(99, 200), &t));
    // Another socket of the host, and one whose peer is already gone.
    assert!(!close_may_release(&sock(100, 300), &t));
    assert!(!close_may_release(&sock(98, 0), &t));
    // A pipe is the same inode on both ends.
    assert!(close_may_release(&pipe(200), &t));
    assert!(!close_may_release(&pipe(201), &t));
    // close_range did not look at files: every tree of the host.
    assert!(close_may_release(
        &close(0, 0, CloseKind::Range { last_fd: 20 }),
        &t
    ));
    // A relay chain: the host closes its own link, not the tree's.
    let mut chained = t.clone();
    chained.chain = vec![ProcKey::new(1, 1), ProcKey::new(2, 1)];
    assert!(close_may_release(&sock(5, 6), &chained));
    // Not checked yet: stdio unknown, so any close may be the one.
    let mut fresh = t.clone();
    fresh.stdio_inodes.clear();
    assert!(close_may_release(&pipe(7), &fresh));
}

#[test]
fn stdio_links_are_read_from_proc_fd_text() {
    assert_eq!(
        StdioLink::parse("socket:[4242]"),
        Some(StdioLink::Socket(4242))
    );
    assert_eq!(StdioLink::parse("pipe:[17]"), Some(StdioLink::Pipe(17)));
    for other in ["/dev/null", "anon_inode:[eventfd]", "socket:[x]", "pipe:[1"] {
        assert_eq!(StdioLink::parse(other), None, "{other}");
    }
}

#[test]
fn a_close_that_names_a_tree_schedules_a_check_now_and_two_follow_ups() {
    let mut s = Supervisor::new(Arc::new(Config::default()), "/proc".into());
    let tracker = Tracker::new(1024);
    let mut t = record(10, (1, 5), None);
    t.stdio_inodes = vec![100];
    s.trees.insert(t.root, t);
    let before = Instant::now();
    // Another socket of the same host: nothing to do.
    s.observe(&close(98, 300, CloseKind::UnixSocket), &tracker);
    assert!(!s.has_due_checks());
    assert_eq!(s.next_followup(), None);
    // The tree's own socket.
    s.observe(&close(99, 100, CloseKind::UnixSocket), &tracker);
    assert!(s.recheck.contains(&ProcKey::new(10, 1)));
    let dues: Vec<Duration> = s
        .followups
        .iter()
        .map(|&(due, root)| {
            assert_eq!(root, ProcKey::new(10, 1));
            due.duration_since(before)
        })
        .collect();
    assert_eq!(dues.len(), CLOSE_FOLLOWUPS.len());
    for (due, delay) in dues.iter().zip(CLOSE_FOLLOWUPS) {
        assert!(*due >= delay, "{due:?} < {delay:?}");
    }
    assert!(
        s.next_followup()
            .is_some_and(|d| d >= before + CLOSE_FOLLOWUPS[0])
    );
}
