//! `[[host]]` rules and host presets: which processes are AI hosts (the
//! programs that spawn MCP servers), the relay and anchor hops between a
//! host and its servers, and what links a host to what it spawned.
//!
//! Owns: the `HostRule` type, the keys `[[host]]` accepts (`RawHost`),
//! their checks (bounded names, unique names, a matcher or `generic`,
//! environment variable names, lineage fds) and how a process is matched
//! against host and relay rules.
//! Must never: call a launcher or a relay hop a host, return the generic
//! rule from host matching (it applies only to a process seen starting a
//! server), or decide anything about killing: a host match names a tree's
//! owner, nothing more.

use std::{collections::HashSet, ops::Range};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{
    errors::Errs,
    label::is_host_name,
    matcher::{ProcMatcher, ProcView, RawMatcher, join_cmdline, matcher_list, matchers},
};

/// A `[[host]]` rule or a host preset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRule {
    /// Bounded metric label, `^[a-z0-9_-]{1,32}$`.
    pub name: String,
    /// Alternatives: the rule matches when any matches.
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<ProcMatcher>,
    /// Environment variables holding the host's session id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub session_env: Vec<String>,
    /// Relay or anchor hops between the host and its servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<ProcMatcher>,
    /// File descriptors beyond 0-2 that count as ownership links.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lineage_fds: Vec<u32>,
    /// Matches any process that starts something matching a server rule
    /// (see `Config::generic_host`); never returned by `classify_host`.
    #[serde(skip_serializing_if = "is_false")]
    pub generic: bool,
}

impl HostRule {
    #[must_use]
    pub fn matches(&self, p: &ProcView<'_>) -> bool {
        self.matches_joined(p, &join_cmdline(p.cmdline))
    }

    /// Whether `p` is one of this host's relay or anchor hops.
    #[must_use]
    pub fn is_relay(&self, p: &ProcView<'_>) -> bool {
        self.is_relay_joined(p, &join_cmdline(p.cmdline))
    }

    fn matches_joined(&self, p: &ProcView<'_>, joined: &str) -> bool {
        self.matchers.iter().any(|m| m.matches_joined(p, joined))
    }

    fn is_relay_joined(&self, p: &ProcView<'_>, joined: &str) -> bool {
        self.relays.iter().any(|m| m.matches_joined(p, joined))
    }
}

/// The first non-generic rule in `rules` matching `p`, whose command line
/// is `joined`: rule order is precedence.
pub(super) fn first_host<'a>(
    rules: &'a [HostRule],
    p: &ProcView<'_>,
    joined: &str,
) -> Option<&'a HostRule> {
    rules
        .iter()
        .filter(|h| !h.generic)
        .find(|h| h.matches_joined(p, joined))
}

/// The first rule in `rules` one of whose relay matchers matches `p`.
pub(super) fn first_relay<'a>(
    rules: &'a [HostRule],
    p: &ProcView<'_>,
    joined: &str,
) -> Option<&'a HostRule> {
    rules.iter().find(|h| h.is_relay_joined(p, joined))
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// One `[[host]]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    name: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    comm: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    #[serde(rename = "match")]
    matches: Option<Vec<Spanned<RawMatcher>>>,
    session_env: Option<Vec<Spanned<String>>>,
    relays: Option<Vec<Spanned<RawMatcher>>>,
    lineage_fds: Option<Vec<Spanned<i64>>>,
    generic: Option<bool>,
}

/// Checks every `[[host]]` table; `presets` are the enabled preset names,
/// which a file rule may not reuse.
pub(super) fn build(
    errs: &mut Errs,
    raw: Vec<Spanned<RawHost>>,
    presets: &[String],
) -> Vec<HostRule> {
    let mut out: Vec<HostRule> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for h in raw {
        let span = h.span();
        let h = h.into_inner();
        let name = name(errs, h.name, &span, presets, &mut seen);
        let had_matcher = h.exe.is_some()
            || h.comm.is_some()
            || h.cmdline.is_some()
            || h.matches.as_ref().is_some_and(|m| !m.is_empty());
        let matchers = matchers(errs, h.exe, h.comm, h.cmdline, h.matches);
        let generic = h.generic.unwrap_or(false);
        if generic && had_matcher {
            errs.at(
                span.clone(),
                "`generic = true` takes no exe, comm, cmdline or match",
            );
        } else if !generic && !had_matcher {
            errs.at(
                span.clone(),
                "host rule matches nothing: give exe, comm, cmdline or match (or generic = true)",
            );
        }
        let session_env = session_env(errs, h.session_env.unwrap_or_default());
        let relays = matcher_list(errs, h.relays, "relays");
        let lineage_fds = lineage_fds(errs, h.lineage_fds.unwrap_or_default());
        out.push(HostRule {
            name,
            matchers,
            session_env,
            relays,
            lineage_fds,
            generic,
        });
    }
    out
}

/// The rule's name: present, a bounded label, not an enabled preset's and
/// not already `seen`. Empty when refused (the error is recorded).
fn name(
    errs: &mut Errs,
    name: Option<Spanned<String>>,
    table: &Range<usize>,
    presets: &[String],
    seen: &mut HashSet<String>,
) -> String {
    match name {
        None => {
            errs.at(table.clone(), "host rule without `name`");
            String::new()
        }
        Some(n) if !is_host_name(n.get_ref()) => {
            errs.at(
                n.span(),
                format!(
                    "bad host name {:?}: must match ^[a-z0-9_-]{{1,32}}$ (it is a metric label)",
                    n.get_ref()
                ),
            );
            String::new()
        }
        Some(n) if presets.contains(n.get_ref()) => {
            errs.at(
                n.span(),
                format!("duplicate host name {:?}: preset {:?} is enabled (remove it from `presets` to replace it)", n.get_ref(), n.get_ref()),
            );
            String::new()
        }
        Some(n) if seen.contains(n.get_ref()) => {
            errs.at(n.span(), format!("duplicate host name {:?}", n.get_ref()));
            String::new()
        }
        Some(n) => {
            seen.insert(n.get_ref().clone());
            n.into_inner()
        }
    }
}

/// `session_env`: portable environment variable names.
fn session_env(errs: &mut Errs, raw: Vec<Spanned<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for e in raw {
        let ok = !e.get_ref().is_empty()
            && e.get_ref().len() <= 128
            && !e.get_ref().starts_with(|c: char| c.is_ascii_digit())
            && e.get_ref()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            out.push(e.into_inner());
        } else {
            errs.at(
                e.span(),
                format!("bad environment variable name {:?}", e.get_ref()),
            );
        }
    }
    out
}

/// `lineage_fds`: descriptors 3 and up (0-2 always count).
fn lineage_fds(errs: &mut Errs, raw: Vec<Spanned<i64>>) -> Vec<u32> {
    let mut out = Vec::new();
    for fd in raw {
        match u32::try_from(*fd.get_ref()) {
            Ok(n) if (3..=1 << 20).contains(&n) => out.push(n),
            _ => errs.at(
                fd.span(),
                format!(
                    "bad lineage fd {}: must be 3 or more (0-2 always count)",
                    fd.get_ref()
                ),
            ),
        }
    }
    out
}
