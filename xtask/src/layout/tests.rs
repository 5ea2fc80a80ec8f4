//! The layout check over small crates written to temporary directories.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use super::graph::module_of;
use super::{Args, Checked, check, run};

/// A crate's `src` directory holding `files` (path below `src`, text).
fn write_crate(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    dir
}

fn checked(files: &[(&str, &str)]) -> Checked {
    let dir = write_crate(files);
    check(dir.path()).unwrap()
}

fn edges(c: &Checked) -> BTreeSet<(&str, &str)> {
    c.graph
        .edges
        .keys()
        .map(|&(a, b)| (c.graph.files[a].as_str(), c.graph.files[b].as_str()))
        .collect()
}

fn cycles(c: &Checked) -> Vec<Vec<&str>> {
    c.cycles
        .iter()
        .map(|cycle| {
            cycle
                .files
                .iter()
                .map(|&i| c.graph.files[i].as_str())
                .collect()
        })
        .collect()
}

/// The example chain as `file:line` steps.
fn chain(c: &Checked, n: usize) -> Vec<String> {
    c.cycles[n]
        .chain
        .iter()
        .map(|&(file, line)| format!("{}:{line}", c.graph.files[file]))
        .collect()
}

#[test]
fn a_two_file_cycle_through_grouped_uses_is_found() {
    let c = checked(&[
        ("lib.rs", "mod a;\nmod b;\npub mod other {}\n"),
        (
            "a.rs",
            "use std::fmt;\nuse crate::{other, b::{helper, B}};\npub struct A;\n",
        ),
        (
            "b.rs",
            "use crate::{\n    a::{\n        A,\n    },\n};\npub struct B;\npub fn helper() {}\n",
        ),
    ]);
    assert_eq!(cycles(&c), vec![vec!["a.rs", "b.rs"]]);
    // a.rs names b.rs on line 2; b.rs names a.rs where `A` is, on line 3.
    assert_eq!(chain(&c, 0), vec!["a.rs:2", "b.rs:3"]);
}

#[test]
fn a_parent_that_only_declares_its_child_is_no_cycle() {
    let c = checked(&[
        ("lib.rs", "mod config;\n"),
        ("config/mod.rs", "mod label;\npub struct Config;\n"),
        (
            "config/label.rs",
            "use super::Config;\npub fn f(_: &Config) {}\n",
        ),
    ]);
    assert_eq!(
        edges(&c),
        BTreeSet::from([("config/label.rs", "config/mod.rs")])
    );
    assert!(c.cycles.is_empty());
}

#[test]
fn pub_use_of_the_child_and_use_super_in_it_is_a_cycle() {
    let c = checked(&[
        ("lib.rs", "mod config;\n"),
        (
            "config/mod.rs",
            "mod label;\npub use label::Label;\npub struct Config;\n",
        ),
        (
            "config/label.rs",
            "use super::Config;\npub struct Label(Config);\n",
        ),
    ]);
    assert_eq!(cycles(&c), vec![vec!["config/label.rs", "config/mod.rs"]]);
    assert_eq!(chain(&c, 0), vec!["config/label.rs:1", "config/mod.rs:2"]);
}

#[test]
fn paths_in_comments_and_strings_are_ignored() {
    let a = r###"
//! Module docs naming crate::b::B and super::b.
use crate::b::B as _;

// use crate::b::B;
/* crate::b::helper() */
/// See [`crate::b::helper`].
pub fn f() -> String {
    let s = "crate::b::helper()";
    let r = r#"use crate::b::B;"#;
    println!("{} {}", "super::b", s);
    format!("{r} crate::b::B")
}
"###;
    let c = checked(&[
        ("lib.rs", "mod b;\nmod c;\n"),
        ("b.rs", "pub struct B;\npub fn helper() {}\n"),
        // Names b.rs once, for real, in the `use ... as _` on line 3.
        ("c.rs", a),
    ]);
    assert_eq!(edges(&c), BTreeSet::from([("c.rs", "b.rs")]));
    let (_, edge) = c.graph.edges.iter().next().unwrap();
    assert_eq!((edge.line, edge.count), (3, 1));
}

