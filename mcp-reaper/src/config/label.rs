//! Bounded names: host rule names, server identities and the templates that
//! derive identities from a command line.
//!
//! Owns: normalising npm/PyPI package names, Python modules and container
//! images to short labels (`[a-z0-9_.-]{1,48}`). Must never produce a label
//! outside that alphabet or length: labels become Prometheus label values.

/// Longest server identity (label) produced.
pub const MAX_LABEL_LEN: usize = 48;

/// A host rule name: `^[a-z0-9_-]{1,32}$`.
pub(super) fn is_host_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A server identity: `^[a-z0-9_.-]{1,48}$`.
pub(super) fn is_identity(s: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        })
}

/// Lowercases, maps other characters to `-`, trims separators at both
/// ends and cuts to [`MAX_LABEL_LEN`]. `None` if nothing is left.
fn sanitize(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_LABEL_LEN * 2));
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
        if out.len() >= MAX_LABEL_LEN * 2 {
            break;
        }
    }
    let trimmed = out.trim_matches(['-', '.', '_']);
    let cut = &trimmed[..trimmed.len().min(MAX_LABEL_LEN)];
    let cut = cut.trim_end_matches(['-', '.', '_']);
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// `@scope/name@1.2.3` -> `name`; `name==1.0`, `name[extra]` -> `name`.
fn package_label(raw: &str) -> Option<String> {
    let no_scope = match raw.strip_prefix('@') {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, name)| name),
        None => raw,
    };
    let end = no_scope
        .find(['@', '=', '<', '>', '~', '!', '[', ' ', ':'])
        .unwrap_or(no_scope.len());
    // A path (`.bin/x`, `pkg/dist/index.js`): the package is its first part.
    let name = no_scope[..end].split('/').next().unwrap_or("");
    sanitize(name)
}

/// `mcp_server_fetch.server` -> `mcp-server-fetch`.
fn module_label(raw: &str) -> Option<String> {
    let first = raw.split('.').next().unwrap_or("");
    sanitize(&first.replace('_', "-"))
}

/// `ghcr.io/github/github-mcp-server:v1@sha256:...` -> `github-mcp-server`;
/// `mcp/fetch` -> `mcp-fetch`.
fn image_label(image: &str) -> Option<String> {
    let no_digest = image.split('@').next().unwrap_or("");
    let mut parts: Vec<&str> = no_digest.split('/').collect();
    let last = parts.pop().unwrap_or("");
    let name = last.split(':').next().unwrap_or("");
    let name = name.to_ascii_lowercase();
    if name.contains("mcp") {
        sanitize(&name)
    } else if parts.iter().any(|p| p.to_ascii_lowercase().contains("mcp")) {
        sanitize(&format!("mcp-{name}"))
    } else {
        None
    }
}

/// `docker run` options that take a value as the next argument.
const DOCKER_VALUE_OPTS: &[&str] = &[
    "--add-host",
    "--annotation",
    "--attach",
    "--blkio-weight",
    "--cap-add",
    "--cap-drop",
    "--cgroup-parent",
    "--cgroupns",
    "--cidfile",
    "--cpu-period",
    "--cpu-quota",
    "--cpu-shares",
    "--cpus",
    "--cpuset-cpus",
    "--cpuset-mems",
    "--device",
    "--dns",
    "--dns-option",
    "--dns-search",
    "--domainname",
    "--entrypoint",
    "--env",
    "--env-file",
    "--expose",
    "--gpus",
    "--group-add",
    "--health-cmd",
    "--health-interval",
    "--health-retries",
    "--hostname",
    "--ip",
    "--ip6",
    "--ipc",
    "--isolation",
    "--label",
    "--label-file",
    "--link",
    "--log-driver",
    "--log-opt",
    "--mac-address",
    "--memory",
    "--memory-reservation",
    "--memory-swap",
    "--mount",
    "--name",
    "--network",
    "--net",
    "--network-alias",
    "--pid",
    "--platform",
    "--publish",
    "--pull",
    "--restart",
    "--runtime",
    "--security-opt",
    "--shm-size",
    "--stop-signal",
    "--stop-timeout",
    "--storage-opt",
    "--sysctl",
    "--tmpfs",
    "--ulimit",
    "--user",
    "--userns",
    "--uts",
    "--volume",
    "--volumes-from",
    "--workdir",
];
/// Short options that take a value.
const DOCKER_VALUE_SHORT: &[u8] = b"acehlmpuvw";

