//! Where a server process belongs: which tree, rooted where, started by
//! which host. A pure decision over the chain of the process's ancestors.
//!
//! Owns: the role of one process in a launch chain (`role`) and the
//! placement of a server given its chain (`place`). A tree is the process
//! the real host spawned plus every descendant: the root is the topmost
//! process of the unbroken line of servers and launchers (`npm exec`, `sh
//! -c`, `env`, `npx`, `uvx`, `pipx run`, `docker run`) above the topmost
//! server, and the host is the process above that line. So `host -> npm
//! exec -> sh -c -> node` is one tree rooted at `npm exec`, owned by
//! `host`, whichever of the four execs is classified first, and whether or
//! not a parent's exec was classified before its child's.
//! Must never: make a launcher a host, read /proc, or decide anything about
//! killing: callers gather the evidence, and ownership decides the verdict.

use crate::{
    config::{Config, ProcView},
    procs::identity::ProcKey,
};

/// What a process is, for tree placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Matches a server rule.
    Server,
    /// Only starts something else (`npm exec`, `sh -c`, `env`, ...).
    Launcher,
    /// Matches a (non-generic) host rule.
    Host,
    /// A relay or anchor hop of a host rule (the host's side).
    Relay,
    /// Protected, or unreadable: never part of a tree's root line.
    Protected,
    /// Anything else (a generic host, if it starts a server).
    Other,
}

/// The role of a process from what it runs. Relays and hosts first (a
/// host rule names a host even if it looks like a launcher), then servers,
/// then launchers.
#[must_use]
pub fn role(config: &Config, v: &ProcView<'_>, protected: bool) -> Role {
    if protected {
        Role::Protected
    } else if config.classify_relay(v).is_some() {
        Role::Relay
    } else if config.classify_host(v).is_some() {
        Role::Host
    } else if config.classify_server(v).is_some() {
        Role::Server
    } else if config.is_launcher(v) {
        Role::Launcher
    } else {
        Role::Other
    }
}

/// One process of a chain, with what is already known about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub key: ProcKey,
    pub role: Role,
    /// The known tree this process already belongs to (its root, or a
    /// member of it by the kernel's lineage).
    pub tree: Option<ProcKey>,
}

/// Where a classified process goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Not a server: nothing to place.
    None,
    /// Part of the known tree rooted at `root` (lineage says so).
    Member { root: ProcKey },
    /// The root of a new tree; `host` is the process above the root's line
    /// (none when the line reaches PID 1 or a process that is gone).
    NewTree {
        root: ProcKey,
        host: Option<ProcKey>,
    },
}