#[test]
fn paths_in_code_and_macro_and_attribute_arguments_are_edges() {
    let c = checked(&[
        ("lib.rs", "mod a;\nmod b;\nmod d;\nmod e;\n"),
        (
            "a.rs",
            "pub fn f() -> bool { crate::b::g() }\npub struct T;\n",
        ),
        (
            "b.rs",
            "pub fn g() -> bool { true }\npub fn h() { assert!(crate::d::yes()); }\n\
             #[cfg_attr(test, allow(clippy::unwrap_used))]\n#[command(name = crate::e::NAME)]\n\
             struct S;\n",
        ),
        ("e.rs", "pub const NAME: &str = \"e\";\n"),
        (
            "d.rs",
            "pub fn yes() -> bool { let _: Option<crate::a::T> = None; true }\n",
        ),
    ]);
    assert_eq!(
        edges(&c),
        BTreeSet::from([
            ("a.rs", "b.rs"),
            ("b.rs", "d.rs"),
            ("b.rs", "e.rs"),
            ("d.rs", "a.rs")
        ])
    );
    assert_eq!(cycles(&c), vec![vec!["a.rs", "b.rs", "d.rs"]]);
    assert_eq!(chain(&c, 0), vec!["a.rs:1", "b.rs:2", "d.rs:1"]);
}

#[test]
fn nested_module_files_resolve_to_the_file_that_defines_them() {
    let c = checked(&[
        ("lib.rs", "mod net;\nmod top;\n"),
        // `net` as net.rs beside a net/ folder; `proto` as proto/mod.rs.
        (
            "net.rs",
            "pub mod proto;\npub mod sock;\npub struct Thing;\n",
        ),
        ("net/sock.rs", "pub struct Socket;\npub fn open() {}\n"),
        ("net/proto/mod.rs", "pub mod tcp;\npub struct Frame;\n"),
        (
            "net/proto/tcp.rs",
            "use super::super::sock::Socket;\nuse super::Frame;\npub struct Conn(Socket, Frame);\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::Frame as F;\n}\n",
        ),
        (
            "top.rs",
            "use crate::net::proto::tcp::Conn;\nuse crate::net::Thing;\n\
             fn f(_: Conn, _: Thing) { crate::net::sock::open(); let _ = crate::net::proto::Frame; }\n",
        ),
    ]);
    let e = edges(&c);
    let from = |file: &str| -> BTreeSet<&str> {
        e.iter()
            .filter(|(a, _)| *a == file)
            .map(|&(_, b)| b)
            .collect()
    };
    assert_eq!(
        from("top.rs"),
        BTreeSet::from([
            "net.rs",
            "net/proto/mod.rs",
            "net/proto/tcp.rs",
            "net/sock.rs"
        ])
    );
    assert_eq!(
        from("net/proto/tcp.rs"),
        BTreeSet::from(["net/proto/mod.rs", "net/sock.rs"])
    );
    assert!(from("net.rs").is_empty());
    assert!(c.cycles.is_empty());
}

#[test]
fn self_paths_and_modules_bound_by_use_are_followed() {
    let c = checked(&[
        ("lib.rs", "mod config;\nmod run;\nmod tick;\n"),
        (
            "config/mod.rs",
            "pub mod label;\nuse self::label::Label;\npub struct C(Label);\n",
        ),
        ("config/label.rs", "pub struct Label;\npub fn parse() {}\n"),
        // `config` bound by a grouped `self`, then used as a path in code.
        (
            "run.rs",
            "use crate::config::{self};\nfn f() { config::label::parse(); }\n",
        ),
        // ... or by `self as`, then used by another `use`.
        (
            "tick.rs",
            "use crate::config::{self as c};\nuse c::label::Label;\n",
        ),
    ]);
    assert_eq!(
        edges(&c),
        BTreeSet::from([
            ("config/mod.rs", "config/label.rs"),
            ("run.rs", "config/label.rs"),
            ("run.rs", "config/mod.rs"),
            ("tick.rs", "config/label.rs"),
            ("tick.rs", "config/mod.rs"),
        ])
    );
}

