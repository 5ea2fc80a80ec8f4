//! Configuration tests: defaults, error reporting, classification.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, time::Duration};

use super::*;

fn args(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_owned).collect()
}

fn view<'a>(comm: &'a str, cmdline: &'a [String]) -> ProcView<'a> {
    ProcView {
        comm,
        exe: None,
        cmdline,
        uid: 1000,
        cgroup: None,
    }
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "t.toml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

fn server_id(cfg: &Config, cmdline: &str) -> Option<String> {
    let a = args(cmdline);
    let comm = Path::new(&a[0])
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    cfg.classify_server(&view(&comm, &a)).map(|m| m.identity)
}

#[test]
fn default_config_parses_and_equals_default() {
    let c = Config::from_toml_str(default_toml(), "default.toml").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.presets.len(), PRESET_NAMES.len());
    assert!(c.builtin_servers);
    assert_eq!(c.daemon.source, Source::Auto);
    assert_eq!(c.daemon.poll_interval, Duration::from_secs(1));
    assert_eq!(c.daemon.listen, Some("127.0.0.1:9863".parse().unwrap()));
    assert_eq!(c.daemon.audit_log, None);
    assert_eq!(c.daemon.unknown_server_label, "other");
    assert_eq!(c.policy, PolicyConfig::default());
    assert_eq!(c.policy.actions.get(Reason::Idle), Action::Observe);
    assert_eq!(c.policy.actions.get(Reason::PeerReleased), Action::Enforce);
    assert_eq!(c.host_rules().len(), PRESET_NAMES.len());
    assert!(c.server_rules().len() >= 8);
    // Code defaults agree with the documented file.
    assert_eq!(c.daemon, DaemonConfig::default());
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(
        Config::from_toml_str("", "empty").unwrap(),
        Config::default()
    );
}

#[test]
fn default_round_trips() {
    let c = Config::default();
    let text = c.to_toml().unwrap();
    assert_eq!(Config::from_toml_str(&text, "rt").unwrap(), c, "{text}");
}

#[test]
fn custom_config_round_trips() {
    let text = r#"
presets = ["openclaw", "vscode"]
builtin_servers = false
[daemon]
source = "poll"
poll_interval = "1500ms"
listen = "off"
audit_log = "/var/log/mcp-reaper/audit.jsonl"
server_labels = ["server-everything", "mcp-server-fetch"]
[policy]
grace = "1h30m"
kill_after = "0s"
dry_run = true
[policy.actions]
idle = "enforce"
[[host]]
name = "my-agent"
comm = 'my-agent'
match = [{ cmdline = 'node \S*/agent\.js(?: .*)?' }]
session_env = ["MY_SESSION"]
relays = [{ cmdline = 'relay(?: .*)?' }]
lineage_fds = [3, 4]
[[server]]
name = "{package}"
cmdline = '(?:\S*/)?bunx (?P<package>\S*mcp\S*)(?: .*)?'
[[protect]]
users = [0, "root"]
cgroups = ["/system.slice/keep.service", 're:/user\.slice/.*']
comm = 'keep'
"#;
    let c = Config::from_toml_str(text, "custom").unwrap();
    assert_eq!(c.daemon.listen, None);
    assert_eq!(c.policy.grace, Duration::from_secs(5400));
    assert_eq!(c.policy.actions.get(Reason::Idle), Action::Enforce);
    assert_eq!(c.host_rules().len(), 3);
    assert_eq!(c.server_rules().len(), 1);
    let out = c.to_toml().unwrap();
    assert_eq!(Config::from_toml_str(&out, "rt").unwrap(), c, "{out}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
    for bad in [
        "",
        "2",
        "s",
        "2 s",
        "-1s",
        "1.5s",
        "2sec",
        "9999999999999s",
        "400d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    for d in [0, 1, 999, 1000, 61_001, 90_061_001] {
        let d = Duration::from_millis(d);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = errors("[daemon]\nsource = \"auto\"\npoll_interval = \n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:3:"), "{e:?}");
}

#[test]
fn several_syntax_errors_all_reported() {
    let e = errors("a = \nb = [\n[daemon\n");
    assert!(e.len() >= 2, "{e:?}");
    assert!(e[0].starts_with("t.toml:1:"), "{e:?}");
}

#[test]
fn wrong_type_has_line_and_column() {
    let e = errors("[policy]\ndry_run = \"yes\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:11: "), "{e:?}");
    assert!(e[0].contains("bool"), "{e:?}");
}

