//! Process matchers: what a rule sees of a process (`ProcView`), anchored
//! patterns, and the `exe`/`comm`/`cmdline` matcher shared by host, relay
//! and server rules, from its TOML form to its test against a process.
//!
//! Owns: compiling patterns (anchored, size-capped), joining and cutting
//! command lines before matching, and the rule that every field given must
//! match. Patterns use the `regex` crate: matching is linear in the input
//! (no backtracking, so no regex DoS), compiled size is capped, and command
//! lines longer than [`CMDLINE_MATCH_LIMIT`] are cut before matching.
//! Must never: match on an empty matcher, read /proc itself (callers hand
//! over a `ProcView`), or say what a match means: hosts, servers and
//! protection are the rule files' business.

use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::errors::Errs;

/// Command lines are cut to this many bytes before matching.
pub const CMDLINE_MATCH_LIMIT: usize = 32 * 1024;
/// Compiled size cap for one pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a matcher sees of a process. Strings were already converted lossily
/// from whatever bytes /proc held.
#[derive(Clone, Copy, Debug)]
pub struct ProcView<'a> {
    /// `/proc/PID/comm` (at most 15 bytes in the kernel).
    pub comm: &'a str,
    /// `/proc/PID/exe` target, if readable.
    pub exe: Option<&'a Path>,
    /// Arguments from `/proc/PID/cmdline`.
    pub cmdline: &'a [String],
    /// Real uid.
    pub uid: u32,
    /// cgroup v2 path (`0::PATH` in `/proc/PID/cgroup`), if known.
    pub cgroup: Option<&'a str>,
}

/// An anchored pattern: compiled as `^(?:SRC)$`, compared by source text.
#[derive(Clone, Debug)]
pub struct Pattern {
    src: String,
    re: Regex,
}

impl Pattern {
    /// Compiles `src` anchored. The error is the regex crate's message.
    pub fn new(src: &str) -> Result<Self, String> {
        RegexBuilder::new(&format!("^(?:{src})$"))
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|re| Pattern {
                src: src.to_owned(),
                re,
            })
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => "pattern too large once compiled".to_owned(),
                other => other.to_string(),
            })
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.src
    }

    #[must_use]
    pub fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text)
    }

    /// The compiled regex, for capture groups.
    pub(super) fn regex(&self) -> &Regex {
        &self.re
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}
impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.src)
    }
}

/// One process matcher: every pattern given must match; an empty matcher
/// matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcMatcher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<Pattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<Pattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Pattern>,
}

impl ProcMatcher {
    fn is_empty(&self) -> bool {
        self.exe.is_none() && self.comm.is_none() && self.cmdline.is_none()
    }

    /// Whether `p` matches, given its command line already joined.
    pub(super) fn matches_joined(&self, p: &ProcView<'_>, joined: &str) -> bool {
        !self.is_empty()
            && fields_match(
                self.exe.as_ref(),
                self.comm.as_ref(),
                self.cmdline.as_ref(),
                p,
                joined,
            )
    }

    /// Whether `p` matches.
    #[must_use]
    pub fn matches(&self, p: &ProcView<'_>) -> bool {
        self.matches_joined(p, &join_cmdline(p.cmdline))
    }
}

/// Every pattern given matches (none given: true).
pub(super) fn fields_match(
    exe: Option<&Pattern>,
    comm: Option<&Pattern>,
    cmdline: Option<&Pattern>,
    p: &ProcView<'_>,
    joined: &str,
) -> bool {
    if let Some(comm) = comm
        && !comm.is_match(p.comm)
    {
        return false;
    }
    if let Some(exe) = exe {
        let Some(path) = p.exe else { return false };
        let text = path.to_string_lossy();
        let text = text.strip_suffix(" (deleted)").unwrap_or(&text);
        if !exe.is_match(text) {
            return false;
        }
    }
    cmdline.is_none_or(|c| c.is_match(joined))
}

/// Arguments joined by single spaces, cut to [`CMDLINE_MATCH_LIMIT`] bytes.
pub(super) fn join_cmdline(args: &[String]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(a);
        if out.len() >= CMDLINE_MATCH_LIMIT {
            let mut cut = CMDLINE_MATCH_LIMIT;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            break;
        }
    }
    out
}

/// One entry of a `match` or `relays` list, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatcher {
    exe: Option<Spanned<String>>,
    comm: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
}

/// A pattern field, compiled; `None` when absent or invalid (recorded).
pub(super) fn pattern(errs: &mut Errs, src: Option<Spanned<String>>) -> Option<Pattern> {
    let src = src?;
    match Pattern::new(src.get_ref()) {
        Ok(p) => Some(p),
        Err(e) => {
            errs.at(src.span(), pattern_error(&e));
            None
        }
    }
}

/// The message for a pattern the regex crate refused.
pub(super) fn pattern_error(regex_message: &str) -> String {
    format!("invalid pattern: {}", one_line(regex_message))
}

fn matcher(
    errs: &mut Errs,
    exe: Option<Spanned<String>>,
    comm: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
) -> ProcMatcher {
    ProcMatcher {
        exe: pattern(errs, exe),
        comm: pattern(errs, comm),
        cmdline: pattern(errs, cmdline),
    }
}

/// The top-level matcher (if any field is given) and the `match` list.
pub(super) fn matchers(
    errs: &mut Errs,
    exe: Option<Spanned<String>>,
    comm: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    list: Option<Vec<Spanned<RawMatcher>>>,
) -> Vec<ProcMatcher> {
    let mut out = Vec::new();
    if exe.is_some() || comm.is_some() || cmdline.is_some() {
        out.push(matcher(errs, exe, comm, cmdline));
    }
    out.extend(matcher_list(errs, list, "match"));
    out
}

/// A `match` or `relays` list (`what` names it in errors); an entry with
/// no field is an error, not a matcher.
pub(super) fn matcher_list(
    errs: &mut Errs,
    list: Option<Vec<Spanned<RawMatcher>>>,
    what: &str,
) -> Vec<ProcMatcher> {
    let mut out = Vec::new();
    for m in list.unwrap_or_default() {
        let span = m.span();
        let m = m.into_inner();
        if m.exe.is_none() && m.comm.is_none() && m.cmdline.is_none() {
            errs.at(
                span,
                format!("empty entry in `{what}`: give exe, comm or cmdline"),
            );
            continue;
        }
        out.push(matcher(errs, m.exe, m.comm, m.cmdline));
    }
    out
}

/// The regex crate's multi-line messages, on one line.
fn one_line(msg: &str) -> String {
    if let Some(e) = msg.lines().find_map(|l| l.trim().strip_prefix("error: ")) {
        return e.to_owned();
    }
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' ' || c == '~'))
        .collect::<Vec<_>>()
        .join(" ")
}
