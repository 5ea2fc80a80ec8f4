//! Helpers shared by the configuration tests: command lines, process
//! views, the error lines of a file that must fail, and the identity a
//! command line gets.
//!
//! Owns: nothing but these helpers. Must never: hold a test, or build a
//! configuration other than through the public entry points.

use std::path::Path;

use crate::config::{Config, ProcView};

pub(super) fn args(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_owned).collect()
}

pub(super) fn view<'a>(comm: &'a str, cmdline: &'a [String]) -> ProcView<'a> {
    ProcView {
        comm,
        exe: None,
        cmdline,
        uid: 1000,
        cgroup: None,
    }
}

pub(super) fn errors(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, "t.toml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

pub(super) fn server_id(cfg: &Config, cmdline: &str) -> Option<String> {
    let a = args(cmdline);
    let comm = Path::new(&a[0])
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    cfg.classify_server(&view(&comm, &a)).map(|m| m.identity)
}