#[test]
fn unknown_key_reported() {
    let e = errors("[daemon]\nsorce = \"auto\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:1: "), "{e:?}");
    assert!(e[0].contains("sorce"), "{e:?}");
}

#[test]
fn bad_regex_has_line_and_column() {
    let e = errors("[[host]]\nname = \"x\"\ncomm = 'foo(bar'\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:3:8: invalid pattern"), "{e:?}");
}

#[test]
fn bad_duration_has_line_and_column() {
    let e = errors("[policy]\ngrace = \"2 seconds\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:9: invalid duration"), "{e:?}");
    let e = errors("[daemon]\npoll_interval = \"1ms\"\n");
    assert!(
        e[0].starts_with("t.toml:2:17: poll_interval must be at least 10ms"),
        "{e:?}"
    );
}

#[test]
fn unknown_preset_has_line_and_column() {
    let e = errors("presets = [\"openclaw\",\n  \"vim\"]\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:3: unknown preset \"vim\""),
        "{e:?}"
    );
}

#[test]
fn duplicate_host_name() {
    let e = errors(
        "presets = []\n[[host]]\nname = \"a\"\ncomm = 'a'\n[[host]]\nname = \"a\"\ncomm = 'b'\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:6:8: duplicate host name \"a\""),
        "{e:?}"
    );
    // Same name as an enabled preset.
    let e = errors("[[host]]\nname = \"cursor\"\ncomm = 'c'\n");
    assert!(
        e[0].starts_with("t.toml:2:8: duplicate host name \"cursor\""),
        "{e:?}"
    );
    // Fine once the preset is off.
    assert!(
        Config::from_toml_str(
            "presets = [\"vscode\"]\n[[host]]\nname = \"cursor\"\ncomm = 'c'\n",
            "t"
        )
        .is_ok()
    );
}

#[test]
fn bad_label_names() {
    let e = errors("[[host]]\nname = \"My Host\"\ncomm = 'x'\n");
    assert!(e[0].starts_with("t.toml:2:8: bad host name"), "{e:?}");
    let e = errors(&format!(
        "[[host]]\nname = \"{}\"\ncomm = 'x'\n",
        "a".repeat(33)
    ));
    assert!(e[0].starts_with("t.toml:2:8: bad host name"), "{e:?}");
    let e = errors(
        "[daemon]\nunknown_server_label = \"Other!\"\nserver_labels = [\"ok\", \"no way\"]\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:24: bad server label"), "{e:?}");
    assert!(e[1].starts_with("t.toml:3:24: bad server label"), "{e:?}");
    let e = errors("[[server]]\nname = \"Bad\"\ncomm = 'x'\n");
    assert!(e[0].starts_with("t.toml:2:8: server name"), "{e:?}");
    let e = errors("[[server]]\nname = \"{pkg}\"\ncmdline = 'x (?P<package>y)'\n");
    assert!(
        e[0].starts_with("t.toml:2:8: server name refers to {pkg}"),
        "{e:?}"
    );
}

#[test]
fn unknown_reason_and_action() {
    let e = errors("[policy.actions]\nidle = \"kill\"\nbored = \"observe\"\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:8: unknown action \"kill\""),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.toml:3:1: unknown reason \"bored\""),
        "{e:?}"
    );
}

