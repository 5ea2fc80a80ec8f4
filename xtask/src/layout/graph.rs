//! The file graph of one crate: which file names an item of which, and the
//! import cycles among them.
//!
//! A file's module path comes from where it lies (`lib.rs`/`main.rs` the
//! root, `a/b.rs` and `a/b/mod.rs` both `a::b`). A path a file writes is
//! made absolute (`crate::`, `super::`, `self::`, a child module, or a name
//! a `use` bound to a module, globs included) and lands in the file that
//! defines the longest module prefix of it: `crate::config::label::Label`
//! in `config/label.rs`, `crate::config::Config` in `config/mod.rs`,
//! `crate::Thing` in `lib.rs`. Paths into other crates land nowhere.
//!
//! Owns: module paths, path resolution, the edges, strongly connected
//! components and one example chain per cycle. Must never: read files or
//! print (see `layout`), so all of it is testable over strings.
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::parse::{Kind, ParsedFile, Reference};

/// One `.rs` file of the crate, read.
pub struct SourceFile {
    /// Its path below `src`, `/`-separated.
    pub rel: String,
    pub module: Vec<String>,
    pub parsed: ParsedFile,
}

/// The module path of the file at `rel` (below `src`, `/`-separated), or
/// `None` when it is not a module of the crate rooted at `src`: `main.rs`
/// beside a `lib.rs`, or a file under `bin/`, is a crate root of its own
/// that reaches the library only through its public API.
pub fn module_of(rel: &str, has_lib: bool) -> Option<Vec<String>> {
    let stem = rel.strip_suffix(".rs")?;
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    match parts.as_slice() {
        [only] if only == "lib" => return Some(Vec::new()),
        [only] if only == "main" => return (!has_lib).then(Vec::new),
        [first, ..] if first == "bin" => return None,
        _ => {}
    }
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// Where a file names items of another: the first line and how many paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub line: usize,
    pub count: usize,
}

pub struct Graph {
    /// Paths below `src`, sorted; indices below point into this.
    pub files: Vec<String>,
    /// `(from, to)` -> where `from` names items of `to`.
    pub edges: BTreeMap<(usize, usize), Edge>,
}

/// Files that reach each other through their imports.
pub struct Cycle {
    /// Sorted by path.
    pub files: Vec<usize>,
    /// One way round, from the first file back to it: each file with the
    /// line where it names the next one.
    pub chain: Vec<(usize, usize)>,
    /// Every edge between two files of the cycle.
    pub edges: Vec<(usize, usize)>,
}

impl Graph {
    /// The graph of a crate's files. `files` must hold each module once.
    pub fn build(mut files: Vec<SourceFile>) -> Self {
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        let resolver = Resolver::new(&files);
        let mut edges: BTreeMap<(usize, usize), Edge> = BTreeMap::new();
        for (from, file) in files.iter().enumerate() {
            for reference in &file.parsed.references {
                let Some(to) = resolver.target(from, reference) else {
                    continue;
                };
                if to == from {
                    continue;
                }
                edges
                    .entry((from, to))
                    .and_modify(|e| {
                        e.line = e.line.min(reference.line);
                        e.count += 1;
                    })
                    .or_insert(Edge {
                        line: reference.line,
                        count: 1,
                    });
            }
        }
        Self {
            files: files.into_iter().map(|f| f.rel).collect(),
            edges,
        }
    }

    /// Every strongly connected component of more than one file, ordered
    /// by its first file.
    pub fn cycles(&self) -> Vec<Cycle> {
        let mut adjacency = vec![Vec::new(); self.files.len()];
        for &(from, to) in self.edges.keys() {
            adjacency[from].push(to);
        }
        let mut cycles: Vec<Cycle> = strongly_connected(&adjacency)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|mut files| {
                files.sort_unstable();
                let chain = self.example_chain(&adjacency, &files);
                let edges = self
                    .edges
                    .keys()
                    .filter(|(a, b)| {
                        files.binary_search(a).is_ok() && files.binary_search(b).is_ok()
                    })
                    .copied()
                    .collect();
                Cycle {
                    files,
                    chain,
                    edges,
                }
            })
            .collect();
        cycles.sort_by_key(|c| c.files.first().copied());
        cycles
    }

    /// The shortest way from the component's first file back to it.
    fn example_chain(&self, adjacency: &[Vec<usize>], component: &[usize]) -> Vec<(usize, usize)> {
        let Some(&start) = component.first() else {
            return Vec::new();
        };
        let mut came_from: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut last = None;
        'search: while let Some(at) = queue.pop_front() {
            for &next in &adjacency[at] {
                if component.binary_search(&next).is_err() {
                    continue;
                }
                if next == start {
                    last = Some(at);
                    break 'search;
                }
                if let Entry::Vacant(slot) = came_from.entry(next) {
                    slot.insert(at);
                    queue.push_back(next);
                }
            }
        }
        let mut path = Vec::new();
        let mut at = last;
        while let Some(file) = at {
            path.push(file);
            at = (file != start)
                .then(|| came_from.get(&file).copied())
                .flatten();
        }
        path.reverse();
        let mut chain = Vec::with_capacity(path.len());
        for (i, &file) in path.iter().enumerate() {
            let next = path.get(i + 1).copied().unwrap_or(start);
            let line = self.edges.get(&(file, next)).map_or(0, |e| e.line);
            chain.push((file, line));
        }
        chain
    }
}

