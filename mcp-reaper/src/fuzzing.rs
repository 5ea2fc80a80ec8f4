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

/// A ring-buffer record from the kernel programs: whatever decodes had
/// exactly the size of the kind its header names, and names a process.
pub fn kernel_record(data: &[u8]) {
    let Ok(ev) = decode::decode(data) else { return };
    let size = data
        .get(..4)
        .and_then(|h| <[u8; 4]>::try_from(h).ok())
        .and_then(|h| decode::RecordKind::try_from(u32::from_ne_bytes(h)).ok())
        .map(decode::RecordKind::size);
    assert_eq!(size, Some(data.len()), "decoded a misframed record: {ev:?}");
    assert_ne!(ev.key().tgid, 0, "decoded a record of pid 0: {ev:?}");
}

/// A configuration file, and the values its keys take: a file that parses
/// writes back as TOML that parses to an equal configuration.
pub fn config(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(c) = Config::from_toml_str(t, "fuzz.toml") {
        let again = c
            .to_toml()
            .map(|back| Config::from_toml_str(&back, "again.toml"));
        assert!(
            matches!(again, Ok(Ok(ref d)) if *d == c),
            "a parsed configuration did not survive a round trip: {again:?}"
        );
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    /// The seed corpus of `target`: (file name, bytes).
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    /// The seeds are what the targets start from: the well-formed ones
    /// decode or parse (and pass the targets' checks), the malformed one is
    /// rejected, and garbage made of each seed is rejected.
    #[test]
    fn seed_records_decode_and_their_garbage_is_rejected() {
        let seeds = seeds("kernel_record");
        assert!(seeds.len() >= 6, "{seeds:?}");
        for (name, bytes) in &seeds {
            super::kernel_record(bytes);
            let got = crate::source::decode::decode(bytes);
            // `short` is a bare header; `close` has file kind 0 (none).
            let malformed = ["short", "close"].contains(&name.as_str());
            assert_eq!(got.is_ok(), !malformed, "{name}: {got:?}");
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(
                crate::source::decode::decode(&longer).is_err(),
                "{name} + 1 byte"
            );
            let mut unknown = bytes.clone();
            if unknown.len() >= 4 {
                unknown[..4].copy_from_slice(&0xdead_u32.to_ne_bytes());
                assert!(
                    crate::source::decode::decode(&unknown).is_err(),
                    "{name}, kind 0xdead"
                );
            }
        }
    }

    #[test]
    fn seed_configurations_parse_and_their_garbage_is_rejected() {
        for (name, bytes) in seeds("config") {
            super::config(&bytes);
            let text = String::from_utf8(bytes).unwrap();
            if name.ends_with(".toml") {
                // The presets file names hosts the enabled presets already
                // have: as a user's file it needs the presets off.
                let text = if name == "presets.toml" {
                    assert!(crate::config::Config::from_toml_str(&text, &name).is_err());
                    format!("presets = []\n{text}")
                } else {
                    text
                };
                let parsed = crate::config::Config::from_toml_str(&text, &name);
                assert!(parsed.is_ok(), "{name}: {parsed:?}");
                let broken = format!("{text}\n[[host]]\nname = 1\n");
                assert!(
                    crate::config::Config::from_toml_str(&broken, &name).is_err(),
                    "{name}"
                );
            }
        }
    }
}
