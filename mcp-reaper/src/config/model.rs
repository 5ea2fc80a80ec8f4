//! The checked configuration (`Config`) and the questions the daemon asks
//! it about a process: which host, relay or server rule it matches, under
//! which bounded identity, and whether it is protected.
//!
//! Owns: the rules in effect (the file's rules first, then the enabled
//! presets and, if on, the built-in server shapes; order is precedence),
//! the precedence between kinds (a host's relay or anchor hop is never a
//! server) and the label allowlist applied to server identities.
//! Must never: read files or /proc (callers hand over a `ProcView`), or
//! decide by itself that a process may be killed: a match here only names
//! and scopes processes; ownership and verdicts belong to other modules.

use std::path::Path;

use serde::Serialize;

use super::{
    control::ControlConfig,
    daemon::DaemonConfig,
    host::{self, HostRule},
    label::is_identity,
    launcher,
    matcher::{ProcView, join_cmdline},
    policy::PolicyConfig,
    protect::{self, ProtectRule},
    server::{ServerMatch, ServerRule},
};

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
    #[serde(skip_serializing_if = "ControlConfig::is_default")]
    pub control: ControlConfig,
    /// File rules, then enabled presets.
    #[serde(skip)]
    all_hosts: Vec<HostRule>,
    /// File rules, then built-in shapes if on.
    #[serde(skip)]
    all_servers: Vec<ServerRule>,
}

/// A file's checked sections, before the built-in rules join them.
pub(super) struct Parts {
    pub(super) presets: Vec<String>,
    pub(super) builtin_servers: bool,
    pub(super) daemon: DaemonConfig,
    pub(super) policy: PolicyConfig,
    pub(super) hosts: Vec<HostRule>,
    pub(super) servers: Vec<ServerRule>,
    pub(super) protect: Vec<ProtectRule>,
    pub(super) control: ControlConfig,
}

impl Config {
    /// The configuration of `parts`. In effect: the file's host rules, then
    /// those of `preset_hosts` the file enables; the file's server rules,
    /// then `shapes` if built-in servers are on.
    pub(super) fn from_parts(
        parts: Parts,
        preset_hosts: &[HostRule],
        shapes: &[ServerRule],
    ) -> Config {
        let mut all_hosts = parts.hosts.clone();
        all_hosts.extend(
            preset_hosts
                .iter()
                .filter(|h| parts.presets.contains(&h.name))
                .cloned(),
        );
        let mut all_servers = parts.servers.clone();
        if parts.builtin_servers {
            all_servers.extend(shapes.iter().cloned());
        }
        Config {
            presets: parts.presets,
            builtin_servers: parts.builtin_servers,
            daemon: parts.daemon,
            policy: parts.policy,
            hosts: parts.hosts,
            servers: parts.servers,
            protect: parts.protect,
            control: parts.control,
            all_hosts,
            all_servers,
        }
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
        host::first_host(&self.all_hosts, p, &join_cmdline(p.cmdline))
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
        host::first_relay(&self.all_hosts, p, &join_cmdline(p.cmdline))
    }

    /// The first server rule matching `p`, with the bounded identity it
    /// derives. Hosts' relay and anchor hops are never servers.
    #[must_use]
    pub fn classify_server(&self, p: &ProcView<'_>) -> Option<ServerMatch<'_>> {
        let joined = join_cmdline(p.cmdline);
        if host::first_relay(&self.all_hosts, p, &joined).is_some() {
            return None;
        }
        self.all_servers.iter().find_map(|rule| {
            let identity = rule.identity_of(p, &joined)?;
            Some(ServerMatch {
                rule,
                identity: self.bounded_label(identity),
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
        protect::any_matches(&self.protect, p)
    }

    /// `identity` if the allowlist (if any) has it, else the fallback.
    #[must_use]
    pub fn bounded_label(&self, identity: String) -> String {
        let allowed =
            self.daemon.server_labels.is_empty() || self.daemon.server_labels.contains(&identity);
        if allowed && is_identity(&identity) {
            identity
        } else {
            self.daemon.unknown_server_label.clone()
        }
    }
}

/// A short bounded identity for an MCP server tree, from the command lines
/// of its members (root first): the first member a server rule names, e.g.
/// `npm exec @modelcontextprotocol/server-everything@2025.4.8` ->
/// `server-everything`. Unknown, or outside `server_labels`: the configured
/// `unknown_server_label`.
#[must_use]
pub fn server_identity(cmdlines_of_tree: &[&[String]], config: &Config) -> String {
    for args in cmdlines_of_tree {
        let argv0 = args.first().map_or("", String::as_str);
        let base = Path::new(argv0)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(argv0);
        let mut end = base.len().min(15);
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        let view = ProcView {
            comm: &base[..end],
            exe: None,
            cmdline: args,
            uid: u32::MAX,
            cgroup: None,
        };
        if let Some(m) = config.classify_server(&view)
            && m.identity != config.daemon.unknown_server_label
        {
            return m.identity;
        }
    }
    config.daemon.unknown_server_label.clone()
}
