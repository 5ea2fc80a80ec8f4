//! The text of /proc files, parsed: stat, status, cmdline, cgroup, and a
//! /proc entry's name.
//!
//! Owns: the hardening against what a process controls in those files (its
//! comm and command line may be any bytes, of any length, with fake `)`
//! and newlines in them), the guard in front of procfs's stat parser, and
//! the command-line budget once the bytes are converted.
//! Must never: open a file (bytes come from `read`), panic on any input,
//! or keep more than `MAX_CMDLINE_BYTES` of a command line.
//!
//! Parsing of `stat` is procfs's (`procfs::process::Stat`), behind a guard:
//! its parser slices the line by the positions of `(` and the last `)` and
//! panics on lines where those slices fall outside the text (a truncated
//! `1 (x)`, or a `)` before the `(`).

use std::path::Path;

use procfs::{FromRead as _, process::Stat};

use super::{error::ProcError, info::MAX_CMDLINE_BYTES};

/// A canonical decimal PID ("0", "+5" and "007" are not directory names the
/// kernel uses, and would not round-trip through `root.join(pid)`).
pub(super) fn parse_pid(name: &str) -> Option<u32> {
    let pid: u32 = name.parse().ok()?;
    (pid != 0 && pid.to_string() == name).then_some(pid)
}

/// Splits a raw cmdline into arguments. `truncated` says the file had more
/// than `raw` holds. The last NUL terminates the last argument; empty
/// arguments in between are real (`prog "" x`) and kept.
pub(super) fn parse_cmdline(raw: &[u8], mut truncated: bool) -> (Vec<String>, bool) {
    if raw.is_empty() {
        return (Vec::new(), truncated);
    }
    let body = match raw.split_last() {
        Some((0, rest)) => rest,
        _ => raw,
    };
    let mut args = Vec::new();
    // Lossy conversion turns each invalid byte into a 3-byte U+FFFD, so the
    // budget is enforced again on the converted text.
    let mut budget = MAX_CMDLINE_BYTES;
    for part in body.split(|&b| b == 0) {
        let arg = String::from_utf8_lossy(part);
        let cost = arg.len() + 1; // the argument and its NUL
        if cost <= budget {
            budget -= cost;
            args.push(arg.into_owned());
            continue;
        }
        truncated = true;
        let mut cut = budget.saturating_sub(1).min(arg.len());
        while !arg.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut > 0 {
            args.push(arg[..cut].to_owned());
        }
        break;
    }
    (args, truncated)
}

/// The two status lines this module needs, plus Tgid to tell threads apart.
pub(super) struct StatusFields {
    pub(super) tgid: u32,
    pub(super) uid: u32,
    pub(super) rss_kib: u64,
    /// PID inside the process's own PID namespace, when that differs.
    pub(super) ns_pid: Option<u32>,
}

pub(super) fn parse_status(bytes: &[u8]) -> Result<StatusFields, String> {
    let mut tgid = None;
    let mut uid = None;
    let mut rss_kib = 0;
    let mut ns_pid = None;
    // The Name line is escaped by the kernel, but may still hold bytes that
    // are not UTF-8: work on bytes, convert only the lines used.
    for line in bytes.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = String::from_utf8_lossy(value);
        let first = value.split_whitespace().next();
        match name {
            b"Tgid" => {
                tgid = Some(parse_field(first, "Tgid")?);
            }
            b"Uid" => uid = Some(parse_field(first, "Uid")?),
            b"VmRSS" => rss_kib = parse_field(first, "VmRSS")?,
            b"NSpid" => ns_pid = crate::procs::pidns::inner_pid(&value),
            _ => {}
        }
    }
    Ok(StatusFields {
        tgid: tgid.ok_or("no Tgid line")?,
        uid: uid.ok_or("no Uid line")?,
        rss_kib,
        ns_pid,
    })
}

fn parse_field<T: std::str::FromStr>(value: Option<&str>, name: &str) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("empty {name} line"))?;
    value
        .parse()
        .map_err(|_| format!("{name} value {value:?} is not a number"))
}

/// Checks the shape procfs's stat parser slices by, then parses with it.
pub(super) fn parse_stat(bytes: &[u8]) -> Result<Stat, String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim();
    let b = line.as_bytes();
    let open = line.find('(');
    let close = line.rfind(')');
    match (open, close) {
        // "<pid> (<comm>) <state> ...": a space before the first '(' and
        // after the last ')'. ASCII bytes there make every slice the parser
        // takes land on a character boundary inside the line.
        (Some(open), Some(close))
            if open >= 1
                && b[open - 1] == b' '
                && close > open
                && b.get(close + 1) == Some(&b' ') => {}
        _ => return Err("not of the form \"pid (comm) state ...\"".to_owned()),
    }
    Stat::from_read(b).map_err(|e| match e {
        procfs::ProcError::InternalError(e) => e.msg,
        other => other.to_string(),
    })
}

pub(super) fn check_stat(pid: u32, path: &Path, bytes: &[u8]) -> Result<Stat, ProcError> {
    let malformed = |reason| ProcError::Malformed {
        pid,
        path: path.to_path_buf(),
        reason,
    };
    let stat = parse_stat(bytes).map_err(malformed)?;
    if u32::try_from(stat.pid).ok() != Some(pid) {
        return Err(malformed(format!("names pid {}", stat.pid)));
    }
    if stat.ppid < 0 {
        return Err(malformed(format!("negative ppid {}", stat.ppid)));
    }
    Ok(stat)
}

/// The cgroup path in the text of /proc/PID/cgroup (see
/// [`read_cgroup`](super::read_cgroup)).
pub fn parse_cgroup(text: &str) -> Option<String> {
    let mut systemd = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            return Some(path.to_owned());
        }
        if controllers == "name=systemd" {
            systemd = Some(path.to_owned());
        }
    }
    systemd
}
