//! What this process may do: its effective capabilities, and whether it
//! may take another process's descriptors with `pidfd_getfd`.
//!
//! Owns: the table of capabilities the daemon uses and their bits, reading
//! and decoding CapEff from /proc/self/status, and the `pidfd_getfd` trial
//! on a short-lived child. Both `doctor` (to report) and the stdin watches
//! (to decide whether they can run) ask here, so neither imports the other.
//! Must never: raise, drop or otherwise change a capability, signal any
//! process but the child it forked for the trial (and reaped before
//! returning), keep a descriptor taken from it, or panic on odd /proc
//! contents: an unreadable or malformed CapEff is `None`, a failed trial is
//! an `Err` with a one-line reason.

use std::collections::BTreeMap;

/// Capabilities the daemon uses, with their bit numbers in CapEff.
pub const CAPABILITIES: [(&str, u32); 7] = [
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_KILL", 5),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_NET_ADMIN", 12),
];

/// `CAP_SYS_PTRACE`'s bit in a capability mask.
const CAP_SYS_PTRACE: u64 = 1 << 19;

/// The CapEff mask from the text of /proc/PID/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    let hex = line.get("CapEff:".len()..)?.trim();
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// This process's CapEff mask; `None` when /proc/self/status is unreadable
/// or has no well-formed CapEff line.
pub fn own_cap_eff() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_cap_eff(&status)
}

/// Which of [`CAPABILITIES`] `mask` holds.
pub fn decode_caps(mask: u64) -> BTreeMap<String, bool> {
    CAPABILITIES
        .iter()
        .map(|&(name, bit)| (name.to_owned(), bit < 64 && mask & (1u64 << bit) != 0))
        .collect()
}

/// Whether `pidfd_open` and `pidfd_getfd` work here and this process may
/// use them on others: CAP_SYS_PTRACE effective, and a descriptor really
/// taken from another process (a short-lived child), since a security
/// module (Yama's ptrace_scope 3, SELinux) may allow a process its own
/// descriptors and refuse it everyone else's.
pub fn probe_pidfd_getfd() -> Result<(), String> {
    match own_cap_eff() {
        Some(caps) if caps & CAP_SYS_PTRACE != 0 => {}
        Some(_) => {
            return Err(
                "CAP_SYS_PTRACE missing: other processes' stdin cannot be duplicated".into(),
            );
        }
        None => return Err("no CapEff in /proc/self/status".into()),
    }
    let target = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let target_fd = std::os::fd::AsRawFd::as_raw_fd(&target);
    // SAFETY: the child calls only pause(2) until the parent kills it,
    // which is async-signal-safe in a copy of a multithreaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    let taken = (|| {
        let pid = rustix::process::Pid::from_raw(child).ok_or("fork returned pid 0")?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(|e| format!("pidfd_open: {e}"))?;
        rustix::process::pidfd_getfd(&pidfd, target_fd, rustix::process::PidfdGetfdFlags::empty())
            .map(drop)
            .map_err(|e| format!("pidfd_getfd on another process: {e}"))
    })();
    // SAFETY: `child` is this process's own child, not yet waited for, so
    // its PID cannot have been reused.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    taken
}

/// For unit tests that need root: `true` when running as root; otherwise
/// prints why the test skips (`needs`), or fails when the privileged test
/// runner (`MCP_REAPER_REQUIRE_PRIVILEGED=1`) demands that nothing skip.
#[cfg(test)]
pub(crate) fn test_has_root(needs: &str) -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return true;
    }
    if std::env::var("MCP_REAPER_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("MCP_REAPER_REQUIRE_PRIVILEGED=1 but not running as root");
    }
    println!("skipped: needs root ({needs})");
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_decodes_root_without_sys_resource() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\n\
                      CapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
        let mask = parse_cap_eff(status).unwrap();
        assert_eq!(mask, 0x1ff_feff_ffff);
        assert_eq!(mask & (1 << 24), 0, "CAP_SYS_RESOURCE is absent");
        let caps = decode_caps(mask);
        assert_eq!(caps.len(), CAPABILITIES.len());
        assert!(caps.values().all(|&v| v), "{caps:?}");
    }

    #[test]
    fn cap_eff_rejects_odd_contents() {
        assert_eq!(parse_cap_eff(""), None);
        assert_eq!(parse_cap_eff("CapEff:\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzzzz\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\t00000000000000000001\n"), None);
        assert_eq!(parse_cap_eff("CapPrm:\tffff\n"), None);
        assert_eq!(parse_cap_eff("CapEff: ff"), Some(0xff));
    }

    #[test]
    fn probe_works_on_this_kernel() {
        probe_pidfd_getfd().unwrap();
    }
}
