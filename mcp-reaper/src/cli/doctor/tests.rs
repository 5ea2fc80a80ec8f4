//! The doctor's unit tests: the parsers, the checks built from made-up
//! values, the tier verdict over made-up checks, the report's shapes, and
//! (as root, with the kernel programs built) a full `diagnose`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use super::{
    checks::{
        NEEDS_PRIVILEGE, TRACEFS_EVENTS, check_kernel, check_pid_namespace, check_privileges,
        privileges,
    },
    detail::{MAX_DETAIL, one_line},
    verdict::short_failure,
};

fn c(id: CheckId, status: Status, detail: &str) -> Check {
    Check::new(id, status, detail)
}

#[test]
fn cap_eff_decodes_partial_and_empty_masks() {
    let bpf_perfmon = (1u64 << 39) | (1 << 38);
    let caps = decode_caps(bpf_perfmon);
    assert!(caps["CAP_BPF"] && caps["CAP_PERFMON"]);
    assert!(!caps["CAP_SYS_ADMIN"] && !caps["CAP_KILL"]);
    let p = privileges(1000, Some(bpf_perfmon));
    assert!(p.can_load_bpf());
    assert!(!privileges(1000, Some(0)).can_load_bpf());
    assert!(privileges(1000, Some(1 << 21)).can_load_bpf());
    // No CapEff line: fall back to euid.
    assert!(privileges(0, None).can_load_bpf());
    assert!(!privileges(1000, None).can_load_bpf());
    assert_eq!(
        check_privileges(&privileges(1000, Some(0))).status,
        Status::Warn
    );
    assert_eq!(
        check_privileges(&privileges(0, Some(u64::MAX))).status,
        Status::Ok
    );
}

#[test]
fn lockdown_and_release_parse() {
    assert_eq!(
        parse_lockdown("none [integrity] confidentiality\n").as_deref(),
        Some("integrity")
    );
    assert_eq!(
        parse_lockdown("[none] integrity confidentiality").as_deref(),
        Some("none")
    );
    assert_eq!(parse_lockdown("garbage"), None);
    assert_eq!(parse_lockdown("[]"), None);
    assert_eq!(parse_lockdown("]["), None);
    assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
    assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
    assert_eq!(parse_release("weird"), None);
    assert_eq!(check_kernel(Some("5.4.0")).status, Status::Warn);
    assert_eq!(check_kernel(Some("6.18.44")).status, Status::Ok);
}

#[test]
fn errno_names_and_error_chains() {
    assert_eq!(
        errno_name(
            "load: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output: "
        ),
        Some("EPERM")
    );
    assert_eq!(errno_name("attach: (os error 524)"), Some("ENOTSUPP"));
    assert_eq!(errno_name("(os error x)"), None);
    assert_eq!(errno_name("no errno"), None);
    assert_eq!(errno_name("(os error 1"), None);

    let io = std::io::Error::from_raw_os_error(libc::EPERM);
    let e = anyhow::Error::new(io).context("loading tp_btf/x");
    let chain = error_chain(e.as_ref());
    assert!(chain.starts_with("loading tp_btf/x: "), "{chain}");
    assert_eq!(errno_name(&chain), Some("EPERM"));
    assert_eq!(one_line("a\n  b\tc"), "a b c");
    assert_eq!(
        one_line("load: returned Operation not permitted (os error 1). Verifier output: \n"),
        "load: returned Operation not permitted (os error 1)"
    );
    let tp = c(
        CheckId::Tracepoint,
        Status::Warn,
        "loads; attach: tracefs not found",
    );
    assert_eq!(short_failure(&tp), "tracefs not mounted");
    let kp = c(
        CheckId::Kprobe,
        Status::Warn,
        "attach: `/sys/bus/event_source/devices/kprobe/type`: No such file (os error 2)",
    );
    assert_eq!(short_failure(&kp), "no kprobe support in this kernel");
    assert!(one_line(&"é".repeat(1000)).len() <= MAX_DETAIL + " …".len());
}

fn attach_checks(fentry: Status) -> Vec<Check> {
    vec![
        c(CheckId::Procfs, Status::Ok, "/proc readable"),
        c(CheckId::Tracepoint, Status::Ok, "loads and attaches"),
        c(CheckId::RawTp, Status::Ok, "loads and attaches"),
        c(CheckId::TpBtf, Status::Ok, "loads and attaches"),
        c(
            CheckId::Fentry,
            fentry,
            "load: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)",
        ),
        c(CheckId::Lsm, Status::Warn, "load: (os error 1)"),
        c(
            CheckId::Kprobe,
            Status::Warn,
            "attach: No such file or directory (os error 2)",
        ),
    ]
}

