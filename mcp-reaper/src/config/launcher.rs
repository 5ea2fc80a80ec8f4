//! Launcher shapes: the processes that only start something else (`npm
//! exec`, `npx`, `sh -c`, `env`, `uvx`, `pipx run`, `docker run`, ...).
//!
//! Owns: the built-in launcher patterns and the test of a process against
//! them. A launcher between a host and an MCP server belongs to the
//! server's tree (the tree is what the host spawned plus every
//! descendant), so a launcher is never a host, generic or not.
//! Must never: decide by itself that a process is a server, a host or may
//! be killed: this only names what a process runs.

use std::sync::LazyLock;

use super::matcher::{Pattern, ProcView, join_cmdline};

/// Built-in launcher shapes, anchored like every pattern, matched against
/// the command line joined by single spaces.
pub const LAUNCHER_PATTERNS: &[&str] = &[
    // env [-i] [-u NAME] [NAME=VALUE ...] CMD ...: the kernel runs
    // `#!/usr/bin/env node` scripts (npm, npx, server bins) through it.
    r"(?:\S*/)?env(?: \S+)+",
    // sh -c / bash -lc ... CMD: `npm exec` runs the package's bin this way,
    // and hosts that spawn with a shell do too.
    r"(?:\S*/)?(?:ba|da|z|k|fi)?sh(?: -[A-Za-z]+)* -[A-Za-z]*c[A-Za-z]* .+",
    // npm exec / npm x / npx / npm-cli.js / npx-cli.js, directly or under
    // node, and npm's own process title (`npm exec PKG`).
    r"(?:(?:\S*/)?node[\w.-]*(?: -\S+)* )?(?:\S*/)?(?:npx(?:-cli\.js)?|npm(?:-cli\.js)? (?:exec|x))(?: .+)?",
    // npm's own title while it starts, before it names its command.
    r"npm",
    // pnpm dlx, yarn dlx, pnpx, bunx, bun x.
    r"(?:\S*/)?(?:(?:pnpm|yarn) dlx|pnpx|bunx|bun x)(?: .+)?",
    // uvx, uv tool run, uv run, pipx run.
    r"(?:\S*/)?(?:uvx|uv(?: --?[\w-]+(?:=\S*)?)* (?:tool run|tool uvx|run)|pipx(?: --?[\w-]+(?:=\S*)?)* run)(?: .+)?",
    // docker|podman|nerdctl [global flags] [container] run ...
    r"(?:\S*/)?(?:docker|podman|nerdctl)(?: --?[\w-]+(?:=\S*)?)* (?:container )?run(?: .+)?",
];

static LAUNCHERS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    LAUNCHER_PATTERNS
        .iter()
        .filter_map(|src| Pattern::new(src).ok())
        .collect()
});

/// Whether `p` runs a launcher shape.
#[must_use]
pub fn is_launcher(p: &ProcView<'_>) -> bool {
    let joined = join_cmdline(p.cmdline);
    LAUNCHERS.iter().any(|l| l.is_match(&joined))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn launcher(cmdline: &str) -> bool {
        let args: Vec<String> = cmdline.split(' ').map(str::to_string).collect();
        is_launcher(&ProcView {
            comm: "x",
            exe: None,
            cmdline: &args,
            uid: 0,
            cgroup: None,
        })
    }

    #[test]
    fn every_launcher_pattern_compiles() {
        assert_eq!(LAUNCHERS.len(), LAUNCHER_PATTERNS.len());
    }

    #[test]
    fn launchers_are_what_starts_servers_and_nothing_else() {
        let cases = [
            (
                "/usr/bin/env node /usr/bin/npm exec --offline @modelcontextprotocol/server-everything",
                true,
            ),
            ("env FOO=1 mcp-server-x", true),
            (
                "node /usr/bin/npm exec --offline @modelcontextprotocol/server-everything",
                true,
            ),
            ("npm exec @modelcontextprotocol/server-everything", true),
            ("npm exec some-tool", true),
            ("npm", true),
            ("npx -y @acme/weather", true),
            ("/usr/lib/node_modules/npm/bin/npx-cli.js foo", true),
            ("sh -c 'mcp-server-everything'", true),
            ("sh -c mcp-server-everything", true),
            ("/bin/bash -lc npx -y foo", true),
            ("sh -ec exec foo", true),
            ("uvx mcp-server-fetch", true),
            ("uv tool run some-server", true),
            ("uv run --with mcp server.py", true),
            ("pipx run some-server", true),
            ("docker run -i --rm mcp/github", true),
            ("podman --log-level=debug run -i image", true),
            ("pnpm dlx foo", true),
            ("bunx foo", true),
            // Not launchers: hosts, servers themselves, plain shells.
            ("node /srv/host.mjs", false),
            ("node /srv/node_modules/.bin/mcp-server-everything", false),
            ("python3 host.py", false),
            ("python3 -m mcp_server_time", false),
            ("bash", false),
            ("sh script.sh", false),
            ("env", false),
            ("npm install", false),
            ("docker ps", false),
            ("openclaw-gateway", false),
            ("claude", false),
        ];
        for (cmdline, want) in cases {
            assert_eq!(launcher(cmdline), want, "{cmdline}");
        }
    }
}