/// Tarjan's algorithm; each component as a list of node indices.
fn strongly_connected(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        adjacency: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next_index: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next_index);
        s.low[v] = s.next_index;
        s.next_index += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.adjacency[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(index) if s.on_stack[w] => s.low[v] = s.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let n = adjacency.len();
    let mut state = State {
        adjacency,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next_index: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.components
}

/// Which file a path lands in.
struct Resolver {
    /// Every module, file or inline, and the file that holds it.
    modules: HashMap<Vec<String>, usize>,
    children: HashMap<Vec<String>, Vec<Vec<String>>>,
    /// Per file and scope: names its `use`s bound to modules.
    aliases: HashMap<(usize, Vec<String>), HashMap<String, Vec<String>>>,
}

impl Resolver {
    fn new(files: &[SourceFile]) -> Self {
        let mut modules = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            modules.insert(file.module.clone(), i);
        }
        for (i, file) in files.iter().enumerate() {
            for inline in &file.parsed.inline_modules {
                modules.entry(inline.clone()).or_insert(i);
            }
        }
        let mut children: HashMap<Vec<String>, Vec<Vec<String>>> = HashMap::new();
        for module in modules.keys() {
            if let Some((_, parent)) = module.split_last() {
                children
                    .entry(parent.to_vec())
                    .or_default()
                    .push(module.clone());
            }
        }
        let mut resolver = Self {
            modules,
            children,
            aliases: HashMap::new(),
        };
        resolver.bind_aliases(files);
        resolver
    }

    /// Names `use` binds to modules, so that `config::Label` after
    /// `use crate::config;` (or after `use super::*` that brought `config`
    /// in) is followed. A `use` may start from a name another bound, so
    /// this runs until nothing changes.
    fn bind_aliases(&mut self, files: &[SourceFile]) {
        loop {
            let mut changed = false;
            for (i, file) in files.iter().enumerate() {
                for reference in &file.parsed.references {
                    let Kind::Use { binds, glob } = &reference.kind else {
                        continue;
                    };
                    let Some(target) = self.absolute(i, reference) else {
                        continue;
                    };
                    if !self.modules.contains_key(&target) {
                        continue;
                    }
                    let mut bound: Vec<(String, Vec<String>)> = Vec::new();
                    if *glob {
                        for child in self.children.get(&target).into_iter().flatten() {
                            if let Some(name) = child.last() {
                                bound.push((name.clone(), child.clone()));
                            }
                        }
                    } else if let Some(name) = binds {
                        bound.push((name.clone(), target));
                    }
                    let scope = self
                        .aliases
                        .entry((i, reference.scope.clone()))
                        .or_default();
                    for (name, module) in bound {
                        if let Entry::Vacant(slot) = scope.entry(name) {
                            slot.insert(module);
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// The absolute module path `reference` means, if it is in this crate.
    fn absolute(&self, file: usize, reference: &Reference) -> Option<Vec<String>> {
        let scope = &reference.scope;
        let (first, rest) = reference.segments.split_first()?;
        let joined = |base: &[String], rest: &[String]| [base, rest].concat();
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "self" => Some(joined(scope, rest)),
            "super" => {
                let mut base = scope.clone();
                let mut rest = reference.segments.as_slice();
                while let Some((seg, tail)) = rest.split_first() {
                    if seg != "super" {
                        break;
                    }
                    base.pop()?;
                    rest = tail;
                }
                Some(joined(&base, rest))
            }
            _ => {
                // Code names a module only through a path of two or more
                // segments; a lone `config` there is a value.
                if reference.kind == Kind::Code && rest.is_empty() {
                    return None;
                }
                let child = joined(scope, std::slice::from_ref(first));
                if self.modules.contains_key(&child) {
                    return Some(joined(scope, &reference.segments));
                }
                let target = self.aliases.get(&(file, scope.clone()))?.get(first)?;
                Some(joined(target, rest))
            }
        }
    }

    /// The file that defines the longest module prefix of what `reference`
    /// names.
    fn target(&self, file: usize, reference: &Reference) -> Option<usize> {
        let path = self.absolute(file, reference)?;
        (0..=path.len())
            .rev()
            .find_map(|len| self.modules.get(&path[..len]).copied())
    }
}
