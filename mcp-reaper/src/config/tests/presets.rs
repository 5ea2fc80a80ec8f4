//! Tests of the built-in presets and server shapes: the launch shapes of
//! npm, npx, Python, uvx, Docker and plain binaries, the host presets, and
//! turning either off.

use std::path::Path;

use super::support::{args, server_id, view};
use crate::config::{Config, ProcView};

#[test]
fn npm_and_npx_shapes() {
    let c = Config::default();
    for (cmd, want) in [
        (
            "npx -y @modelcontextprotocol/server-filesystem /tmp",
            "server-filesystem",
        ),
        (
            "npx --yes @modelcontextprotocol/server-memory",
            "server-memory",
        ),
        (
            "npm exec --offline --yes -- @modelcontextprotocol/server-everything@2025.4.8 stdio",
            "server-everything",
        ),
        (
            "npm exec --package=@acme/mcp-server-notes@1.0.0 -- mcp-server-notes",
            "mcp-server-notes",
        ),
        (
            "npm exec --package @acme/mcp-server-notes mcp-server-notes",
            "mcp-server-notes",
        ),
        (
            "/usr/bin/node /usr/lib/node_modules/npm/bin/npx-cli.js -y mcp-server-kubernetes",
            "mcp-server-kubernetes",
        ),
        ("npx -y @upstash/context7-mcp@latest", "context7-mcp"),
        ("npx @playwright/mcp@latest --headless", "mcp"),
        (
            "node /usr/lib/node_modules/@modelcontextprotocol/server-github/dist/index.js",
            "server-github",
        ),
        (
            "/usr/local/bin/node --max-old-space-size=512 /app/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio",
            "server-everything",
        ),
    ] {
        assert_eq!(server_id(&c, cmd).as_deref(), Some(want), "{cmd}");
    }
    for cmd in [
        "npx -y cowsay",
        "npm exec left-pad",
        "node /srv/app/index.js",
        "npm install @modelcontextprotocol/sdk",
    ] {
        assert_eq!(server_id(&c, cmd), None, "{cmd}");
    }
}

#[test]
fn python_and_uvx_shapes() {
    let c = Config::default();
    for (cmd, want) in [
        ("uvx mcp-server-fetch", "mcp-server-fetch"),
        (
            "uvx mcp-server-git==2025.1.14 --repository /src",
            "mcp-server-git",
        ),
        (
            "/root/.local/bin/uvx --from git+https://github.com/x/y mcp-server-time --local-timezone UTC",
            "mcp-server-time",
        ),
        (
            "uv tool run mcp-server-sqlite --db-path /tmp/x.db",
            "mcp-server-sqlite",
        ),
        ("pipx run mcp-server-fetch", "mcp-server-fetch"),
        ("python -m mcp_server_time", "mcp-server-time"),
        (
            "/opt/venv/bin/python3.12 -u -m mcp_server_fetch --ignore-robots-txt",
            "mcp-server-fetch",
        ),
        (
            "/root/.cache/uv/archive-v0/abc/bin/python /root/.cache/uv/archive-v0/abc/bin/mcp-server-fetch",
            "mcp-server-fetch",
        ),
    ] {
        assert_eq!(server_id(&c, cmd).as_deref(), Some(want), "{cmd}");
    }
    for cmd in [
        "uvx ruff check",
        "python -m http.server",
        "python3 /srv/manage.py runserver",
    ] {
        assert_eq!(server_id(&c, cmd), None, "{cmd}");
    }
}

#[test]
fn docker_and_binary_shapes() {
    let c = Config::default();
    for (cmd, want) in [
        (
            "docker run -i --rm -e GITHUB_PERSONAL_ACCESS_TOKEN ghcr.io/github/github-mcp-server",
            "github-mcp-server",
        ),
        ("/usr/bin/docker run --rm -i mcp/fetch", "mcp-fetch"),
        (
            "podman run -it --name fs -v /tmp:/tmp mcp/filesystem /tmp",
            "mcp-filesystem",
        ),
        ("github-mcp-server stdio", "github-mcp-server"),
        ("/usr/local/bin/mcp-server-fetch", "mcp-server-fetch"),
        (
            "/bin/sh -c exec mcp-server-everything",
            "mcp-server-everything",
        ),
    ] {
        assert_eq!(server_id(&c, cmd).as_deref(), Some(want), "{cmd}");
    }
    for cmd in [
        "docker run --rm mcp/fetch",
        "docker run -i postgres:16",
        "docker ps",
        "sh -c ls",
    ] {
        assert_eq!(server_id(&c, cmd), None, "{cmd}");
    }
}

