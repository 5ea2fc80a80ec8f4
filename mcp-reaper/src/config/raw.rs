//! The file as written: serde structures with spans, error collection and
//! validation into [`Config`].
//!
//! Owns: turning TOML text into a `Config` or into every error it holds.
//! Must never: stop at the first error when more can be found, or panic.
//!
//! How every error is found: the text is parsed once with toml's recoverable
//! parser (all syntax errors). The document is then deserialized with serde;
//! on a type error (or unknown key) the offending value or key is pruned from
//! the document by its span and deserialization is retried, so each bad field
//! is reported once and the rest is still checked. Semantic checks (patterns,
//! durations, names, presets, reasons) run on `Spanned` fields afterwards.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    ops::Range,
    path::PathBuf,
    sync::OnceLock,
};

use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{
    Action, Actions, CgroupMatch, Config, ConfigError, ConfigErrors, DaemonConfig, HostRule,
    PRESET_NAMES, PRESETS_TOML, Pattern, PolicyConfig, ProcMatcher, ProtectRule, ServerRule,
    Source, UserRef,
    label::{Template, is_host_name, is_identity},
    parse_duration,
};

type S<T> = Spanned<T>;

/// Deserialization attempts before giving up pruning (each finds one error).
const MAX_TYPE_ERRORS: usize = 200;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    presets: Option<S<Vec<S<String>>>>,
    builtin_servers: Option<bool>,
    daemon: Option<RawDaemon>,
    policy: Option<RawPolicy>,
    host: Option<Vec<S<RawHost>>>,
    server: Option<Vec<S<RawServer>>>,
    protect: Option<Vec<S<RawProtect>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    source: Option<S<String>>,
    poll_interval: Option<S<String>>,
    listen: Option<S<String>>,
    audit_log: Option<S<String>>,
    unknown_server_label: Option<S<String>>,
    server_labels: Option<Vec<S<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    grace: Option<S<String>>,
    kill_after: Option<S<String>>,
    idle_after: Option<S<String>>,
    dry_run: Option<bool>,
    actions: Option<BTreeMap<S<String>, S<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    exe: Option<S<String>>,
    comm: Option<S<String>>,
    cmdline: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Option<S<String>>,
    exe: Option<S<String>>,
    comm: Option<S<String>>,
    cmdline: Option<S<String>>,
    #[serde(rename = "match")]
    matches: Option<Vec<S<RawMatcher>>>,
    session_env: Option<Vec<S<String>>>,
    relays: Option<Vec<S<RawMatcher>>>,
    lineage_fds: Option<Vec<S<i64>>>,
    generic: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Option<S<String>>,
    exe: Option<S<String>>,
    comm: Option<S<String>>,
    cmdline: Option<S<String>>,
    #[serde(rename = "match")]
    matches: Option<Vec<S<RawMatcher>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProtect {
    users: Option<Vec<S<toml::Value>>>,
    cgroups: Option<Vec<S<String>>>,
    comm: Option<S<String>>,
    exe: Option<S<String>>,
    cmdline: Option<S<String>>,
}

/// Resolves user names for `[[protect]] users`.
pub(super) trait Users {
    fn uid_of(&self, name: &str) -> Option<u32>;
}

/// `/etc/passwd` of the machine (read when a name needs resolving).
pub(super) struct SystemUsers;

