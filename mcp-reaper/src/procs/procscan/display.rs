//! A command line made safe to show: for a log line or a terminal.
//!
//! Owns: quoting arguments, and escaping control, line-separator and
//! bidirectional-override characters so a process cannot forge log lines
//! or hide text.
//! Must never: change the data it shows (`ProcInfo::cmdline` keeps the raw
//! characters; only the display is escaped), or let any character through
//! that breaks a line, moves the cursor or reorders text.

use std::fmt::Write as _;

use super::info::ProcInfo;

/// The command line for a log line or a terminal: arguments separated by
/// spaces, quoted when empty or holding whitespace or quotes, with control,
/// line-separator and bidirectional-override characters escaped, so a
/// process cannot forge log lines or hide text. A kernel thread (no command
/// line) shows as `[comm]`.
pub fn display_cmdline(info: &ProcInfo) -> String {
    display_args(&info.comm, &info.cmdline, info.cmdline_truncated)
}

/// [`display_cmdline`] of a process known by its `comm` and arguments
/// (the daemon's process table keeps no `ProcInfo`).
pub fn display_args(comm: &str, cmdline: &[String], truncated: bool) -> String {
    let mut out = String::new();
    if cmdline.is_empty() {
        out.push('[');
        escape_into(&mut out, comm, false);
        out.push(']');
        return out;
    }
    for (i, arg) in cmdline.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let quote = arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c == '"');
        if quote {
            out.push('"');
        }
        escape_into(&mut out, arg, quote);
        if quote {
            out.push('"');
        }
    }
    if truncated {
        out.push_str(" [truncated]");
    }
    out
}

fn escape_into(out: &mut String, s: &str, in_quotes: bool) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' if in_quotes => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

/// Control characters (C0, DEL, C1), Unicode line and paragraph separators,
/// and the invisible direction marks and overrides that can reorder text.
pub(super) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}
