//! Entry points of the fuzz targets (`fuzz/`, `cargo xtask fuzz`), built
//! only with the `fuzzing` feature: each feeds arbitrary bytes to the
//! parsers of one kind of outside input and checks what must hold of any
//! answer. The daemon never calls them.
//!
//! Owns: which parser each target reaches, and the properties checked on
//! top of "never panics, never hangs" (a control request that parses
//! survives a round trip; an HTTP request line names a path; a sock_diag
//! reply never yields a record of another conversation).
//! Must never: touch the system (no /proc, no sockets, no files): every
//! input is the fuzzer's bytes.

use crate::{
    config::{Config, parse_duration},
    judge::{activity, policy, trees},
    outputs::control::{self, Request, Response},
    ownership::fdtable::{FdInfo, FdTarget},
    procs::{caps, pidns, procscan},
    reap::stopped,
    source::decode,
};

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A ring-buffer record from the kernel programs.
pub fn kernel_record(data: &[u8]) {
    let _ = decode::decode(data);
}

/// A configuration file, and the values its keys take.
pub fn config(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = Config::from_toml_str(t, "fuzz.toml");
    let _ = parse_duration(t);
    let _ = crate::config::parse_bytes(t);
    let _ = policy::parse_reason(t);
}

/// The /proc files of a process: stat, status, cmdline, cgroup, environ,
/// io, smaps_rollup, CapEff, NSpid.
pub fn proc_files(data: &[u8]) {
    procscan::fuzz_files(data);
    let names = ["MCP_SESSION".to_owned(), "X".to_owned()];
    if let Some(v) = trees::session_in_environ(data, &names) {
        assert!(v.chars().count() <= 128 && !v.chars().any(char::is_control));
    }
    let Some(t) = text(data) else { return };
    let _ = trees::parse_pss(t);
    let _ = activity::parse_rchar(t);
    let _ = caps::parse_cap_eff(t);
    let _ = pidns::inner_pid(t);
}

/// fd links and fdinfo.
pub fn fd_files(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = FdTarget::parse(t).inode();
    if let Some(info) = FdInfo::parse(t) {
        let _ = info.mode();
    }
}

/// A control-socket request line (and the client's view of a response):
/// whatever parses writes back as an equal request.
pub fn control_request(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let again = serde_json::to_vec(&req).map(|b| serde_json::from_slice::<Request>(&b).ok());
        assert!(
            matches!(again, Ok(Some(ref r)) if *r == req),
            "{req:?} did not survive a round trip"
        );
    }
    let _ = serde_json::from_slice::<Response>(data);
    if let Some(t) = text(data) {
        let _ = control::parse_owner(t);
    }
}

/// An HTTP request head.
pub fn http_head(data: &[u8]) {
    if let Some((_, target)) = crate::outputs::http::request_line(data) {
        assert!(target.starts_with('/'));
        let _ = crate::outputs::http::route_path(&target);
    }
}

/// A datagram of sock_diag replies: conversation 7, exact and dump.
pub fn sock_diag(data: &[u8]) {
    for dump in [false, true] {
        let mut n = 0usize;
        let _ = crate::ownership::sockdiag::read_datagram(data, 7, dump, &mut |_| n += 1);
        assert!(dump || n <= 1, "an exact lookup takes one record");
    }
}

/// What the daemon reads back from its state directory at start: the
/// stopped-process marker and the saved tree table.
pub fn state_files(data: &[u8]) {
    if let Some(t) = text(data) {
        let _ = stopped::parse(t);
    }
    if let Ok(table) = serde_json::from_slice::<crate::daemon::persist::SavedTable>(data) {
        let _ = crate::daemon::persist::verify(table, |_| true);
    }
}
