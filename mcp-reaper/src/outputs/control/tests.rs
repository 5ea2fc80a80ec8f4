#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::BufReader;

use super::server::{Line, read_line_bounded};
use super::*;
use crate::outputs::audit::{Action, ProcRef};

#[test]
fn parse_owner_accepts_pid_and_pid_fd() {
    assert_eq!(parse_owner("123"), Ok((123, None)));
    assert_eq!(parse_owner("123:5"), Ok((123, Some(5))));
    assert_eq!(parse_owner("4194304:0"), Ok((4_194_304, Some(0))));
}

#[test]
fn parse_owner_rejects_junk() {
    for bad in [
        "",
        "0",
        "0:1",
        "abc",
        "12:",
        ":5",
        "1:2:3",
        "-1",
        "+5",
        "1:+2",
        " 1",
        "99999999999",
        "1:x",
    ] {
        assert!(parse_owner(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn requests_have_the_documented_wire_form() {
    let owner = Request::Release {
        target: ReleaseTarget::Owner(OwnerRef {
            pid: 123,
            fd: Some(5),
        }),
        dry_run: false,
    };
    assert_eq!(
        serde_json::to_string(&owner).unwrap(),
        r#"{"release":{"owner":{"pid":123,"fd":5}}}"#
    );
    let session: Request =
        serde_json::from_str(r#"{"release": {"session": "abc"}, "dry_run": true}"#).unwrap();
    assert_eq!(
        session,
        Request::Release {
            target: ReleaseTarget::Session("abc".into()),
            dry_run: true
        }
    );
    let status: Request = serde_json::from_str(r#"{"status": {}}"#).unwrap();
    assert_eq!(status, Request::Status);
    assert_eq!(serde_json::to_string(&status).unwrap(), r#"{"status":{}}"#);
    let no_fd: Request = serde_json::from_str(r#"{"release":{"owner":{"pid":7}}}"#).unwrap();
    assert_eq!(
        no_fd,
        Request::Release {
            target: ReleaseTarget::Owner(OwnerRef { pid: 7, fd: None }),
            dry_run: false
        }
    );
}

#[test]
fn scan_has_its_wire_form_and_is_the_only_read_only_request() {
    let scan: Request = serde_json::from_str(r#"{"scan": {}}"#).unwrap();
    assert_eq!(scan, Request::Scan);
    assert_eq!(serde_json::to_string(&scan).unwrap(), r#"{"scan":{}}"#);
    assert!(scan.is_read_only());
    assert!(!Request::Status.is_read_only());
    let release = serde_json::from_str::<Request>(r#"{"release":{"session":"a"}}"#).unwrap();
    assert!(!release.is_read_only());
}

#[test]
fn a_scan_answer_carries_the_document_as_sent() {
    let doc = r#"{"source":"daemon","trees":[]}"#;
    let raw = serde_json::value::RawValue::from_string(doc.to_owned()).unwrap();
    let line = Response::scan(raw, "m").to_line();
    assert_eq!(line.last(), Some(&b'\n'));
    let back: Response = serde_json::from_slice(&line).unwrap();
    assert_eq!(back.scan.map(|r| r.get().to_owned()).as_deref(), Some(doc));
}

#[test]
fn who_may_ask_what() {
    let own = 998;
    let group = Access {
        read_gid: Some(500),
    };
    let none = Access::default();
    let no_groups = Vec::new;
    // (uid, gid, supplementary groups, access) -> rights
    let cases: [(u32, u32, Vec<u32>, Access, Rights); 8] = [
        (0, 0, vec![], none, Rights::Full),
        (own, own, vec![], none, Rights::Full),
        (1000, 1000, vec![], none, Rights::Nothing),
        (1000, 1000, vec![500], none, Rights::Nothing),
        (1000, 500, vec![], group, Rights::ReadOnly),
        (1000, 1000, vec![4, 500], group, Rights::ReadOnly),
        (1000, 1000, vec![501], group, Rights::Nothing),
        (0, 0, vec![], group, Rights::Full),
    ];
    for (uid, gid, groups, access, want) in cases {
        let g = groups.clone();
        assert_eq!(
            rights(uid, gid, move || g, own, access),
            want,
            "uid {uid} gid {gid} groups {groups:?} {access:?}"
        );
    }
    assert_eq!(rights(7, 7, no_groups, own, group), Rights::Nothing);
}

#[test]
fn invalid_requests_are_rejected() {
    for bad in [
        r#"{}"#,
        r#"{"scan":{},"status":{}}"#,
        r#"{"scan":{},"release":{"session":"a"}}"#,
        r#"{"scan":{"all":true}}"#,
        r#"{"scan":{},"dry_run":true}"#,
        r#"{"status":{},"dry_run":true}"#,
        r#"{"scan":null}"#,
        r#"{"scan":[]}"#,
        r#"{"scan":"yes"}"#,
        r#"{"SCAN":{}}"#,
        r#""scan""#,
        r#"{"release":{"owner":{"pid":0}}}"#,
        r#"{"release":{"session":""}}"#,
        r#"{"release":{"owner":{"pid":1}},"status":{}}"#,
        r#"{"release":{"owner":{"pid":1}},"force":true}"#,
        r#"{"release":{"pid":1}}"#,
        r#"{"release":{"owner":{"pid":-1}}}"#,
        r#"[1,2]"#,
    ] {
        assert!(
            serde_json::from_str::<Request>(bad).is_err(),
            "{bad} was accepted"
        );
    }
}

#[test]
fn responses_and_exit_codes() {
    let m = MatchedTree {
        root: ProcRef {
            tgid: 1,
            start_ticks: 2,
        },
        server: "s".into(),
        state: "live".into(),
        action: Action::DryRun,
    };
    let ok = Response::matched(vec![m], "1 tree");
    let v = serde_json::to_value(&ok).unwrap();
    assert_eq!(v["matched"][0]["action"], "dry-run");
    assert_eq!(v["matched"][0]["root"]["tgid"], 1);
    assert!(v.get("error").is_none());
    assert_eq!(exit_code(&Ok(ok)), EXIT_MATCHED);
    assert_eq!(
        exit_code(&Ok(Response::matched(vec![], "none"))),
        EXIT_NO_MATCH
    );
    assert_eq!(exit_code(&Ok(Response::error("bad"))), EXIT_USAGE);
    let err = Err(ControlError::NotRunning { path: "/x".into() });
    assert_eq!(exit_code(&err), EXIT_UNREACHABLE);
    assert_eq!(
        serde_json::to_string(&Response::error("e")).unwrap(),
        r#"{"ok":false,"error":"e"}"#
    );
}

#[tokio::test]
async fn bounded_lines() {
    let data = b"short\r\nxxxxxxxxxxxxxxxx\nlast".to_vec();
    let mut r = BufReader::new(&data[..]);
    assert!(matches!(read_line_bounded(&mut r, 8).await.unwrap(), Line::Data(d) if d == b"short"));
    assert!(matches!(
        read_line_bounded(&mut r, 8).await.unwrap(),
        Line::Oversized
    ));
    assert!(matches!(read_line_bounded(&mut r, 8).await.unwrap(), Line::Data(d) if d == b"last"));
    assert!(matches!(
        read_line_bounded(&mut r, 8).await.unwrap(),
        Line::Eof
    ));
}
