//! `cargo xtask layout`: the import graph between the files of the daemon
//! crate (`mcp-reaper/src`) and of this one (`xtask/src`), and the cycles in
//! it. `cargo xtask test` runs it and fails on a cycle.
//!
//! An edge A -> B means file A names an item of file B: a `use` (grouped,
//! nested, `pub use`, `use super::..`, `use self::..`) or a path in code
//! (`crate::x::y`, `super::x`, a child module, a module a `use` bound),
//! landing in the file that defines the longest module prefix of the path.
//! `mod b;` alone is no edge. Comments, doc comments and string literals are
//! not read as code: the files are parsed with syn (see `parse`). Not seen,
//! as no path names them: methods a child file adds to its parent's type in
//! an `impl` block and the parent calls.
//!
//! Owns: finding and reading a crate's `.rs` files, the report (text and
//! JSON) and the exit status. Must never: write to the sources or build
//! anything; it only reads files.
mod graph;
mod parse;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::paths::repo_root;

use graph::{Cycle, Graph, SourceFile};

/// What `cargo xtask layout --help` shows after the one-line summary.
pub const LONG_ABOUT: &str = "\
Check that no two files import each other, directly or round a loop.

For each crate source directory (default: mcp-reaper/src and xtask/src) this
builds a graph with one node per .rs file and an edge A -> B whenever file A
names an item of file B:
  - a `use` declaration: `use crate::a::b::C;`, grouped `use crate::{a::{b, c}, d};`,
    `pub use child::X;` in a parent, `use super::Y;` in a child, `use self::..`;
  - a path in code, a macro's or an attribute's arguments: `crate::a::f()`, `super::T`,
    `child::f()`, or `m::f()` after `use crate::m;`.
A path lands in the file that defines the longest module prefix of it:
`crate::config::label::Label` in config/label.rs, `crate::config::Config` in
config/mod.rs (or config.rs), `crate::Thing` in lib.rs. `mod child;` alone is
no edge. Comments, doc comments and strings are ignored (files are parsed
with syn). A main.rs beside a lib.rs is its own crate and is left out.
Not seen, as no path names them: methods that a child file adds to its
parent's type in an `impl` block and that the parent calls.

A cycle is a set of files that reach each other through such edges (a
strongly connected component of more than one file). Each one is printed with
one way round it, every step as file:line of the path that makes the edge.
Break it by moving what both sides need into a lower file that imports
neither.

Exit status: 0 no cycles, 1 cycles found, 2 usage or read/parse error.";

#[derive(clap::Args)]
pub struct Args {
    /// Crate source directories to check [default: mcp-reaper/src xtask/src].
    #[arg(value_name = "SRC_DIR")]
    dirs: Vec<PathBuf>,
    /// Print one JSON object (every crate's edges and cycles) instead of text.
    #[arg(long)]
    json: bool,
    /// Also list every edge: from -> to, where first named, how many paths.
    #[arg(long)]
    edges: bool,
}

