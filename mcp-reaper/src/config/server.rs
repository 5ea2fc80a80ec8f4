//! `[[server]]` rules and built-in server shapes: which processes are MCP
//! servers, and the bounded identity (metric label) each one gets from its
//! command line.
//!
//! Owns: the `ServerRule` type, the keys `[[server]]` accepts
//! (`RawServer`), their checks (a matcher, a name or template whose groups
//! every cmdline pattern captures) and how one rule matches a process and
//! renders its identity.
//! Must never: produce an identity outside the label alphabet (templates
//! render through `label`), or decide that a server may be killed: a
//! server match only names a process.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{
    errors::Errs,
    label::Template,
    matcher::{ProcMatcher, ProcView, RawMatcher, matchers},
};

/// A `[[server]]` rule or a built-in server shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerRule {
    /// A label, or a template such as `{package}` over the cmdline
    /// pattern's named groups.
    pub name: String,
    #[serde(rename = "match")]
    pub matchers: Vec<ProcMatcher>,
    #[serde(skip)]
    template: Template,
}

/// A process classified as an MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMatch<'a> {
    pub rule: &'a ServerRule,
    /// Bounded identity: `[a-z0-9_.-]{1,48}`, or the configured fallback.
    pub identity: String,
}

impl ServerRule {
    /// The identity this rule gives `p` (command line `joined`), before
    /// the label allowlist: from the first matcher that matches and whose
    /// template renders. `None`: the rule does not match.
    pub(super) fn identity_of(&self, p: &ProcView<'_>, joined: &str) -> Option<String> {
        self.matchers.iter().find_map(|m| {
            if !m.matches_joined(p, joined) {
                return None;
            }
            let caps = m.cmdline.as_ref().and_then(|c| c.regex().captures(joined));
            self.template.render(caps.as_ref())
        })
    }
}

/// One `[[server]]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    name: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    comm: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
    #[serde(rename = "match")]
    matches: Option<Vec<Spanned<RawMatcher>>>,
}

/// Checks every `[[server]]` table.
pub(super) fn build(errs: &mut Errs, raw: Vec<Spanned<RawServer>>) -> Vec<ServerRule> {
    let mut out = Vec::new();
    for s in raw {
        let span = s.span();
        let s = s.into_inner();
        let matchers = matchers(errs, s.exe, s.comm, s.cmdline, s.matches);
        if matchers.is_empty() {
            errs.at(
                span.clone(),
                "server rule matches nothing: give exe, comm, cmdline or match",
            );
        }
        let (name, template) = match s.name {
            None => {
                errs.at(span, "server rule without `name`");
                (String::new(), Template::default())
            }
            Some(n) => template(errs, n, &matchers),
        };
        out.push(ServerRule {
            name,
            matchers,
            template,
        });
    }
    out
}

/// The rule's name parsed as a template; each `{group}` it names must be a
/// named group of every cmdline pattern of the rule.
fn template(
    errs: &mut Errs,
    name: Spanned<String>,
    matchers: &[ProcMatcher],
) -> (String, Template) {
    let t = match Template::parse(name.get_ref()) {
        Ok(t) => t,
        Err(e) => {
            errs.at(name.span(), e);
            return (String::new(), Template::default());
        }
    };
    for g in t.groups() {
        let everywhere = !matchers.is_empty()
            && matchers.iter().all(|m| {
                m.cmdline
                    .as_ref()
                    .is_some_and(|c| c.regex().capture_names().any(|n| n == Some(g)))
            });
        if !everywhere {
            errs.at(
                name.span(),
                format!("server name refers to {{{g}}}, but not every cmdline pattern of this rule has a group (?P<{g}>...)"),
            );
        }
    }
    (name.into_inner(), t)
}
