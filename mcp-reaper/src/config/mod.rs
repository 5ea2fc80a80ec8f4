//! Configuration: the TOML file, its documented defaults, the built-in host
//! presets and server launch shapes, and the compiled matchers that classify
//! a process as a host, an MCP server or a protected process.
//!
//! Owns: parsing and validating the file (every error reported at once, each
//! with its line and column), the defaults (`default.toml`, embedded), the
//! presets (`presets.toml`, embedded), and bounded server identities used as
//! metric labels.
//!
//! Must never: panic on any input, read anything but the file it is given (and
//! `/etc/passwd` to resolve protected user names), or decide by itself that a
//! process may be killed: a match here only names and scopes processes;
//! ownership and verdicts belong to other modules.
//!
//! Patterns use the `regex` crate: matching is linear in the input (no
//! backtracking, so no regex DoS), compiled size is capped, and command lines
//! longer than [`CMDLINE_MATCH_LIMIT`] are cut before matching. Durations are
//! parsed here ("500ms", "2s", "5m", "1h", "1d", sums like "1h30m"); no crate.

mod label;
mod launcher;
mod raw;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use regex::{Regex, RegexBuilder};
use serde::{Serialize, Serializer};

pub use label::server_identity;
pub use launcher::LAUNCHER_PATTERNS;

/// The documented default configuration (every option, commented).
const DEFAULT_TOML: &str = include_str!("default.toml");
/// Built-in host presets and server launch shapes.
const PRESETS_TOML: &str = include_str!("presets.toml");

/// Every built-in preset, in the default order.
pub const PRESET_NAMES: &[&str] = &[
    "openclaw",
    "claude-code",
    "claude-desktop",
    "cursor",
    "vscode",
    "codex",
    "goose",
    "generic",
];

/// Command lines are cut to this many bytes before matching.
pub const CMDLINE_MATCH_LIMIT: usize = 32 * 1024;
/// Longest server identity (label) produced.
pub const MAX_LABEL_LEN: usize = 48;
/// Compiled size cap for one pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The documented default configuration file.
#[must_use]
pub fn default_toml() -> &'static str {
    DEFAULT_TOML
}

/// The built-in presets and server shapes, in configuration syntax.
#[must_use]
pub fn presets_toml() -> &'static str {
    PRESETS_TOML
}

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

/// Event source choice for the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Auto,
    Ebpf,
    Poll,
}

/// What to do when a tree raises a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Metrics, audit and scan output only.
    Observe,
    /// Reap the tree after the grace period.
    Enforce,
}

/// Why a tree is a candidate for reaping (ARCHITECTURE.md, signals table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    PeerReleased,
    HostExited,
    SessionEnded,
    Remnant,
    Idle,
    Superseded,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::PeerReleased,
        Reason::HostExited,
        Reason::SessionEnded,
        Reason::Remnant,
        Reason::Idle,
        Reason::Superseded,
    ];

    /// The name used in the file, metrics and the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PeerReleased => "peer-released",
            Reason::HostExited => "host-exited",
            Reason::SessionEnded => "session-ended",
            Reason::Remnant => "remnant",
            Reason::Idle => "idle",
            Reason::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Per-reason actions (`[policy.actions]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Actions {
    pub peer_released: Action,
    pub host_exited: Action,
    pub session_ended: Action,
    pub remnant: Action,
    pub idle: Action,
    pub superseded: Action,
}

impl Actions {
    #[must_use]
    pub fn get(&self, reason: Reason) -> Action {
        match reason {
            Reason::PeerReleased => self.peer_released,
            Reason::HostExited => self.host_exited,
            Reason::SessionEnded => self.session_ended,
            Reason::Remnant => self.remnant,
            Reason::Idle => self.idle,
            Reason::Superseded => self.superseded,
        }
    }

    fn set(&mut self, reason: Reason, action: Action) {
        let slot = match reason {
            Reason::PeerReleased => &mut self.peer_released,
            Reason::HostExited => &mut self.host_exited,
            Reason::SessionEnded => &mut self.session_ended,
            Reason::Remnant => &mut self.remnant,
            Reason::Idle => &mut self.idle,
            Reason::Superseded => &mut self.superseded,
        };
        *slot = action;
    }
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            peer_released: Action::Enforce,
            host_exited: Action::Enforce,
            session_ended: Action::Enforce,
            remnant: Action::Enforce,
            idle: Action::Observe,
            superseded: Action::Observe,
        }
    }
}

/// `[daemon]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaemonConfig {
    pub source: Source,
    #[serde(serialize_with = "ser_duration")]
    pub poll_interval: Duration,
    /// `None`: no metrics endpoint (`listen = "off"`).
    #[serde(serialize_with = "ser_listen")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    pub unknown_server_label: String,
    /// Empty: every identity is allowed as a label.
    pub server_labels: Vec<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            source: Source::Auto,
            poll_interval: Duration::from_secs(1),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9863))),
            audit_log: None,
            unknown_server_label: "other".to_owned(),
            server_labels: Vec::new(),
        }
    }
}

