//! One source file read as Rust: every path it writes that may name a module
//! of its own crate, with the module scope it is written in and its line.
//!
//! Paths come from `use` declarations (grouped, nested, renamed, globbed,
//! `pub` or not, at any depth), from code (expressions, types, patterns,
//! trait bounds) and from the tokens of macro invocations and attribute
//! arguments (which syn leaves unparsed). Comments, doc comments and string literals hold no paths here:
//! syn drops the former and keeps the latter as literals.
//!
//! Owns: reading one file's text into [`Reference`]s. Must never: read the
//! file system, or decide which file a path lands in (that takes the whole
//! crate; see `graph`).
use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use syn::visit::Visit;

/// A path one file writes, as written (`super` and `self` unresolved).
#[derive(Debug, Clone)]
pub struct Reference {
    /// The absolute module path of the scope it is written in: the file's
    /// module, plus the inline `mod x { }` blocks around it.
    pub scope: Vec<String>,
    /// Its segments, `crate`/`super`/`self` included. Empty for a leading
    /// `::` (another crate).
    pub segments: Vec<String>,
    pub line: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// From a `use` declaration: the name it binds in `scope` (`None` for
    /// `as _`), or a glob.
    Use { binds: Option<String>, glob: bool },
    /// From code or macro tokens.
    Code,
}

/// Everything [`parse`] found in one file.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// The absolute paths of the inline `mod x { }` blocks it holds.
    pub inline_modules: Vec<Vec<String>>,
    pub references: Vec<Reference>,
}

/// Reads `source`, the file that is module `module` of its crate.
pub fn parse(source: &str, module: &[String]) -> syn::Result<ParsedFile> {
    let file = syn::parse_file(source)?;
    let mut collector = Collector {
        scope: module.to_vec(),
        found: ParsedFile::default(),
    };
    collector.visit_file(&file);
    Ok(collector.found)
}

struct Collector {
    scope: Vec<String>,
    found: ParsedFile,
}

fn line_of(span: Span) -> usize {
    span.start().line
}

impl Collector {
    fn push(&mut self, segments: Vec<String>, line: usize, kind: Kind) {
        self.found.references.push(Reference {
            scope: self.scope.clone(),
            segments,
            line,
            kind,
        });
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                if name == "self" {
                    // `use a::b::{self}` binds `b` and names module `a::b`.
                    let binds = prefix.last().cloned();
                    self.push(
                        prefix.clone(),
                        line_of(n.ident.span()),
                        Kind::Use { binds, glob: false },
                    );
                } else {
                    let mut segments = prefix.clone();
                    segments.push(name.clone());
                    let kind = Kind::Use {
                        binds: Some(name),
                        glob: false,
                    };
                    self.push(segments, line_of(n.ident.span()), kind);
                }
            }
            syn::UseTree::Rename(r) => {
                // `use a::b::{self as c}` names module `a::b`.
                let mut segments = prefix.clone();
                if r.ident != "self" {
                    segments.push(r.ident.to_string());
                }
                let alias = r.rename.to_string();
                let binds = (alias != "_").then_some(alias);
                self.push(
                    segments,
                    line_of(r.rename.span()),
                    Kind::Use { binds, glob: false },
                );
            }
            syn::UseTree::Glob(g) => {
                let kind = Kind::Use {
                    binds: None,
                    glob: true,
                };
                self.push(prefix.clone(), line_of(g.star_token.span), kind);
            }
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.use_tree(prefix, item);
                }
            }
        }
    }

    /// Paths in the tokens of a macro invocation or attribute: `a::b::c`
    /// runs of identifiers joined by `::`, in every delimited group.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => {
                    self.tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(first) => {
                    let extern_path = i >= 2 && is_colon(&trees[i - 1]) && is_colon(&trees[i - 2]);
                    let mut segments = vec![first.to_string()];
                    let mut j = i + 1;
                    while j + 2 < trees.len()
                        && is_joint_colon(&trees[j])
                        && is_colon(&trees[j + 1])
                        && matches!(trees[j + 2], TokenTree::Ident(_))
                    {
                        segments.push(trees[j + 2].to_string());
                        j += 3;
                    }
                    if !extern_path {
                        self.push(segments, line_of(first.span()), Kind::Code);
                    }
                    i = j;
                }
                TokenTree::Punct(_) | TokenTree::Literal(_) => i += 1,
            }
        }
    }
}

fn is_colon(tree: &TokenTree) -> bool {
    matches!(tree, TokenTree::Punct(p) if p.as_char() == ':')
}

fn is_joint_colon(tree: &TokenTree) -> bool {
    matches!(tree, TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        if item.leading_colon.is_some() {
            // `use ::x::y`: always another crate.
            return;
        }
        self.use_tree(&mut prefix, &item.tree);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // `mod child;` only declares: it names nothing the parent uses.
        let Some((_, items)) = &item.content else {
            return;
        };
        self.scope.push(item.ident.to_string());
        self.found.inline_modules.push(self.scope.clone());
        for item in items {
            self.visit_item(item);
        }
        self.scope.pop();
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            if let Some(first) = path.segments.first() {
                self.push(segments, line_of(first.ident.span()), Kind::Code);
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }

    /// Attribute arguments are tokens too: `#[command(name = sub::NAME)]`.
    fn visit_meta_list(&mut self, list: &'ast syn::MetaList) {
        self.visit_path(&list.path);
        self.tokens(list.tokens.clone());
    }

    /// `pub(crate)`, `pub(super)`, `pub(in crate::x)` limit who may see an
    /// item; they name no item to depend on.
    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {}
}