#[test]
fn tier_is_ebpf_when_the_source_loads() {
    let mut checks = attach_checks(Status::Warn);
    checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::Ebpf);
    assert!(reason.contains("fentry refused (EPERM)"), "{reason}");
    assert!(reason.contains("kprobe refused (ENOENT)"), "{reason}");
    assert!(
        reason.ends_with("UNIX-socket release hooks are off"),
        "{reason}"
    );

    let mut checks = attach_checks(Status::Ok);
    checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::Ebpf);
    assert!(reason.contains("fentry attaches"), "{reason}");
    assert!(reason.ends_with("hooks are available"), "{reason}");
}

#[test]
fn tier_is_pidfd_without_ebpf_when_pidfd_getfd_works() {
    let checks = vec![
        c(CheckId::Procfs, Status::Ok, "/proc readable"),
        c(CheckId::PidfdGetfd, Status::Ok, "works"),
        c(CheckId::EbpfSource, Status::Fail, "EPERM"),
    ];
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::Pidfd);
    assert!(reason.contains("pidfd_getfd works"), "{reason}");
    let warn = vec![
        c(CheckId::Procfs, Status::Ok, "/proc readable"),
        c(CheckId::PidfdGetfd, Status::Warn, "CAP_SYS_PTRACE missing"),
    ];
    assert_eq!(conclude(&warn).0, Tier::Poll);
    let mut with_ebpf = checks;
    with_ebpf.push(c(CheckId::EbpfSource, Status::Ok, "loads"));
    with_ebpf.retain(|x| x.id != CheckId::EbpfSource || x.status == Status::Ok);
    assert_eq!(conclude(&with_ebpf).0, Tier::Ebpf);
    assert_eq!(sample_report(Tier::Pidfd).exit_code(), 3);
}

#[test]
fn tier_is_poll_when_only_proc_works() {
    let mut checks = attach_checks(Status::Warn);
    checks.push(c(
        CheckId::EbpfSource,
        Status::Fail,
        "loading tp_btf/sched_process_exit: Operation not permitted (os error 1)",
    ));
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::Poll);
    assert!(
        reason.contains("eBPF event source failed (EPERM)"),
        "{reason}"
    );

    let checks = vec![
        c(CheckId::Procfs, Status::Ok, "/proc readable"),
        c(CheckId::EbpfSource, Status::Skipped, NEEDS_PRIVILEGE),
    ];
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::Poll);
    assert!(reason.contains(NEEDS_PRIVILEGE), "{reason}");
}

#[test]
fn tier_is_none_without_proc() {
    let checks = vec![
        c(CheckId::Procfs, Status::Fail, "/proc/self/stat: denied"),
        c(CheckId::EbpfSource, Status::Fail, "boom"),
    ];
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::None);
    assert!(reason.contains("cannot run"), "{reason}");
    assert_eq!(conclude(&[]).0, Tier::None);
}

#[test]
fn tier_is_none_outside_the_initial_pid_namespace() {
    use crate::procs::pidns::INIT_PID_NS_INO;
    assert_eq!(check_pid_namespace(Ok(INIT_PID_NS_INO)).status, Status::Ok);
    let outside = check_pid_namespace(Ok(4_026_532_001));
    assert_eq!(outside.status, Status::Fail);
    let unreadable = check_pid_namespace(Err(std::io::Error::other("denied")));
    assert_eq!(unreadable.status, Status::Fail);

    // Everything else works: the namespace alone rules the daemon out.
    let mut checks = attach_checks(Status::Ok);
    checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
    checks.push(outside);
    let (tier, reason) = conclude(&checks);
    assert_eq!(tier, Tier::None);
    assert!(reason.contains("hostPID"), "{reason}");
    assert!(reason.contains("refuses to run"), "{reason}");
}

fn sample_report(tier: Tier) -> Report {
    let mut checks = attach_checks(Status::Warn);
    checks.push(c(CheckId::EbpfSource, Status::Ok, "ok"));
    Report {
        kernel_release: "6.18.44".into(),
        tracefs: Some(TRACEFS_EVENTS[0].into()),
        lockdown: Some("integrity".into()),
        privileges: privileges(0, Some(0x1ff_feff_ffff)),
        checks,
        tier,
        reason: "because".into(),
    }
}