/// `[policy]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    #[serde(serialize_with = "ser_duration")]
    pub grace: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub kill_after: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub idle_after: Duration,
    pub dry_run: bool,
    pub actions: Actions,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            grace: Duration::from_secs(2),
            kill_after: Duration::from_secs(2),
            idle_after: Duration::from_secs(30 * 60),
            dry_run: false,
            actions: Actions::default(),
        }
    }
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

    fn regex(&self) -> &Regex {
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
    fn matches_joined(&self, p: &ProcView<'_>, joined: &str) -> bool {
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
    /// (see [`Config::generic_host`]); never returned by `classify_host`.
    #[serde(skip_serializing_if = "is_false")]
    pub generic: bool,
}

impl HostRule {
    #[must_use]
    pub fn matches(&self, p: &ProcView<'_>) -> bool {
        let joined = join_cmdline(p.cmdline);
        self.matchers.iter().any(|m| m.matches_joined(p, &joined))
    }

    /// Whether `p` is one of this host's relay or anchor hops.
    #[must_use]
    pub fn is_relay(&self, p: &ProcView<'_>) -> bool {
        let joined = join_cmdline(p.cmdline);
        self.relays.iter().any(|m| m.matches_joined(p, &joined))
    }
}

/// A `[[server]]` rule or a built-in server shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerRule {
    /// A label, or a template such as `{package}` over the cmdline
    /// pattern's named groups.
    pub name: String,
    #[serde(rename = "match")]
    pub matchers: Vec<ProcMatcher>,
    #[serde(skip)]
    template: label::Template,
}

/// A process classified as an MCP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMatch<'a> {
    pub rule: &'a ServerRule,
    /// Bounded identity: `[a-z0-9_.-]{1,48}`, or the configured fallback.
    pub identity: String,
}

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

/// Every pattern given matches (none given: true).
fn fields_match(
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

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Enabled host presets.
    pub presets: Vec<String>,
    /// Built-in server shapes on.
    pub builtin_servers: bool,
    pub daemon: DaemonConfig,
    pub policy: PolicyConfig,
    /// The file's `[[host]]` rules (presets not included).
    #[serde(rename = "host", skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostRule>,
    /// The file's `[[server]]` rules (built-ins not included).
    #[serde(rename = "server", skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerRule>,
    #[serde(rename = "protect", skip_serializing_if = "Vec::is_empty")]
    pub protect: Vec<ProtectRule>,
    /// File rules, then enabled presets.
    #[serde(skip)]
    all_hosts: Vec<HostRule>,
    /// File rules, then built-in shapes if on.
    #[serde(skip)]
    all_servers: Vec<ServerRule>,
}

impl Default for Config {
    /// The embedded `default.toml`; equal to parsing [`default_toml`].
    fn default() -> Self {
        // The fallback is unreachable (tested); still never panic.
        Config::from_toml_str(DEFAULT_TOML, "<default>").unwrap_or_else(|_| Config::fallback())
    }
}

impl Config {
    /// Defaults built in code, without presets or built-in shapes: only
    /// used should the embedded files ever fail to parse.
    fn fallback() -> Self {
        Config {
            presets: Vec::new(),
            builtin_servers: false,
            daemon: DaemonConfig::default(),
            policy: PolicyConfig::default(),
            hosts: Vec::new(),
            servers: Vec::new(),
            protect: Vec::new(),
            all_hosts: Vec::new(),
            all_servers: Vec::new(),
        }
    }