/// Places `chain[0]` given its ancestors: `chain[i + 1]` is the parent of
/// `chain[i]`, and the chain ends where the parent is PID 1 or unknown.
///
/// - Not a server: `None` (a launcher or helper joins a tree by lineage).
/// - Any process of the chain below the first host or relay already in a
///   known tree: a member of the nearest such tree (a server's descendants
///   are its tree's).
/// - Else, from the topmost server below the first host or relay, the root
///   is the topmost process of the unbroken line of servers and launchers,
///   and the host is the process above it.
#[must_use]
pub fn place(chain: &[Link]) -> Placement {
    let Some(first) = chain.first() else {
        return Placement::None;
    };
    if first.role != Role::Server {
        return Placement::None;
    }
    // Hosts and relays end the line: what is above them is another world
    // (a host's servers are its own trees, even if the host runs in one).
    let end = chain
        .iter()
        .position(|l| matches!(l.role, Role::Host | Role::Relay))
        .unwrap_or(chain.len());
    if let Some(root) = chain[..end].iter().find_map(|l| l.tree) {
        return Placement::Member { root };
    }
    let top_server = chain[..end]
        .iter()
        .rposition(|l| l.role == Role::Server)
        .unwrap_or(0);
    let mut root = top_server;
    while root + 1 < end && matches!(chain[root + 1].role, Role::Server | Role::Launcher) {
        root += 1;
    }
    Placement::NewTree {
        root: chain[root].key,
        host: chain.get(root + 1).map(|l| l.key),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    /// One process of a fixture: (pid, parent pid, command line).
    type Proc = (u32, u32, &'static str);

    fn key(pid: u32) -> ProcKey {
        ProcKey::new(pid, u64::from(pid))
    }

    fn role_of(config: &Config, cmdline: &str) -> Role {
        let args: Vec<String> = cmdline.split(' ').map(str::to_string).collect();
        let comm: String = args[0]
            .rsplit('/')
            .next()
            .unwrap()
            .chars()
            .take(15)
            .collect();
        let v = ProcView {
            comm: &comm,
            exe: None,
            cmdline: &args,
            uid: 1000,
            cgroup: None,
        };
        role(config, &v, false)
    }

    /// Classifies `order` (pids) one by one the way the supervisor does:
    /// each classified process's chain carries the trees known so far (a
    /// process is in a tree when it is the root or descends from it).
    /// Returns every tree created: root -> host.
    fn run(config: &Config, procs: &[Proc], order: &[u32]) -> BTreeMap<u32, Option<u32>> {
        let parent: HashMap<u32, u32> = procs.iter().map(|&(p, pp, _)| (p, pp)).collect();
        let roles: HashMap<u32, Role> = procs
            .iter()
            .map(|&(p, _, c)| (p, role_of(config, c)))
            .collect();
        let mut trees: BTreeMap<u32, Option<u32>> = BTreeMap::new();
        let descends = |mut p: u32, root: u32| loop {
            if p == root {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) => p = pp,
                None => return false,
            }
        };
        for &pid in order {
            let mut chain = Vec::new();
            let mut cur = pid;
            while let Some(&r) = roles.get(&cur) {
                let tree = trees.keys().copied().find(|&t| descends(cur, t)).map(key);
                chain.push(Link {
                    key: key(cur),
                    role: r,
                    tree,
                });
                cur = parent[&cur];
            }
            match place(&chain) {
                Placement::None | Placement::Member { .. } => {}
                Placement::NewTree { root, host } => {
                    trees.insert(root.tgid, host.map(|h| h.tgid));
                }
            }
        }
        trees
    }

    fn permutations(items: &[u32]) -> Vec<Vec<u32>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first);
                out.push(p);
            }
        }
        out
    }

    /// Process chains as hosts really start them -> the one tree (root,
    /// host) they must make, whichever order the execs are classified in.
    /// PID 10 is the host; it sits under PID 1.
    // A table of cases, one per launch shape: long by nature.
    fn chains() -> Vec<(&'static str, Vec<Proc>, u32, u32)> {
        let host = (10, 1, "node /srv/app/sdk_host.mjs");
        let mut out = vec![
            (
                "npm exec -> sh -c -> node (TypeScript SDK)",
                vec![
                    host,
                    (20, 10, "npm exec @modelcontextprotocol/server-everything"),
                    (21, 20, "sh -c 'mcp-server-everything'"),
                    (
                        22,
                        21,
                        "node /srv/npm/node_modules/.bin/mcp-server-everything",
                    ),
                ],
                20,
                10,
            ),
            (
                "npm exec still at its env and node stages",
                vec![
                    host,
                    (
                        20,
                        10,
                        "/usr/bin/env node /usr/bin/npm exec --offline @modelcontextprotocol/server-everything",
                    ),
                    (21, 20, "sh -c 'mcp-server-everything'"),
                    (
                        22,
                        21,
                        "/usr/bin/env node /srv/npm/node_modules/.bin/mcp-server-everything",
                    ),
                    (
                        23,
                        21,
                        "node /srv/npm/node_modules/.bin/mcp-server-everything",
                    ),
                ],
                20,
                10,
            ),
            (
                "npm exec under its early title `npm`",
                vec![
                    host,
                    (20, 10, "npm"),
                    (21, 20, "sh -c 'mcp-server-everything'"),
                    (
                        22,
                        21,
                        "node /srv/npm/node_modules/.bin/mcp-server-everything",
                    ),
                ],
                20,
                10,
            ),
            (
                "npx -y -> sh -c -> node",
                vec![
                    host,
                    (20, 10, "npx -y @acme/weather-mcp"),
                    (21, 20, "sh -c weather-mcp"),
                    (
                        22,
                        21,
                        "node /home/u/.npm/_npx/1/node_modules/.bin/weather-mcp",
                    ),
                ],
                20,
                10,
            ),
            (
                "a host spawning through a shell: sh -c npx ...",
                vec![
                    host,
                    (
                        20,
                        10,
                        "/bin/sh -c npx -y @modelcontextprotocol/server-memory",
                    ),
                    (
                        21,
                        20,
                        "node /usr/bin/npx -y @modelcontextprotocol/server-memory",
                    ),
                    (22, 21, "sh -c mcp-server-memory"),
                    (
                        23,
                        22,
                        "node /home/u/.npm/_npx/2/node_modules/.bin/mcp-server-memory",
                    ),
                ],
                20,
                10,
            ),
            (
                "uvx -> python",
                vec![
                    host,
                    (20, 10, "uvx mcp-server-fetch"),
                    (
                        21,
                        20,
                        "/home/u/.cache/uv/env/bin/python /home/u/.cache/uv/env/bin/mcp-server-fetch",
                    ),
                ],
                20,
                10,
            ),
            (
                "pipx run -> python",
                vec![
                    host,
                    (20, 10, "pipx run mcp-server-time"),
                    (
                        21,
                        20,
                        "/root/.local/pipx/venvs/t/bin/python /root/.local/pipx/venvs/t/bin/mcp-server-time",
                    ),
                ],
                20,
                10,
            ),
            (
                "env -> uvx -> python",
                vec![
                    host,
                    (20, 10, "env UV_OFFLINE=1 uvx mcp-server-git"),
                    (21, 20, "python3 /u/.cache/uv/x/bin/mcp-server-git"),
                ],
                20,
                10,
            ),
            (
                "docker run -i wrapped by sh -c",
                vec![
                    host,
                    (20, 10, "sh -c docker run -i --rm mcp/github"),
                    (21, 20, "docker run -i --rm mcp/github"),
                ],
                20,
                10,
            ),
            (
                "a plain server binary",
                vec![host, (20, 10, "/opt/bin/mcp-server-files --root /srv")],
                20,
                10,
            ),
            (
                "a plain binary through sh -c",
                vec![
                    host,
                    (20, 10, "sh -c /opt/bin/mcp-server-files"),
                    (21, 20, "/opt/bin/mcp-server-files"),
                ],
                20,
                10,
            ),
            (
                "python -m under env",
                vec![
                    host,
                    (20, 10, "/usr/bin/env python3 -m mcp_server_time"),
                    (21, 20, "python3 -m mcp_server_time"),
                ],
                20,
                10,
            ),
        ];
        // A host launched through launchers itself: they stay above it.
        out.push((
            "a host that was itself started by sh -c and npx",
            vec![
                (5, 1, "sh -c npx my-agent"),
                (6, 5, "npm exec my-agent"),
                (10, 6, "node /srv/app/agent.mjs"),
                (20, 10, "npm exec @modelcontextprotocol/server-everything"),
                (21, 20, "sh -c 'mcp-server-everything'"),
                (
                    22,
                    21,
                    "node /srv/npm/node_modules/.bin/mcp-server-everything",
                ),
            ],
            20,
            10,
        ));
        out
    }

    fn check_every_order(config: &Config, what: &str) {
        for (name, procs, root, host) in chains() {
            let pids: Vec<u32> = procs.iter().map(|p| p.0).filter(|&p| p != 10).collect();
            let want = BTreeMap::from([(root, Some(host))]);
            for order in permutations(&pids) {
                assert_eq!(
                    run(config, &procs, &order),
                    want,
                    "{what}: {name}: classified in order {order:?}"
                );
            }
            // Launchers are never hosts, in any of these chains.
            for &(pid, _, cmdline) in &procs {
                if config.is_launcher(&ProcView {
                    comm: "x",
                    exe: None,
                    cmdline: &cmdline.split(' ').map(str::to_string).collect::<Vec<_>>(),
                    uid: 1000,
                    cgroup: None,
                }) {
                    assert_ne!(pid, host, "{what}: {name}: launcher {cmdline} as host");
                }
            }
        }
    }

    #[test]
    fn each_launch_chain_is_one_tree_rooted_where_the_host_spawned_it_in_any_order() {
        let none = Config::from_toml_str("presets = []", "t").unwrap();
        check_every_order(&none, "presets = []");
    }

    /// The field bug was in the `generic` host preset's path (every preset
    /// on, as shipped): the same chains, the same trees.
    #[test]
    fn the_generic_host_preset_makes_the_same_trees() {
        let shipped = Config::default();
        assert!(shipped.generic_host().is_some());
        check_every_order(&shipped, "default presets");
    }

    #[test]
    fn hosts_and_relays_end_the_line_and_lineage_wins() {
        let l = |pid: u32, role: Role, tree: Option<u32>| Link {
            key: key(pid),
            role,
            tree: tree.map(key),
        };
        use Role::*;
        let cases: Vec<(Vec<Link>, Placement)> = vec![
            // Not a server: nothing.
            (
                vec![l(1, Launcher, None), l(2, Other, None)],
                Placement::None,
            ),
            (vec![], Placement::None),
            // A relay above the line is the host (OpenClaw's anchor).
            (
                vec![l(3, Server, None), l(2, Launcher, None), l(1, Relay, None)],
                Placement::NewTree {
                    root: key(2),
                    host: Some(key(1)),
                },
            ),
            // A server above a named host is another tree's business.
            (
                vec![l(3, Server, None), l(2, Host, None), l(1, Server, Some(1))],
                Placement::NewTree {
                    root: key(3),
                    host: Some(key(2)),
                },
            ),
            // A server below a helper of a known tree is that tree's.
            (
                vec![
                    l(3, Server, None),
                    l(2, Other, Some(1)),
                    l(1, Server, Some(1)),
                ],
                Placement::Member { root: key(1) },
            ),
            // Reparented to init: the kernel's lineage mark decides.
            (
                vec![l(3, Server, Some(1))],
                Placement::Member { root: key(1) },
            ),
            // A protected process is never in a root line.
            (
                vec![l(3, Server, None), l(2, Protected, None), l(1, Other, None)],
                Placement::NewTree {
                    root: key(3),
                    host: Some(key(2)),
                },
            ),
            // The line reaches PID 1: no host.
            (
                vec![l(3, Server, None), l(2, Launcher, None)],
                Placement::NewTree {
                    root: key(2),
                    host: None,
                },
            ),
        ];
        for (chain, want) in cases {
            assert_eq!(place(&chain), want, "{chain:?}");
        }
    }
}
