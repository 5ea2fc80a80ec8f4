//! Which processes in a /proc snapshot are MCP trees, and who belongs to
//! each.
//!
//! Owns: `find_roots` (each server's chain of parents placed by
//! `classify`), `members_of` (descendants by parent links) and the view of
//! a process the configuration's rules match against.
//! Must never: make a protected process or a zombie a root, or let a
//! reused PID adopt processes older than it: a parent must be older than
//! its child.

use std::collections::{HashMap, HashSet};

use crate::{
    config::{Config, ProcView},
    judge::classify::{self, Placement, Role},
    procs::identity::ProcKey,
    procs::procscan::ProcInfo,
};

pub(super) fn view(p: &ProcInfo) -> ProcView<'_> {
    ProcView {
        comm: &p.comm,
        exe: p.exe.as_deref(),
        cmdline: &p.cmdline,
        uid: p.uid,
        cgroup: None,
    }
}

/// Finds the tree roots in `procs`, by `classify::place` over each
/// server's chain of parents: the root of `host -> npm exec -> sh -c ->
/// node` is `npm exec`, and a launcher above a server (`sh -c`, `env`,
/// `npx`, ...) is part of its tree, never its host. Protected processes
/// are never roots.
pub fn find_roots(procs: &[ProcInfo], config: &Config) -> Vec<ProcKey> {
    let by_pid: HashMap<u32, &ProcInfo> = procs.iter().map(|p| (p.key.tgid, p)).collect();
    let role = |p: &ProcInfo| {
        classify::role(
            config,
            &view(p),
            p.is_zombie() || config.is_protected(&view(p)),
        )
    };
    let mut roots: Vec<ProcKey> = Vec::new();
    for p in procs {
        if role(p) != Role::Server {
            continue;
        }
        let mut chain = Vec::new();
        let mut cur: Option<&ProcInfo> = Some(p);
        while let Some(c) = cur.filter(|_| chain.len() < 64) {
            chain.push(classify::Link {
                key: c.key,
                role: role(c),
                tree: None,
            });
            // A parent must be older than its child: a reused PID is not.
            cur = by_pid
                .get(&c.ppid)
                .copied()
                .filter(|pp| pp.key.tgid > 1 && pp.key.start_ticks <= c.key.start_ticks);
        }
        if let Placement::NewTree { root, .. } = classify::place(&chain)
            && !roots.contains(&root)
        {
            roots.push(root);
        }
    }
    roots.sort();
    roots
}

/// Every process below `root` by parent links (live ones only).
pub fn members_of<'a>(
    root: ProcKey,
    procs: impl IntoIterator<Item = &'a ProcInfo>,
) -> Vec<ProcKey> {
    let mut children: HashMap<u32, Vec<&ProcInfo>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = vec![root];
    let mut queue = vec![root.tgid];
    let mut seen: HashSet<u32> = HashSet::from([root.tgid]);
    while let Some(pid) = queue.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            // A child must be younger than its parent: a reused PID cannot
            // adopt another process's children.
            if c.key.start_ticks >= root.start_ticks && seen.insert(c.key.tgid) {
                out.push(c.key);
                queue.push(c.key.tgid);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn proc(pid: u32, start: u64, ppid: u32, comm: &str, args: &[&str]) -> ProcInfo {
        ProcInfo {
            key: ProcKey::new(pid, start),
            ppid,
            pgid: pid as i32,
            sid: pid as i32,
            uid: 1000,
            state: 'S',
            comm: comm.into(),
            cmdline: args.iter().map(|s| s.to_string()).collect(),
            cmdline_truncated: false,
            exe: None,
            rss_bytes: 1 << 20,
            ns_pid: None,
        }
    }

    fn npm_tree(base: u32, host: u32) -> Vec<ProcInfo> {
        vec![
            proc(
                base,
                500,
                host,
                "npm exec @mode",
                &[
                    "npm",
                    "exec",
                    "--offline",
                    "@modelcontextprotocol/server-everything",
                ],
            ),
            proc(
                base + 1,
                501,
                base,
                "sh",
                &["sh", "-c", "mcp-server-everything"],
            ),
            proc(
                base + 2,
                502,
                base + 1,
                "node",
                &["node", "/srv/node_modules/.bin/mcp-server-everything"],
            ),
        ]
    }

    #[test]
    fn the_npm_exec_shape_is_one_tree_rooted_at_npm_exec() {
        let config = Config::default();
        let mut procs = vec![proc(100, 10, 1, "python3", &["python3", "host.py"])];
        procs.extend(npm_tree(200, 100));
        let roots = find_roots(&procs, &config);
        assert_eq!(roots, vec![ProcKey::new(200, 500)]);
        let members = members_of(roots[0], &procs);
        assert_eq!(members.len(), 3);
    }

    /// The shape the TypeScript SDK produces (npm quotes the bin for `sh
    /// -c`; the kernel starts `#!/usr/bin/env node` scripts through env), in
    /// a snapshot: one tree rooted at `npm exec`, with or without the
    /// `generic` preset.
    #[test]
    fn the_sdk_shape_in_a_snapshot_is_one_tree_rooted_at_npm_exec() {
        for config in [
            Config::default(),
            Config::from_toml_str("presets = []", "t").unwrap(),
        ] {
            for npm in [
                "npm exec @modelcontextprotocol/server-everything",
                "/usr/bin/env node /usr/bin/npm exec --offline @modelcontextprotocol/server-everything",
                "npm",
            ] {
                let procs = vec![
                    proc(100, 10, 1, "node", &["node", "/srv/sdk_host.mjs"]),
                    proc(
                        200,
                        500,
                        100,
                        "npm exec @mode",
                        &npm.split(' ').collect::<Vec<_>>(),
                    ),
                    proc(
                        201,
                        501,
                        200,
                        "sh",
                        &["sh", "-c", "'mcp-server-everything'"],
                    ),
                    proc(
                        202,
                        502,
                        201,
                        "node",
                        &["node", "/srv/node_modules/.bin/mcp-server-everything"],
                    ),
                ];
                assert_eq!(
                    find_roots(&procs, &config),
                    vec![ProcKey::new(200, 500)],
                    "{npm}"
                );
            }
        }
    }

    #[test]
    fn identical_trees_under_one_host_are_separate_roots() {
        let config = Config::default();
        let mut procs = vec![proc(100, 10, 1, "python3", &["python3", "host.py"])];
        procs.extend(npm_tree(200, 100));
        procs.extend(npm_tree(300, 100));
        assert_eq!(find_roots(&procs, &config).len(), 2);
    }

    #[test]
    fn a_reused_pid_does_not_adopt_older_processes() {
        let config = Config::default();
        let mut procs = npm_tree(200, 100);
        // An older process whose ppid happens to be the root's (reused) PID.
        procs.push(proc(999, 100, 200, "old", &["old"]));
        let members = members_of(ProcKey::new(200, 500), &procs);
        assert!(!members.iter().any(|k| k.tgid == 999));
        let _ = config;
    }
}