/// One crate's graph and its cycles.
pub struct Checked {
    /// How the source directory is shown: relative to the repository when
    /// inside it.
    label: String,
    graph: Graph,
    cycles: Vec<Cycle>,
    /// Files below `src` that are crate roots of their own.
    left_out: Vec<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let dirs = if args.dirs.is_empty() {
        default_dirs()
    } else {
        args.dirs.clone()
    };
    let mut checked = Vec::new();
    for dir in &dirs {
        match check(dir) {
            Ok(c) => checked.push(c),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    if args.json {
        println!("{:#}", to_json(&checked));
    } else {
        for c in &checked {
            print!("{}", to_text(c, args.edges));
        }
    }
    if checked.iter().any(|c| !c.cycles.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The `cargo xtask test` step: both crates, failing on any cycle.
pub fn check_workspace() -> Result<()> {
    let mut cycles = 0;
    for dir in default_dirs() {
        let checked = check(&dir)?;
        print!("{}", to_text(&checked, false));
        cycles += checked.cycles.len();
    }
    if cycles > 0 {
        bail!("{cycles} import cycle(s) between files (see above; `cargo xtask layout --help`)");
    }
    Ok(())
}

fn default_dirs() -> Vec<PathBuf> {
    let root = repo_root();
    vec![
        root.join("mcp-reaper").join("src"),
        root.join("xtask").join("src"),
    ]
}

/// Reads every `.rs` file below `src` and builds its graph.
pub fn check(src: &Path) -> Result<Checked> {
    let mut rels = Vec::new();
    collect_rs(src, "", &mut rels).with_context(|| format!("listing {}", src.display()))?;
    if rels.is_empty() {
        bail!(
            "{}: no .rs files (expected a crate's src directory)",
            src.display()
        );
    }
    rels.sort();
    let has_lib = rels.iter().any(|r| r == "lib.rs");
    let mut files = Vec::new();
    let mut left_out = Vec::new();
    for rel in rels {
        let Some(module) = graph::module_of(&rel, has_lib) else {
            left_out.push(rel);
            continue;
        };
        let path = src.join(&rel);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let parsed = parse::parse(&text, &module).map_err(|e| {
            let at = e.span().start();
            anyhow::anyhow!("{}:{}:{}: {e}", path.display(), at.line, at.column + 1)
        })?;
        files.push(SourceFile {
            rel,
            module,
            parsed,
        });
    }
    let graph = Graph::build(files);
    let cycles = graph.cycles();
    let label = src
        .strip_prefix(repo_root())
        .unwrap_or(src)
        .display()
        .to_string();
    Ok(Checked {
        label,
        graph,
        cycles,
        left_out,
    })
}

/// Paths of the `.rs` files below `dir`, `/`-separated, prefixed by `rel`.
fn collect_rs(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = format!("{rel}{name}");
        if entry.file_type()?.is_dir() {
            collect_rs(&entry.path(), &format!("{child}/"), out)?;
        } else if name.ends_with(".rs") {
            out.push(child);
        }
    }
    Ok(())
}

fn to_text(c: &Checked, with_edges: bool) -> String {
    let g = &c.graph;
    let name = |i: usize| g.files[i].as_str();
    let mut out = String::new();
    let cycles = match c.cycles.len() {
        0 => "no import cycles".to_owned(),
        1 => "1 import cycle".to_owned(),
        n => format!("{n} import cycles"),
    };
    let _ = writeln!(
        out,
        "{}: {} files, {} edges, {cycles}",
        c.label,
        g.files.len(),
        g.edges.len()
    );
    for rel in &c.left_out {
        let _ = writeln!(out, "  left out: {rel} (a crate root of its own)");
    }
    for (n, cycle) in c.cycles.iter().enumerate() {
        let files: Vec<&str> = cycle.files.iter().map(|&i| name(i)).collect();
        let _ = writeln!(
            out,
            "  cycle {} of {}: {} files, {} edges between them: {}",
            n + 1,
            c.cycles.len(),
            files.len(),
            cycle.edges.len(),
            files.join(", ")
        );
        let _ = writeln!(out, "    one way round:");
        for (step, &(file, line)) in cycle.chain.iter().enumerate() {
            let next = cycle
                .chain
                .get(step + 1)
                .or(cycle.chain.first())
                .map_or("?", |&(f, _)| name(f));
            let _ = writeln!(out, "      {}/{}:{line} -> {next}", c.label, name(file));
        }
    }
    if with_edges {
        let _ = writeln!(out, "  edges (from -> to, where first named, paths):");
        for (&(from, to), edge) in &g.edges {
            let _ = writeln!(
                out,
                "    {} -> {}  {}/{}:{} ({})",
                name(from),
                name(to),
                c.label,
                name(from),
                edge.line,
                edge.count
            );
        }
    }
    out
}

fn to_json(all: &[Checked]) -> serde_json::Value {
    let crates: Vec<serde_json::Value> = all
        .iter()
        .map(|c| {
            let g = &c.graph;
            let name = |i: usize| g.files[i].clone();
            let edge = |&(from, to): &(usize, usize)| {
                let e = g.edges.get(&(from, to));
                json!({
                    "from": name(from),
                    "to": name(to),
                    "line": e.map_or(0, |e| e.line),
                    "paths": e.map_or(0, |e| e.count),
                })
            };
            let cycles: Vec<serde_json::Value> = c
                .cycles
                .iter()
                .map(|cycle| {
                    let chain: Vec<serde_json::Value> = cycle
                        .chain
                        .iter()
                        .enumerate()
                        .map(|(step, &(file, line))| {
                            let next = cycle.chain.get(step + 1).or(cycle.chain.first());
                            json!({
                                "file": name(file),
                                "line": line,
                                "names": next.map(|&(f, _)| name(f)),
                            })
                        })
                        .collect();
                    json!({
                        "files": cycle.files.iter().map(|&i| name(i)).collect::<Vec<_>>(),
                        "chain": chain,
                        "edges": cycle.edges.iter().map(edge).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "src": c.label,
                "files": g.files,
                "left_out": c.left_out,
                "edges": g.edges.keys().map(edge).collect::<Vec<_>>(),
                "cycles": cycles,
            })
        })
        .collect();
    let total: usize = all.iter().map(|c| c.cycles.len()).sum();
    json!({ "crates": crates, "cycles": total })
}