#[test]
fn builtin_servers_can_be_disabled() {
    let c = Config::from_toml_str("builtin_servers = false", "t").unwrap();
    assert_eq!(server_id(&c, "uvx mcp-server-fetch"), None);
    let c = Config::from_toml_str(
        "builtin_servers = false\n[[server]]\nname = \"fetch\"\ncmdline = 'uvx mcp-server-fetch'\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        server_id(&c, "uvx mcp-server-fetch").as_deref(),
        Some("fetch")
    );
}

// Long by design: one case per preset, in one table a reader compares at a glance.
#[test]
fn hosts_are_classified() {
    let c = Config::default();
    let host = |comm: &str, cmd: &str, exe: Option<&str>| {
        let a = args(cmd);
        let v = ProcView {
            comm,
            exe: exe.map(Path::new),
            cmdline: &a,
            uid: 1000,
            cgroup: None,
        };
        c.classify_host(&v).map(|h| h.name.clone())
    };
    assert_eq!(
        host("openclaw-gatewa", "openclaw-gateway", None).as_deref(),
        Some("openclaw")
    );
    assert_eq!(
        host(
            "node",
            "/usr/bin/node /usr/lib/node_modules/openclaw/openclaw.mjs gateway --port 18789",
            None
        )
        .as_deref(),
        Some("openclaw")
    );
    assert_eq!(
        host("claude", "claude --print hi", None).as_deref(),
        Some("claude-code")
    );
    assert_eq!(
        host(
            "node",
            "node /usr/lib/node_modules/@anthropic-ai/claude-code/cli.js",
            None
        )
        .as_deref(),
        Some("claude-code")
    );
    assert_eq!(
        host(
            "claude-desktop",
            "/usr/lib/claude-desktop/claude-desktop",
            None
        )
        .as_deref(),
        Some("claude-desktop")
    );
    assert_eq!(
        host(
            "code",
            "/usr/share/code/code --type=extensionHost --lang=en-US --enable-sandbox",
            None
        )
        .as_deref(),
        Some("vscode")
    );
    assert_eq!(
        host("node", "/home/u/.vscode-server/bin/abc123/node --dns-result-order=ipv4first /home/u/.vscode-server/bin/abc123/out/bootstrap-fork --type=extensionHost --transformURIs", None).as_deref(),
        Some("vscode")
    );
    assert_eq!(
        host(
            "cursor",
            "/usr/share/cursor/cursor --type=extensionHost",
            None
        )
        .as_deref(),
        Some("cursor")
    );
    assert_eq!(
        host(
            "codex",
            "codex",
            Some(
                "/usr/lib/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/codex/codex"
            )
        )
        .as_deref(),
        Some("codex")
    );
    assert_eq!(
        host("goose", "goose session", None).as_deref(),
        Some("goose")
    );
    // Not hosts: a renderer, a shell, an MCP server.
    assert_eq!(
        host("code", "/usr/share/code/code --type=renderer", None),
        None
    );
    assert_eq!(host("bash", "bash", None), None);
    assert_eq!(
        host(
            "node",
            "node /x/node_modules/.bin/mcp-server-everything",
            None
        ),
        None
    );
    assert_eq!(c.generic_host().map(|h| h.name.as_str()), Some("generic"));
    let oc = c
        .host_rules()
        .iter()
        .find(|h| h.name == "openclaw")
        .unwrap();
    assert_eq!(oc.lineage_fds, vec![3]);
    assert_eq!(oc.relays.len(), 3);
}

#[test]
fn presets_select_hosts() {
    let c = Config::from_toml_str("presets = [\"vscode\"]", "t").unwrap();
    assert_eq!(c.host_rules().len(), 1);
    assert!(c.generic_host().is_none());
    let a = args("claude");
    assert!(c.classify_host(&view("claude", &a)).is_none());
    let c = Config::from_toml_str(
        "presets = []\n[[host]]\nname = \"mine\"\nexe = '/opt/mine/bin/agent'\nmatch = [{ comm = 'agentd' }]\n",
        "t",
    )
    .unwrap();
    let a = args("agent");
    let v = ProcView {
        comm: "agent",
        exe: Some(Path::new("/opt/mine/bin/agent")),
        cmdline: &a,
        uid: 0,
        cgroup: None,
    };
    assert_eq!(c.classify_host(&v).map(|h| h.name.as_str()), Some("mine"));
    assert_eq!(
        c.classify_host(&view("agentd", &a))
            .map(|h| h.name.as_str()),
        Some("mine")
    );
    assert!(
        c.classify_host(&view("agent", &a)).is_none(),
        "exe is required by the first matcher"
    );
}