#[test]
fn a_glob_of_the_parent_brings_its_child_modules_in() {
    let c = checked(&[
        ("lib.rs", "mod audit;\n"),
        ("audit/mod.rs", "mod record;\n#[cfg(test)]\nmod tests;\n"),
        ("audit/record.rs", "pub fn write() {}\n"),
        (
            "audit/tests.rs",
            "use super::*;\n#[test]\nfn t() { record::write(); }\n",
        ),
    ]);
    assert_eq!(
        edges(&c),
        BTreeSet::from([
            ("audit/tests.rs", "audit/mod.rs"),
            ("audit/tests.rs", "audit/record.rs")
        ])
    );
}

#[test]
fn visibility_other_crates_and_lone_names_are_no_edges() {
    let c = checked(&[
        ("lib.rs", "mod a;\nmod b;\npub(crate) fn root() {}\n"),
        ("a.rs", "pub(in crate::a) struct A;\npub(super) fn f() {}\n"),
        (
            "b.rs",
            "use std::fmt;\nuse ::a::Other;\nfn g(a: u8) -> u8 { let b = a; b }\nfn h() { ::a::x(); }\n",
        ),
    ]);
    assert!(edges(&c).is_empty(), "{:?}", edges(&c));
}

#[test]
fn main_beside_lib_is_its_own_crate() {
    let c = checked(&[
        ("lib.rs", "pub mod a;\n"),
        ("a.rs", "pub fn f() {}\n"),
        ("main.rs", "fn main() { crate_name::a::f(); }\n"),
    ]);
    assert_eq!(c.left_out, vec!["main.rs"]);
    assert_eq!(c.graph.files, vec!["a.rs", "lib.rs"]);
}

#[test]
fn module_paths_follow_the_file_layout() {
    let m = |rel: &str, has_lib: bool| module_of(rel, has_lib).map(|p| p.join("::"));
    assert_eq!(m("lib.rs", true).as_deref(), Some(""));
    assert_eq!(m("main.rs", false).as_deref(), Some(""));
    assert_eq!(m("main.rs", true), None);
    assert_eq!(m("bin/tool.rs", true), None);
    assert_eq!(m("config/mod.rs", true).as_deref(), Some("config"));
    assert_eq!(
        m("config/tests/mod.rs", true).as_deref(),
        Some("config::tests")
    );
    assert_eq!(m("source/ebpf.rs", true).as_deref(), Some("source::ebpf"));
    assert_eq!(
        m("source/ebpf/load.rs", true).as_deref(),
        Some("source::ebpf::load")
    );
}

fn exit(dirs: &[&Path]) -> ExitCode {
    run(&Args {
        dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        json: true,
        edges: false,
    })
}

#[test]
fn the_exit_status_says_cycles_or_errors() {
    let clean = write_crate(&[("lib.rs", "mod a;\n"), ("a.rs", "use super::*;\n")]);
    let cyclic = write_crate(&[
        ("lib.rs", "mod a;\npub use a::A;\npub struct R;\n"),
        ("a.rs", "pub struct A(crate::R);\n"),
    ]);
    let broken = write_crate(&[("lib.rs", "fn (\n")]);
    let missing = clean.path().join("nowhere");
    assert_eq!(exit(&[clean.path()]), ExitCode::SUCCESS);
    assert_eq!(exit(&[clean.path(), cyclic.path()]), ExitCode::FAILURE);
    assert_eq!(exit(&[broken.path()]), ExitCode::from(2));
    assert_eq!(exit(&[&missing]), ExitCode::from(2));
}