impl Users for SystemUsers {
    fn uid_of(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
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

/// Errors with byte spans, converted to lines and columns at the end.
struct Errs {
    list: Vec<(Option<Range<usize>>, String)>,
    /// Spans of syntax errors: later errors there are their echoes.
    syntax: Vec<Range<usize>>,
}

impl Errs {
    fn at(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.push(Some(span), msg.into());
    }

    fn push(&mut self, span: Option<Range<usize>>, msg: String) {
        if let Some(s) = &span {
            let echo = self
                .syntax
                .iter()
                .any(|x| x.start == s.start || (x.start < s.end && s.start < x.end));
            if echo {
                return;
            }
        }
        self.list.push((span, msg));
    }

    fn into_errors(self, text: &str, source_name: &str) -> ConfigErrors {
        let mut list = self.list;
        list.sort_by_key(|(span, _)| span.as_ref().map_or(usize::MAX, |s| s.start));
        list.dedup();
        let errors = list
            .into_iter()
            .map(|(span, message)| {
                let (line, column) = match span {
                    Some(s) => {
                        let (l, c) = line_col(text, s.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                ConfigError {
                    line,
                    column,
                    message,
                }
            })
            .collect();
        ConfigErrors {
            source_name: source_name.to_owned(),
            errors,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer != &(0..0)
}

/// Removes the deepest key or array element whose span holds `span`.
fn prune_value(value: &mut DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(t) => prune_table(t, span),
        DeValue::Array(a) => {
            let mut victim = None;
            for (i, item) in a.iter_mut().enumerate() {
                if prune_value(item.get_mut(), span) {
                    return true;
                }
                if contains(&item.span(), span) {
                    victim = Some(i);
                    break;
                }
            }
            let Some(victim) = victim else { return false };
            let kept: Vec<_> = a
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(_, v)| v.clone())
                .collect();
            *a = kept.into_iter().collect();
            true
        }
        _ => false,
    }
}

fn prune_table(t: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    let mut victim = None;
    for (k, v) in t.iter_mut() {
        if contains(&k.span(), span) {
            victim = Some(k.clone());
            break;
        }
        if prune_value(v.get_mut(), span) {
            return true;
        }
        if contains(&v.span(), span) {
            victim = Some(k.clone());
            break;
        }
    }
    match victim {
        Some(k) => t.remove(&k).is_some(),
        None => false,
    }
}

/// Deserializes, pruning what fails, until the document deserializes.
fn deserialize_all(text: &str, errs: &mut Errs) -> RawConfig {
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        let span = e.span().unwrap_or(0..0);
        errs.list.push((Some(span.clone()), e.message().to_owned()));
        errs.syntax.push(span);
    }
    let span = root.span();
    let mut doc = Spanned::new(span, DeValue::Table(root.into_inner()));
    for _ in 0..MAX_TYPE_ERRORS {
        match RawConfig::deserialize(ValueDeserializer::from(doc.clone())) {
            Ok(raw) => return raw,
            Err(e) => {
                let span = e.span();
                errs.push(span.clone(), e.message().to_owned());
                match span {
                    Some(s) if prune_value(doc.get_mut(), &s) => {}
                    _ => return RawConfig::default(),
                }
            }
        }
    }
    RawConfig::default()
}

/// The built-in hosts and server shapes, parsed once.
type Builtins = (Vec<HostRule>, Vec<ServerRule>);

fn builtins() -> Result<&'static Builtins, String> {
    static BUILTINS: OnceLock<Result<Builtins, String>> = OnceLock::new();
    BUILTINS
        .get_or_init(|| {
            let mut errs = Errs {
                list: Vec::new(),
                syntax: Vec::new(),
            };
            let raw = deserialize_all(PRESETS_TOML, &mut errs);
            let mut v = Validator {
                errs: &mut errs,
                users: &SystemUsers,
            };
            let hosts = v.hosts(raw.host.unwrap_or_default(), &[]);
            let servers = v.servers(raw.server.unwrap_or_default());
            if errs.list.is_empty() {
                Ok((hosts, servers))
            } else {
                Err(errs
                    .into_errors(PRESETS_TOML, "<built-in presets>")
                    .to_string())
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

pub(super) fn parse(
    text: &str,
    source_name: &str,
    users: &dyn Users,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errs {
        list: Vec::new(),
        syntax: Vec::new(),
    };
    let raw = deserialize_all(text, &mut errs);
    let (preset_hosts, builtin_servers) = match builtins() {
        Ok((h, s)) => (h.as_slice(), s.as_slice()),
        Err(msg) => {
            errs.push(None, msg);
            (&[][..], &[][..])
        }
    };
    let mut v = Validator {
        errs: &mut errs,
        users,
    };
    let presets = v.presets(raw.presets);
    let builtin_on = raw.builtin_servers.unwrap_or(true);
    let daemon = v.daemon(raw.daemon.unwrap_or_default());
    let policy = v.policy(raw.policy.unwrap_or_default());
    let hosts = v.hosts(raw.host.unwrap_or_default(), &presets);
    let servers = v.servers(raw.server.unwrap_or_default());
    let protect = v.protect(raw.protect.unwrap_or_default());

    if !errs.list.is_empty() {
        return Err(errs.into_errors(text, source_name));
    }
    let mut all_hosts = hosts.clone();
    all_hosts.extend(
        preset_hosts
            .iter()
            .filter(|h| presets.contains(&h.name))
            .cloned(),
    );
    let mut all_servers = servers.clone();
    if builtin_on {
        all_servers.extend(builtin_servers.iter().cloned());
    }
    Ok(Config {
        presets,
        builtin_servers: builtin_on,
        daemon,
        policy,
        hosts,
        servers,
        protect,
        all_hosts,
        all_servers,
    })
}

struct Validator<'e, 'u> {
    errs: &'e mut Errs,
    users: &'u dyn Users,
}

impl Validator<'_, '_> {
    fn pattern(&mut self, src: Option<S<String>>) -> Option<Pattern> {
        let src = src?;
        match Pattern::new(src.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                self.errs
                    .at(src.span(), format!("invalid pattern: {}", one_line(&e)));
                None
            }
        }
    }

    fn duration(
        &mut self,
        value: Option<S<String>>,
        default: std::time::Duration,
        min: std::time::Duration,
        what: &str,
    ) -> std::time::Duration {
        let Some(value) = value else { return default };
        match parse_duration(value.get_ref()) {
            Ok(d) if d < min => {
                self.errs.at(
                    value.span(),
                    format!("{what} must be at least {}", super::format_duration(min)),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.errs.at(value.span(), e);
                default
            }
        }
    }

    fn presets(&mut self, presets: Option<S<Vec<S<String>>>>) -> Vec<String> {
        let Some(presets) = presets else {
            return PRESET_NAMES.iter().map(|s| (*s).to_owned()).collect();
        };
        let mut out: Vec<String> = Vec::new();
        for p in presets.into_inner() {
            if !PRESET_NAMES.contains(&p.get_ref().as_str()) {
                self.errs.at(
                    p.span(),
                    format!(
                        "unknown preset {:?} (known: {})",
                        p.get_ref(),
                        PRESET_NAMES.join(", ")
                    ),
                );
            } else if !out.contains(p.get_ref()) {
                out.push(p.into_inner());
            }
        }
        out
    }

    fn daemon(&mut self, raw: RawDaemon) -> DaemonConfig {
        let d = DaemonConfig::default();
        let source = match raw.source {
            None => d.source,
            Some(s) => match s.get_ref().as_str() {
                "auto" => Source::Auto,
                "ebpf" => Source::Ebpf,
                "poll" => Source::Poll,
                other => {
                    self.errs.at(
                        s.span(),
                        format!(
                            "unknown source {other:?}: expected \"auto\", \"ebpf\" or \"poll\""
                        ),
                    );
                    d.source
                }
            },
        };
        let poll_interval = self.duration(
            raw.poll_interval,
            d.poll_interval,
            std::time::Duration::from_millis(10),
            "poll_interval",
        );
        let listen = match raw.listen {
            None => d.listen,
            Some(l) if l.get_ref() == "off" => None,
            Some(l) => match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.errs.at(
                        l.span(),
                        format!(
                            "invalid listen address {:?}: expected IP:PORT or \"off\"",
                            l.get_ref()
                        ),
                    );
                    d.listen
                }
            },
        };
        let audit_log = raw.audit_log.and_then(|p| {
            let path = PathBuf::from(p.get_ref());
            if path.is_absolute() {
                Some(path)
            } else {
                self.errs.at(p.span(), "audit_log must be an absolute path");
                None
            }
        });
        let unknown_server_label = match raw.unknown_server_label {
            None => d.unknown_server_label,
            Some(l) if is_identity(l.get_ref()) => l.into_inner(),
            Some(l) => {
                self.errs.at(l.span(), bad_identity(l.get_ref()));
                d.unknown_server_label
            }
        };
        let mut server_labels: Vec<String> = Vec::new();
        for l in raw.server_labels.unwrap_or_default() {
            if !is_identity(l.get_ref()) {
                self.errs.at(l.span(), bad_identity(l.get_ref()));
            } else if !server_labels.contains(l.get_ref()) {
                server_labels.push(l.into_inner());
            }
        }
        DaemonConfig {
            source,
            poll_interval,
            listen,
            audit_log,
            unknown_server_label,
            server_labels,
        }
    }

    fn policy(&mut self, raw: RawPolicy) -> PolicyConfig {
        let d = PolicyConfig::default();
        let zero = std::time::Duration::ZERO;
        let grace = self.duration(raw.grace, d.grace, zero, "grace");
        let kill_after = self.duration(raw.kill_after, d.kill_after, zero, "kill_after");
        let idle_after = self.duration(
            raw.idle_after,
            d.idle_after,
            std::time::Duration::from_secs(1),
            "idle_after",
        );
        let mut actions = Actions::default();
        for (reason, action) in raw.actions.unwrap_or_default() {
            let Some(r) = super::Reason::parse(reason.get_ref()) else {
                let known: Vec<&str> = super::Reason::ALL.iter().map(|r| r.as_str()).collect();
                self.errs.at(
                    reason.span(),
                    format!(
                        "unknown reason {:?} (known: {})",
                        reason.get_ref(),
                        known.join(", ")
                    ),
                );
                continue;
            };
            match action.get_ref().as_str() {
                "observe" => actions.set(r, Action::Observe),
                "enforce" => actions.set(r, Action::Enforce),
                other => self.errs.at(
                    action.span(),
                    format!("unknown action {other:?}: expected \"observe\" or \"enforce\""),
                ),
            }
        }
        PolicyConfig {
            grace,
            kill_after,
            idle_after,
            dry_run: raw.dry_run.unwrap_or(d.dry_run),
            actions,
        }
    }

    fn matcher(
        &mut self,
        exe: Option<S<String>>,
        comm: Option<S<String>>,
        cmdline: Option<S<String>>,
    ) -> ProcMatcher {
        ProcMatcher {
            exe: self.pattern(exe),
            comm: self.pattern(comm),
            cmdline: self.pattern(cmdline),
        }
    }

    /// The top-level matcher (if any field is given) and the `match` list.
    fn matchers(
        &mut self,
        exe: Option<S<String>>,
        comm: Option<S<String>>,
        cmdline: Option<S<String>>,
        list: Option<Vec<S<RawMatcher>>>,
    ) -> Vec<ProcMatcher> {
        let mut out = Vec::new();
        if exe.is_some() || comm.is_some() || cmdline.is_some() {
            out.push(self.matcher(exe, comm, cmdline));
        }
        out.extend(self.matcher_list(list, "match"));
        out
    }

    fn matcher_list(&mut self, list: Option<Vec<S<RawMatcher>>>, what: &str) -> Vec<ProcMatcher> {
        let mut out = Vec::new();
        for m in list.unwrap_or_default() {
            let span = m.span();
            let m = m.into_inner();
            if m.exe.is_none() && m.comm.is_none() && m.cmdline.is_none() {
                self.errs.at(
                    span,
                    format!("empty entry in `{what}`: give exe, comm or cmdline"),
                );
                continue;
            }
            out.push(self.matcher(m.exe, m.comm, m.cmdline));
        }
        out
    }

    fn hosts(&mut self, raw: Vec<S<RawHost>>, presets: &[String]) -> Vec<HostRule> {
        let mut out: Vec<HostRule> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for h in raw {
            let span = h.span();
            let h = h.into_inner();
            let name = match h.name {
                None => {
                    self.errs.at(span.clone(), "host rule without `name`");
                    String::new()
                }
                Some(n) if !is_host_name(n.get_ref()) => {
                    self.errs.at(
                        n.span(),
                        format!("bad host name {:?}: must match ^[a-z0-9_-]{{1,32}}$ (it is a metric label)", n.get_ref()),
                    );
                    String::new()
                }
                Some(n) if presets.contains(n.get_ref()) => {
                    self.errs.at(
                        n.span(),
                        format!("duplicate host name {:?}: preset {:?} is enabled (remove it from `presets` to replace it)", n.get_ref(), n.get_ref()),
                    );
                    String::new()
                }
                Some(n) if seen.contains(n.get_ref()) => {
                    self.errs
                        .at(n.span(), format!("duplicate host name {:?}", n.get_ref()));
                    String::new()
                }
                Some(n) => {
                    seen.insert(n.get_ref().clone());
                    n.into_inner()
                }
            };
            let had_matcher = h.exe.is_some()
                || h.comm.is_some()
                || h.cmdline.is_some()
                || h.matches.as_ref().is_some_and(|m| !m.is_empty());
            let matchers = self.matchers(h.exe, h.comm, h.cmdline, h.matches);
            let generic = h.generic.unwrap_or(false);
            if generic && had_matcher {
                self.errs.at(
                    span.clone(),
                    "`generic = true` takes no exe, comm, cmdline or match",
                );
            } else if !generic && !had_matcher {
                self.errs.at(
                    span.clone(),
                    "host rule matches nothing: give exe, comm, cmdline or match (or generic = true)",
                );
            }
            let mut session_env = Vec::new();
            for e in h.session_env.unwrap_or_default() {
                let ok = !e.get_ref().is_empty()
                    && e.get_ref().len() <= 128
                    && !e.get_ref().starts_with(|c: char| c.is_ascii_digit())
                    && e.get_ref()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if ok {
                    session_env.push(e.into_inner());
                } else {
                    self.errs.at(
                        e.span(),
                        format!("bad environment variable name {:?}", e.get_ref()),
                    );
                }
            }
            let relays = self.matcher_list(h.relays, "relays");
            let mut lineage_fds = Vec::new();
            for fd in h.lineage_fds.unwrap_or_default() {
                match u32::try_from(*fd.get_ref()) {
                    Ok(n) if (3..=1 << 20).contains(&n) => lineage_fds.push(n),
                    _ => self.errs.at(
                        fd.span(),
                        format!(
                            "bad lineage fd {}: must be 3 or more (0-2 always count)",
                            fd.get_ref()
                        ),
                    ),
                }
            }
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

    fn servers(&mut self, raw: Vec<S<RawServer>>) -> Vec<ServerRule> {
        let mut out = Vec::new();
        for s in raw {
            let span = s.span();
            let s = s.into_inner();
            let matchers = self.matchers(s.exe, s.comm, s.cmdline, s.matches);
            if matchers.is_empty() {
                self.errs.at(
                    span.clone(),
                    "server rule matches nothing: give exe, comm, cmdline or match",
                );
            }
            let (name, template) = match s.name {
                None => {
                    self.errs.at(span, "server rule without `name`");
                    (String::new(), Template::default())
                }
                Some(n) => match Template::parse(n.get_ref()) {
                    Err(e) => {
                        self.errs.at(n.span(), e);
                        (String::new(), Template::default())
                    }
                    Ok(t) => {
                        for g in t.groups() {
                            let everywhere = !matchers.is_empty()
                                && matchers.iter().all(|m| {
                                    m.cmdline.as_ref().is_some_and(|c| {
                                        c.regex().capture_names().any(|n| n == Some(g))
                                    })
                                });
                            if !everywhere {
                                self.errs.at(
                                    n.span(),
                                    format!("server name refers to {{{g}}}, but not every cmdline pattern of this rule has a group (?P<{g}>...)"),
                                );
                            }
                        }
                        (n.into_inner(), t)
                    }
                },
            };
            out.push(ServerRule {
                name,
                matchers,
                template,
            });
        }
        out
    }

    fn protect(&mut self, raw: Vec<S<RawProtect>>) -> Vec<ProtectRule> {
        let mut out = Vec::new();
        for p in raw {
            let span = p.span();
            let p = p.into_inner();
            let mut rule = ProtectRule::default();
            let given = p.users.is_some()
                || p.cgroups.is_some()
                || p.comm.is_some()
                || p.exe.is_some()
                || p.cmdline.is_some();
            if !given {
                self.errs
                    .at(span, "empty protect rule: it would protect every process");
            }
            for u in p.users.unwrap_or_default() {
                let uspan = u.span();
                match u.into_inner() {
                    toml::Value::Integer(i) => match u32::try_from(i) {
                        Ok(uid) => rule.users.push(UserRef::Uid(uid)),
                        Err(_) => self.errs.at(uspan, format!("bad uid {i}")),
                    },
                    toml::Value::String(name) => {
                        if let Ok(uid) = name.parse::<u32>() {
                            rule.users.push(UserRef::Uid(uid));
                        } else {
                            match self.users.uid_of(&name) {
                                Some(uid) => rule.users.push(UserRef::Name { name, uid }),
                                None => self.errs.at(uspan, format!("unknown user {name:?}")),
                            }
                        }
                    }
                    other => self.errs.at(
                        uspan,
                        format!(
                            "invalid type: {}, expected a user name or uid",
                            other.type_str()
                        ),
                    ),
                }
            }
            for c in p.cgroups.unwrap_or_default() {
                if let Some(re) = c.get_ref().strip_prefix("re:") {
                    match Pattern::new(re) {
                        Ok(p) => rule.cgroups.push(CgroupMatch::Regex(p)),
                        Err(e) => self
                            .errs
                            .at(c.span(), format!("invalid pattern: {}", one_line(&e))),
                    }
                } else if c.get_ref().starts_with('/') {
                    rule.cgroups.push(CgroupMatch::Prefix(c.into_inner()));
                } else {
                    self.errs.at(
                        c.span(),
                        format!(
                            "bad cgroup {:?}: a path prefix starts with `/`, a pattern with `re:`",
                            c.get_ref()
                        ),
                    );
                }
            }
            rule.comm = self.pattern(p.comm);
            rule.exe = self.pattern(p.exe);
            rule.cmdline = self.pattern(p.cmdline);
            out.push(rule);
        }
        out
    }
}

fn bad_identity(s: &str) -> String {
    format!("bad server label {s:?}: must match ^[a-z0-9_.-]{{1,48}}$")
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