    /// Parses and validates `text`; `source_name` names it in errors. Every
    /// error is reported, each with its line and column.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        raw::parse(text, source_name, &raw::SystemUsers)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Config::from_toml_str(&text, &name),
                Err(e) => Err(ConfigErrors::whole_file(
                    &name,
                    format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
                )),
            },
            Err(e) => Err(ConfigErrors::whole_file(&name, format!("cannot read: {e}"))),
        }
    }

    /// This configuration as TOML (presets by name, not expanded). Parsing
    /// the result gives an equal `Config`.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }

    /// Every host rule in effect: the file's, then the enabled presets.
    #[must_use]
    pub fn host_rules(&self) -> &[HostRule] {
        &self.all_hosts
    }

    /// Every server rule in effect: the file's, then the built-in shapes.
    #[must_use]
    pub fn server_rules(&self) -> &[ServerRule] {
        &self.all_servers
    }

    /// The first non-generic host rule matching `p`.
    #[must_use]
    pub fn classify_host(&self, p: &ProcView<'_>) -> Option<&HostRule> {
        let joined = join_cmdline(p.cmdline);
        self.all_hosts
            .iter()
            .filter(|h| !h.generic)
            .find(|h| h.matchers.iter().any(|m| m.matches_joined(p, &joined)))
    }

    /// The generic host rule, if enabled: a process that spawns a server
    /// and matches no other host rule is a host under this rule.
    #[must_use]
    pub fn generic_host(&self) -> Option<&HostRule> {
        self.all_hosts.iter().find(|h| h.generic)
    }

    /// Whether `p` runs a launcher (`npm exec`, `npx`, `sh -c`, `env`,
    /// `uvx`, `pipx run`, `docker run`, ...): part of the tree of the server
    /// it starts, never a host. Built in, the same for every configuration.
    #[must_use]
    pub fn is_launcher(&self, p: &ProcView<'_>) -> bool {
        launcher::is_launcher(p)
    }

    /// The host rule whose relay matchers match `p`, if any.
    #[must_use]
    pub fn classify_relay(&self, p: &ProcView<'_>) -> Option<&HostRule> {
        let joined = join_cmdline(p.cmdline);
        self.all_hosts
            .iter()
            .find(|h| h.relays.iter().any(|m| m.matches_joined(p, &joined)))
    }

    /// The first server rule matching `p`, with the bounded identity it
    /// derives. Hosts' relay and anchor hops are never servers.
    #[must_use]
    pub fn classify_server(&self, p: &ProcView<'_>) -> Option<ServerMatch<'_>> {
        let joined = join_cmdline(p.cmdline);
        if self
            .all_hosts
            .iter()
            .any(|h| h.relays.iter().any(|m| m.matches_joined(p, &joined)))
        {
            return None;
        }
        self.all_servers.iter().find_map(|rule| {
            rule.matchers.iter().find_map(|m| {
                if !m.matches_joined(p, &joined) {
                    return None;
                }
                let caps = m.cmdline.as_ref().and_then(|c| c.regex().captures(&joined));
                let identity = rule.template.render(caps.as_ref())?;
                Some(ServerMatch {
                    rule,
                    identity: self.bounded_label(identity),
                })
            })
        })
    }

    /// Whether some `[[protect]]` rule names cgroups (then every protect
    /// check must read the process's cgroup).
    #[must_use]
    pub fn protects_by_cgroup(&self) -> bool {
        self.protect.iter().any(|r| !r.cgroups.is_empty())
    }

    /// Whether `p` must never be touched.
    #[must_use]
    pub fn is_protected(&self, p: &ProcView<'_>) -> bool {
        if self.protect.is_empty() {
            return false;
        }
        let joined = join_cmdline(p.cmdline);
        self.protect.iter().any(|r| r.matches_joined(p, &joined))
    }

    /// `identity` if the allowlist (if any) has it, else the fallback.
    #[must_use]
    pub fn bounded_label(&self, identity: String) -> String {
        let allowed =
            self.daemon.server_labels.is_empty() || self.daemon.server_labels.contains(&identity);
        if allowed && label::is_identity(&identity) {
            identity
        } else {
            self.daemon.unknown_server_label.clone()
        }
    }
}

/// Arguments joined by single spaces, cut to [`CMDLINE_MATCH_LIMIT`] bytes.
fn join_cmdline(args: &[String]) -> String {
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

/// Parses "500ms", "2s", "5m", "1h", "1d" and sums of them ("1h30m").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d), e.g. \"500ms\", \"2s\", \"1h30m\""
        )
    };
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(bad());
        }
        let (num, tail) = rest.split_at(digits);
        let n: u128 = num.parse().map_err(|_| bad())?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(ms_per));
        rest = tail;
    }
    let max_ms: u128 = 365 * 86_400_000;
    if total > max_ms {
        return Err(format!("duration {text:?} is longer than a year"));
    }
    u64::try_from(total)
        .map(Duration::from_millis)
        .map_err(|_| bad())
}

/// Formats a duration the way [`parse_duration`] reads it.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, per) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= per {
            out.push_str(&format!("{}{unit}", rest / per));
            rest %= per;
        }
    }
    out
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn ser_listen<S: Serializer>(l: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match l {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str("off"),
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// One configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; `None` for errors about the whole file.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    pub message: String,
}

/// Every error found in one configuration source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    fn whole_file(source_name: &str, message: String) -> Self {
        ConfigErrors {
            source_name: source_name.to_owned(),
            errors: vec![ConfigError {
                line: None,
                column: None,
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (e.line, e.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.source_name, e.message)?,
                _ => write!(f, "{}: {}", self.source_name, e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