#[test]
fn all_errors_reported_at_once() {
    let text = "\
presets = [\"openclaw\", \"emacs\"]
builtin_servers = \"yes\"
[daemon]
source = \"kernel\"
poll_interval = 5
listen = \"localhost\"
audit_log = \"relative.log\"
[policy]
grace = \"soon\"
kill_after = \"2s\"
[[host]]
name = \"UPPER\"
comm = '('
lineage_fds = [1, \"x\"]
session_env = [\"1BAD\"]
[[host]]
name = \"nomatch\"
[[server]]
cmdline = '[z-a]'
[[protect]]
[[protect]]
users = [\"no-such-user-here\", -1]
cgroups = [\"relative\"]
";
    let e = errors(text);
    let expect = [
        "t.toml:1:24: unknown preset",
        "t.toml:2:19: invalid type",
        "t.toml:4:10: unknown source",
        "t.toml:5:17: invalid type",
        "t.toml:6:10: invalid listen address",
        "t.toml:7:13: audit_log must be an absolute path",
        "t.toml:9:9: invalid duration",
        "t.toml:12:8: bad host name",
        "t.toml:13:8: invalid pattern",
        "t.toml:14:16: bad lineage fd 1",
        "t.toml:14:19: invalid type",
        "t.toml:15:16: bad environment variable name",
        "host rule matches nothing",
        "server rule without `name`",
        "t.toml:19:11: invalid pattern",
        "empty protect rule",
        "t.toml:22:10: unknown user",
        "t.toml:22:31: bad uid -1",
        "t.toml:23:12: bad cgroup",
    ];
    for want in expect {
        assert!(
            e.iter().any(|l| l.contains(want)),
            "missing {want:?} in:\n{}",
            e.join("\n")
        );
    }
    assert_eq!(e.len(), expect.len(), "{}", e.join("\n"));
}

#[test]
fn invalid_input_never_panics() {
    for text in [
        "\u{0}",
        "[[host]]\n[[host]]",
        "host = 1",
        "[host]\nname = 1",
        "presets = \"all\"",
        "[[server]]\nname = \"{\"",
        "[policy.actions]\nidle = [1]",
        "[[protect]]\nusers = [[1]]",
        "[[host]]\nname = \"a\"\nmatch = [{}]",
        "[[host]]\nrelays = 3",
        "x = 1\nx = 2",
        "[daemon]\n[daemon]",
        "\"\\uD800\" = 1",
        "[[host]]\nname = \"g\"\ngeneric = true\ncomm = 'x'",
    ] {
        assert!(Config::from_toml_str(text, "t").is_err(), "{text:?}");
    }
    let huge = format!(
        "[[host]]\nname = \"a\"\ncomm = '{}'\n",
        "(a{1000}){1000}".repeat(10)
    );
    let e = errors(&huge);
    assert!(e[0].contains("invalid pattern"), "{e:?}");
}

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[policy]\ngrace = \"x\"\n").unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2:9: ", p.display())), "{e}");
    let e = Config::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
    std::fs::write(&p, b"a = \"\xff\"\n").unwrap();
    assert!(Config::load(&p).unwrap_err().to_string().contains("UTF-8"));
}

#[test]
fn fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    Config::load(&dir.join("full.toml")).unwrap();
    let e = Config::load(&dir.join("broken.toml")).unwrap_err();
    assert!(e.errors.len() >= 5, "{e}");
}

// --- classification ---------------------------------------------------------

#[test]
fn npm_exec_three_levels() {
    let c = Config::default();
    let root = args("npm exec @modelcontextprotocol/server-everything@2025.4.8");
    let sh = args("sh -c mcp-server-everything");
    let node = args("node /root/.npm/_npx/8f3b/node_modules/.bin/mcp-server-everything");
    assert_eq!(
        server_id(&c, &root.join(" ")).as_deref(),
        Some("server-everything")
    );
    assert_eq!(
        server_id(&c, &sh.join(" ")).as_deref(),
        Some("mcp-server-everything")
    );
    assert_eq!(
        server_id(&c, &node.join(" ")).as_deref(),
        Some("mcp-server-everything")
    );
    let tree: Vec<&[String]> = vec![&root, &sh, &node];
    assert_eq!(server_identity(&tree, &c), "server-everything");
    // Root unknown: the next member names it.
    let other = args("/usr/bin/env FOO=1");
    let tree: Vec<&[String]> = vec![&other, &sh, &node];
    assert_eq!(server_identity(&tree, &c), "mcp-server-everything");
    let tree: Vec<&[String]> = vec![&other];
    assert_eq!(server_identity(&tree, &c), "other");
    assert_eq!(server_identity(&[], &c), "other");
}

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

#[test]
fn openclaw_relays_are_not_servers() {
    let c = Config::default();
    for cmd in [
        "/opt/node/bin/node /usr/lib/node_modules/openclaw/dist/spawn-broker/worker.js",
        "node /usr/lib/node_modules/openclaw/dist/spawn-broker/service-child-relay.js --fd 3",
        "node /usr/lib/node_modules/openclaw/dist/spawn-broker/service-child-group-anchor.js -- npx -y @modelcontextprotocol/server-everything",
    ] {
        let a = args(cmd);
        let v = view("node", &a);
        assert!(c.classify_server(&v).is_none(), "{cmd}");
        assert_eq!(
            c.classify_relay(&v).map(|h| h.name.as_str()),
            Some("openclaw"),
            "{cmd}"
        );
        assert!(c.classify_host(&v).is_none(), "{cmd}");
    }
    // The server under the anchor still is one.
    assert_eq!(
        server_id(
            &c,
            "npm exec @modelcontextprotocol/server-everything@2025.4.8"
        )
        .as_deref(),
        Some("server-everything")
    );
}

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

#[test]
fn protect_rules() {
    let passwd =
        "root:x:0:0:root:/root:/bin/bash\npostgres:x:114:120::/var/lib/postgresql:/bin/bash\n";
    struct P<'a>(&'a str);
    impl raw::Users for P<'_> {
        fn uid_of(&self, name: &str) -> Option<u32> {
            raw::uid_in_passwd(self.0, name)
        }
    }
    let text = r#"