/// From the arguments after `docker run`: the image's label, if the
/// container is interactive (`-i`: stdio) and its image names MCP.
fn docker_label(args: &str) -> Option<String> {
    let mut interactive = false;
    let mut it = args.split(' ').filter(|a| !a.is_empty());
    while let Some(arg) = it.next() {
        if let Some(long) = arg.strip_prefix("--") {
            if long.is_empty() {
                // `--` ends the options: the image follows.
                let image = it.next()?;
                return interactive.then(|| image_label(image)).flatten();
            }
            let (name, value) = long
                .split_once('=')
                .map_or((long, None), |(n, v)| (n, Some(v)));
            if name == "interactive" {
                interactive = value.is_none_or(|v| v == "true");
            } else if value.is_none() && DOCKER_VALUE_OPTS.contains(&arg) {
                it.next();
            }
        } else if let Some(short) = arg.strip_prefix('-') {
            let bytes = short.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'i' {
                    interactive = true;
                }
                if DOCKER_VALUE_SHORT.contains(b) {
                    // The value is the rest of this argument, or the next.
                    if i + 1 == bytes.len() {
                        it.next();
                    }
                    break;
                }
            }
        } else {
            return interactive.then(|| image_label(arg)).flatten();
        }
    }
    None
}

/// A parsed server name: literal text and `{group}` references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Group(String),
}

impl Template {
    /// Parses `name`; literal parts must be label characters.
    pub(super) fn parse(name: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = name;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let Some(end) = after.find('}') else {
                    return Err(format!("unclosed `{{` in server name {name:?}"));
                };
                let group = &after[..end];
                if group.is_empty()
                    || !group
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("bad group name {group:?} in server name {name:?}"));
                }
                parts.push(Part::Group(group.to_owned()));
                rest = &after[end + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let lit = &rest[..end];
                if lit.contains('}') || !is_identity(lit) {
                    return Err(format!(
                        "server name {name:?}: the text outside {{groups}} must match [a-z0-9_.-] (at most {MAX_LABEL_LEN})"
                    ));
                }
                parts.push(Part::Lit(lit.to_owned()));
                rest = &rest[end..];
            }
        }
        if parts.is_empty() {
            return Err("empty server name".to_owned());
        }
        Ok(Template { parts })
    }

    /// Group names the template refers to.
    pub(super) fn groups(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Group(g) => Some(g.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// The identity for one match; `None` when a group did not take part or
    /// normalises to nothing (then the rule does not match).
    pub(super) fn render(&self, caps: Option<&regex::Captures<'_>>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Group(g) => {
                    let value = caps?.name(g)?.as_str();
                    let label = match g.as_str() {
                        "package" => package_label(value),
                        "module" => module_label(value),
                        "image" => image_label(value),
                        "docker_args" => docker_label(value),
                        _ => sanitize(value),
                    }?;
                    out.push_str(&label);
                }
            }
        }
        sanitize(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_labels() {
        assert_eq!(
            package_label("@modelcontextprotocol/server-everything@2025.4.8").as_deref(),
            Some("server-everything")
        );
        assert_eq!(
            package_label("mcp-server-fetch==1.2").as_deref(),
            Some("mcp-server-fetch")
        );
        assert_eq!(
            package_label("mcp-server-git[cli]").as_deref(),
            Some("mcp-server-git")
        );
        assert_eq!(
            package_label("@Scope/My_MCP Thing").as_deref(),
            Some("my_mcp")
        );
        assert_eq!(package_label("@x/"), None);
        let long = format!("mcp-{}", "a".repeat(200));
        assert_eq!(package_label(&long).map(|s| s.len()), Some(MAX_LABEL_LEN));
    }

    #[test]
    fn module_and_image_labels() {
        assert_eq!(
            module_label("mcp_server_time.server").as_deref(),
            Some("mcp-server-time")
        );
        assert_eq!(
            image_label("ghcr.io/github/github-mcp-server:v1@sha256:ab").as_deref(),
            Some("github-mcp-server")
        );
        assert_eq!(
            image_label("mcp/fetch:latest").as_deref(),
            Some("mcp-fetch")
        );
        assert_eq!(image_label("postgres:16"), None);
    }

    #[test]
    fn docker_args() {
        assert_eq!(
            docker_label("-i --rm -e GITHUB_TOKEN ghcr.io/github/github-mcp-server").as_deref(),
            Some("github-mcp-server")
        );
        assert_eq!(
            docker_label("--rm -it -v /a:/b --name=x mcp/fetch").as_deref(),
            Some("mcp-fetch")
        );
        assert_eq!(
            docker_label("--interactive --env MCP=1 mcp/time stdio").as_deref(),
            Some("mcp-time")
        );
        // Not interactive: no stdio, not a stdio server.
        assert_eq!(docker_label("--rm mcp/fetch"), None);
        // -e takes the value: the image is the next plain argument.
        assert_eq!(docker_label("-i -e mcp-token postgres"), None);
    }

    #[test]
    fn templates() {
        assert!(Template::parse("{package}").is_ok());
        assert!(Template::parse("gh-{package}").is_ok());
        assert!(Template::parse("{package").is_err());
        assert!(Template::parse("Bad Name").is_err());
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn names() {
        assert!(is_host_name("claude-code"));
        assert!(!is_host_name("Claude"));
        assert!(!is_host_name(&"a".repeat(33)));
        assert!(!is_host_name(""));
        assert!(is_identity("mcp-server-fetch"));
        assert!(!is_identity("a b"));
    }
}
