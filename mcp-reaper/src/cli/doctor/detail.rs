//! One-line details: errors and verifier logs made into the single line a
//! check carries, and the markers read back from those lines.
//!
//! Owns: the detail's length cap, flattening an error chain, the errno name
//! in an `(os error N)`, and the texts that identify a missing tracefs or a
//! kernel without kprobes.
//! Must never: let a detail span lines (the human report is one line per
//! check), grow past `MAX_DETAIL`, or cut one inside a character.

/// aya's error when no tracefs is mounted.
pub(super) const TRACEFS_MISSING: &str = "tracefs not found";
/// The PMU kprobes attach through; absent when the kernel has no kprobes.
pub(super) const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
/// Details longer than this are cut (verifier logs can be long).
pub(super) const MAX_DETAIL: usize = 600;

/// The symbolic name of the last `(os error N)` in `detail`, for common N.
pub fn errno_name(detail: &str) -> Option<&'static str> {
    const MARK: &str = "(os error ";
    let start = detail.rfind(MARK)? + MARK.len();
    let rest = detail.get(start..)?;
    let end = rest.find(')')?;
    let code: i32 = rest.get(..end)?.parse().ok()?;
    Some(match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::E2BIG => "E2BIG",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESRCH => "ESRCH",
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// `e` and its sources joined with ": ", skipping a source whose text the
/// chain already shows (aya repeats the io error in its own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Collapses whitespace (verifier logs are multi-line) and caps the length.
pub(super) fn one_line(s: &str) -> String {
    let mut out = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // aya appends the verifier log even when the kernel left it empty.
    if let Some(stripped) = out.strip_suffix(" Verifier output:") {
        out = stripped.trim_end_matches('.').to_owned();
    }
    if out.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" …");
    }
    out
}