[[protect]]
users = ["postgres"]
[[protect]]
cgroups = ["/system.slice/keep.service", 're:/user\.slice/user-\d+\.slice/app-keep-.*\.scope']
[[protect]]
users = [1000]
comm = 'vim|nvim'
[[protect]]
cmdline = '.* --keep-alive(?: .*)?'
"#;
    let c = raw::parse(text, "t", &P(passwd)).unwrap();
    let a = args("mcp-server-fetch");
    let mk = |uid, cgroup, comm| ProcView {
        comm,
        exe: None,
        cmdline: &a,
        uid,
        cgroup,
    };
    assert!(c.is_protected(&mk(114, None, "x")));
    assert!(!c.is_protected(&mk(115, None, "x")));
    assert!(c.is_protected(&mk(0, Some("/system.slice/keep.service"), "x")));
    assert!(c.is_protected(&mk(0, Some("/system.slice/keep.service/sub"), "x")));
    assert!(!c.is_protected(&mk(0, Some("/system.slice/keep.service2"), "x")));
    assert!(c.is_protected(&mk(
        0,
        Some("/user.slice/user-1000.slice/app-keep-1.scope"),
        "x"
    )));
    assert!(c.is_protected(&mk(1000, None, "nvim")));
    assert!(
        !c.is_protected(&mk(1000, None, "node")),
        "fields of one rule are ANDed"
    );
    assert!(!c.is_protected(&mk(1001, None, "vim")));
    let b = args("node server.js --keep-alive");
    assert!(c.is_protected(&view("node", &b)));
    assert!(!Config::default().is_protected(&mk(0, None, "x")));
    let e = raw::parse("[[protect]]\nusers = [\"nobody-here\"]\n", "t", &P(passwd)).unwrap_err();
    assert!(e.to_string().starts_with("t:2:10: unknown user"), "{e}");
}

#[test]
fn labels_are_bounded() {
    let c = Config::from_toml_str(
        "[daemon]\nunknown_server_label = \"unlisted\"\nserver_labels = [\"server-everything\"]\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        server_id(&c, "npx -y @modelcontextprotocol/server-everything").as_deref(),
        Some("server-everything")
    );
    assert_eq!(
        server_id(&c, "uvx mcp-server-fetch").as_deref(),
        Some("unlisted")
    );
    let long = format!("npx -y @acme/mcp-{}", "x".repeat(300));
    let c = Config::default();
    let id = server_id(&c, &long).unwrap();
    assert!(
        id.len() <= MAX_LABEL_LEN && id.starts_with("mcp-xxx"),
        "{id}"
    );
}

#[test]
fn hostile_command_lines() {
    let c = Config::default();
    // 4 KiB argument, many arguments, odd bytes already made lossy.
    let big = format!(
        "npx -y @modelcontextprotocol/server-everything {}",
        "A".repeat(4096)
    );
    assert_eq!(server_id(&c, &big).as_deref(), Some("server-everything"));
    let many: Vec<String> = std::iter::once("node".to_owned())
        .chain((0..20_000).map(|i| format!("--x{i}")))
        .collect();
    assert!(c.classify_server(&view("node", &many)).is_none());
    assert!(c.classify_host(&view("node", &many)).is_none());
    let odd = vec![
        "npx".to_owned(),
        "-y".to_owned(),
        "@x/mcp-\u{FFFD}\u{FFFD}".to_owned(),
    ];
    let _ = c.classify_server(&view("npx", &odd));
    let empty: Vec<String> = Vec::new();
    assert!(c.classify_server(&view("", &empty)).is_none());
    assert!(join_cmdline(&many).len() <= CMDLINE_MATCH_LIMIT);
}