#[test]
fn exit_codes_follow_the_tier() {
    assert_eq!(sample_report(Tier::Ebpf).exit_code(), 0);
    assert_eq!(sample_report(Tier::Poll).exit_code(), 3);
    assert_eq!(sample_report(Tier::None).exit_code(), 1);
}

#[test]
fn a_failed_setup_check_is_exit_1_whatever_the_tier() {
    for tier in [Tier::Ebpf, Tier::Pidfd, Tier::Poll] {
        let mut report = sample_report(tier);
        report
            .checks
            .push(c(CheckId::Metrics, Status::Warn, "in use"));
        assert_ne!(report.exit_code(), 1, "{tier:?}: a warning is no failure");
        report
            .checks
            .push(c(CheckId::Config, Status::Fail, "c.toml:1:1: bad"));
        assert_eq!(report.exit_code(), 1, "{tier:?}");
        let (concluded, reason) = conclude(&report.checks);
        assert_eq!(concluded, Tier::Ebpf, "the tier is the kernel's");
        assert!(
            reason.ends_with("but run would stop at start: config (c.toml:1:1: bad)"),
            "{reason}"
        );
    }
}

#[test]
fn json_shape_round_trips() {
    let report = sample_report(Tier::Ebpf);
    let json = serde_json::to_string_pretty(&report).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["tier"], "ebpf");
    assert_eq!(v["reason"], "because");
    assert_eq!(v["kernel_release"], "6.18.44");
    assert_eq!(v["lockdown"], "integrity");
    assert_eq!(v["privileges"]["euid"], 0);
    assert_eq!(v["privileges"]["cap_eff"], "000001fffeffffff");
    assert_eq!(v["privileges"]["capabilities"]["CAP_BPF"], true);
    assert_eq!(v["checks"][0]["id"], "procfs");
    assert_eq!(v["checks"][0]["status"], "ok");
    assert_eq!(v["checks"][2]["id"], "raw_tp");
    assert_eq!(v["checks"][4]["id"], "fentry");
    assert_eq!(v["checks"][4]["status"], "warn");
    assert_eq!(v["checks"][7]["id"], "ebpf_source");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn human_output_is_aligned_with_a_verdict() {
    let text = sample_report(Tier::Poll).render_human();
    let lines: Vec<&str> = text.lines().collect();
    let col = lines[1].find("STATUS").unwrap();
    for line in &lines[2..lines.len() - 1] {
        let status = line.get(col..).unwrap();
        assert!(
            ["ok ", "warn ", "fail ", "skipped "]
                .iter()
                .any(|s| status.starts_with(s)),
            "{line:?}"
        );
    }
    assert_eq!(
        lines.last().copied(),
        Some("verdict: tier poll (exit 3): because")
    );
}

/// Needs root (run through the privileged test runner). What this
/// project's reference kernel allows: tracepoints, raw_tp and tp_btf, not
/// fentry, LSM or kprobes.
#[test]
fn diagnose_on_this_kernel() {
    if !crate::procs::caps::test_has_root("BPF program loads and attaches") {
        return;
    }
    let report = diagnose();
    println!("{}", report.render_human());
    let status = |id| report.check(id).map(|c| c.status);
    // Classic tracepoints attach whether or not the machine mounts
    // tracefs: a private mount serves when it does not.
    let tp = report.check(CheckId::Tracepoint).expect("tracepoint check");
    assert_eq!(tp.status, Status::Ok, "{report:#?}");
    assert_eq!(
        tp.detail.contains("privately"),
        report.tracefs.is_none(),
        "{report:#?}"
    );
    // The close tier enters through the per-syscall tracepoints.
    let source = report.check(CheckId::EbpfSource).expect("source check");
    assert!(
        source.detail.contains("close tier on syscalls:sys_enter_"),
        "{report:#?}"
    );
    assert!(!report.reason.contains("classic tracepoints unavailable"));
    assert_eq!(status(CheckId::RawTp), Some(Status::Ok), "{report:#?}");
    assert_eq!(status(CheckId::TpBtf), Some(Status::Ok), "{report:#?}");
    assert_ne!(status(CheckId::Fentry), Some(Status::Ok), "{report:#?}");
    assert_ne!(status(CheckId::Lsm), Some(Status::Ok), "{report:#?}");
    assert_ne!(status(CheckId::Kprobe), Some(Status::Ok), "{report:#?}");
    assert_eq!(status(CheckId::EbpfSource), Some(Status::Ok), "{report:#?}");
    assert_eq!(report.tier, Tier::Ebpf, "{}", report.reason);
    assert_eq!(report.exit_code(), 0);
}
