//! Tests of the questions asked of a `Config`: tree identities, relays
//! that are never servers, the label allowlist, and hostile command lines.

use super::support::{args, server_id, view};
use crate::config::{
    CMDLINE_MATCH_LIMIT, Config, MAX_LABEL_LEN, matcher::join_cmdline, server_identity,
};

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
