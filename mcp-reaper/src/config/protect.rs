//! `[[protect]]` rules: processes that must never be touched, by user,
//! cgroup, comm, exe or command line.
//!
//! Owns: the `ProtectRule` type, the keys `[[protect]]` accepts
//! (`RawProtect`), their checks (a rule must name something; users resolve
//! through `/etc/passwd` when the file is loaded) and the test of a process
//! against the rules.
//! Must never: accept an empty rule (it would protect every process),
//! read anything but `/etc/passwd`, or weaken protection: a process any
//! rule matches is never a candidate, whatever else matches it.

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::{
    errors::Errs,
    matcher::{Pattern, ProcView, fields_match, join_cmdline, pattern, pattern_error},
};

/// A user in a `[[protect]]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Uid(u32),
    /// A name, resolved from `/etc/passwd` when the file was loaded.
    Name {
        name: String,
        uid: u32,
    },
}

impl UserRef {
    #[must_use]
    pub fn uid(&self) -> u32 {
        match self {
            UserRef::Uid(u) | UserRef::Name { uid: u, .. } => *u,
        }
    }
}

impl Serialize for UserRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UserRef::Uid(u) => s.serialize_u32(*u),
            UserRef::Name { name, .. } => s.serialize_str(name),
        }
    }
}

/// A cgroup entry of a `[[protect]]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupMatch {
    /// Path prefix, compared by whole components.
    Prefix(String),
    /// `re:PATTERN`, anchored.
    Regex(Pattern),
}

impl CgroupMatch {
    fn matches(&self, cgroup: &str) -> bool {
        match self {
            CgroupMatch::Prefix(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                prefix.is_empty()
                    || cgroup == prefix
                    || cgroup
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            CgroupMatch::Regex(p) => p.is_match(cgroup),
        }
    }
}

impl Serialize for CgroupMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CgroupMatch::Prefix(p) => s.serialize_str(p),
            CgroupMatch::Regex(p) => s.serialize_str(&format!("re:{}", p.as_str())),
        }
    }
}

/// A `[[protect]]` rule: every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProtectRule {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<CgroupMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<Pattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<Pattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Pattern>,
}

impl ProtectRule {
    fn matches_joined(&self, p: &ProcView<'_>, joined: &str) -> bool {
        if !self.users.is_empty() && !self.users.iter().any(|u| u.uid() == p.uid) {
            return false;
        }
        if !self.cgroups.is_empty() {
            let Some(cg) = p.cgroup else { return false };
            if !self.cgroups.iter().any(|c| c.matches(cg)) {
                return false;
            }
        }
        // A rule with only users/cgroups has no patterns: that is a match.
        fields_match(
            self.exe.as_ref(),
            self.comm.as_ref(),
            self.cmdline.as_ref(),
            p,
            joined,
        )
    }
}

/// Whether any of `rules` matches `p`.
pub(super) fn any_matches(rules: &[ProtectRule], p: &ProcView<'_>) -> bool {
    if rules.is_empty() {
        return false;
    }
    let joined = join_cmdline(p.cmdline);
    rules.iter().any(|r| r.matches_joined(p, &joined))
}

/// Resolves user names for `[[protect]] users`, and group names for
/// `[control] read_group`.
pub(super) trait Users {
    fn uid_of(&self, name: &str) -> Option<u32>;
    fn gid_of(&self, name: &str) -> Option<u32>;
}

/// `/etc/passwd` of the machine (read when a name needs resolving).
pub(super) struct SystemUsers;

impl Users for SystemUsers {
    fn uid_of(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        uid_in_passwd(&text, name)
    }

    fn gid_of(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string("/etc/group").ok()?;
        // Same layout as passwd: name, password, id.
        uid_in_passwd(&text, name)
    }
}

pub(super) fn uid_in_passwd(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// One `[[protect]]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProtect {
    users: Option<Vec<Spanned<toml::Value>>>,
    cgroups: Option<Vec<Spanned<String>>>,
    comm: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
}

/// Checks every `[[protect]]` table, resolving user names with `users`.
pub(super) fn build(
    errs: &mut Errs,
    users: &dyn Users,
    raw: Vec<Spanned<RawProtect>>,
) -> Vec<ProtectRule> {
    let mut out = Vec::new();
    for p in raw {
        let span = p.span();
        let p = p.into_inner();
        let given = p.users.is_some()
            || p.cgroups.is_some()
            || p.comm.is_some()
            || p.exe.is_some()
            || p.cmdline.is_some();
        if !given {
            errs.at(span, "empty protect rule: it would protect every process");
        }
        let users = user_refs(errs, users, p.users.unwrap_or_default());
        let cgroups = cgroups(errs, p.cgroups.unwrap_or_default());
        out.push(ProtectRule {
            users,
            cgroups,
            comm: pattern(errs, p.comm),
            exe: pattern(errs, p.exe),
            cmdline: pattern(errs, p.cmdline),
        });
    }
    out
}

/// `users`: uids (integers or digit strings) and names known to `users`.
fn user_refs(errs: &mut Errs, users: &dyn Users, raw: Vec<Spanned<toml::Value>>) -> Vec<UserRef> {
    let mut out = Vec::new();
    for u in raw {
        let uspan = u.span();
        match u.into_inner() {
            toml::Value::Integer(i) => match u32::try_from(i) {
                Ok(uid) => out.push(UserRef::Uid(uid)),
                Err(_) => errs.at(uspan, format!("bad uid {i}")),
            },
            toml::Value::String(name) => {
                if let Ok(uid) = name.parse::<u32>() {
                    out.push(UserRef::Uid(uid));
                } else {
                    match users.uid_of(&name) {
                        Some(uid) => out.push(UserRef::Name { name, uid }),
                        None => errs.at(uspan, format!("unknown user {name:?}")),
                    }
                }
            }
            other => errs.at(
                uspan,
                format!(
                    "invalid type: {}, expected a user name or uid",
                    other.type_str()
                ),
            ),
        }
    }
    out
}

/// `cgroups`: absolute path prefixes, or `re:` patterns.
fn cgroups(errs: &mut Errs, raw: Vec<Spanned<String>>) -> Vec<CgroupMatch> {
    let mut out = Vec::new();
    for c in raw {
        if let Some(re) = c.get_ref().strip_prefix("re:") {
            match Pattern::new(re) {
                Ok(p) => out.push(CgroupMatch::Regex(p)),
                Err(e) => errs.at(c.span(), pattern_error(&e)),
            }
        } else if c.get_ref().starts_with('/') {
            out.push(CgroupMatch::Prefix(c.into_inner()));
        } else {
            errs.at(
                c.span(),
                format!(
                    "bad cgroup {:?}: a path prefix starts with `/`, a pattern with `re:`",
                    c.get_ref()
                ),
            );
        }
    }
    out
}
