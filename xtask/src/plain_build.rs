//! The check that a plain cargo command builds the workspace after
//! `cargo xtask setup`, with no bpf-linker on PATH: mcp-reaper/build.rs must
//! find the one setup installed in the tools directory.
//!
//! How, in reasonable time: `cargo check -p mcp-reaper` (build scripts run
//! in full, the crate is only checked) in a target directory of its own
//! (target/plain-build, so the other steps' builds are not disturbed), with
//! PATH stripped of every directory holding a bpf-linker, and
//! `MCP_REAPER_TOOLS_DIR` pointing at a fresh directory that links to the
//! installed linker. The fresh path makes the build script run again each
//! time, and the nested eBPF build's own target directory is removed first
//! so that bpf-linker really links (about a minute); the build script's
//! output must then hold a real BPF object.
//!
//! Owns: that check. Must never: install anything or touch the tools
//! directory (it only links to it from under target/).
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{Cmd, cargo_bin};
use crate::paths::{bpf_linker_root, repo_root, target_dir};

const PACKAGE: &str = "mcp-reaper";
/// What the build script leaves in its OUT_DIR: the kernel programs.
const OBJECT: &str = "mcp-reaper";

/// PATH without the directories that hold a bpf-linker.
fn path_without_bpf_linker() -> Result<OsString> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("bpf-linker").exists())
        .collect();
    std::env::join_paths(kept).context("join PATH")
}

/// Whether a cargo package id (`path+file:///x/mcp-reaper#0.1.0`, or
/// `...#name@0.1.0` when the directory is named otherwise) names `name`.
fn package_id_names(id: &str, name: &str) -> bool {
    let Some((url, fragment)) = id.rsplit_once('#') else {
        return false;
    };
    match fragment.split_once('@') {
        Some((package, _)) => package == name,
        None => url.rsplit('/').next() == Some(name),
    }
}

/// The OUT_DIR of `package`'s build script, from cargo's JSON messages.
fn build_script_out_dir(messages: &str, package: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|id| package_id_names(id, package))
        })
        .find_map(|m| m["out_dir"].as_str().map(PathBuf::from))
}

/// A fresh tools directory under `dir` that links to the installed
/// bpf-linker; older ones are removed.
fn fresh_tools_dir(dir: &Path) -> Result<PathBuf> {
    let linker_root = bpf_linker_root();
    if !linker_root.join("bin").join("bpf-linker").is_file() {
        bail!(
            "{} has no bpf-linker: run `cargo xtask setup`",
            linker_root.display()
        );
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("tools-") {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("remove {}", entry.path().display()))?;
            }
        }
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let tools = dir.join(format!("tools-{stamp}"));
    fs::create_dir_all(&tools).with_context(|| format!("create {}", tools.display()))?;
    let name = linker_root
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", linker_root.display()))?;
    std::os::unix::fs::symlink(&linker_root, tools.join(name))
        .with_context(|| format!("link {} into {}", linker_root.display(), tools.display()))?;
    Ok(tools)
}

/// Removes the nested eBPF builds (`<OUT_DIR>/aya-build`) of earlier runs,
/// so that this run links the kernel programs again.
fn remove_nested_builds(cargo_target: &Path) -> Result<()> {
    let build = cargo_target.join("debug").join("build");
    let Ok(entries) = fs::read_dir(&build) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let nested = entry.path().join("out").join("aya-build");
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("mcp-reaper-")
            && nested.is_dir()
        {
            fs::remove_dir_all(&nested).with_context(|| format!("remove {}", nested.display()))?;
        }
    }
    Ok(())
}

pub fn check() -> Result<()> {
    let dir = target_dir().join("plain-build");
    remove_nested_builds(&dir.join("target"))?;
    let tools = fresh_tools_dir(&dir)?;
    let messages = Cmd::new(cargo_bin())
        .args([
            "check",
            "--package",
            PACKAGE,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(repo_root())
        .env("PATH", path_without_bpf_linker()?)
        .env("MCP_REAPER_TOOLS_DIR", &tools)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove("AYA_BUILD_SKIP")
        .stdout_showing_stderr();
    fs::remove_dir_all(&tools).with_context(|| format!("remove {}", tools.display()))?;
    let messages = messages?;
    let out_dir = build_script_out_dir(&messages, PACKAGE)
        .ok_or_else(|| anyhow!("cargo reported no build script run for {PACKAGE}"))?;
    let object = fs::read(out_dir.join(OBJECT))
        .with_context(|| format!("read {}", out_dir.join(OBJECT).display()))?;
    if crate::dist::elf::embedded_bpf_objects(&object) == 0 {
        bail!(
            "{} is not a BPF object: the build script did not build the kernel programs",
            out_dir.join(OBJECT).display()
        );
    }
    println!(
        "plain build: the build script found bpf-linker in the tools directory ({} bytes of kernel programs)",
        object.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids_in_both_spellings() {
        assert!(package_id_names(
            "path+file:///w/mcp-reaper#0.1.0",
            "mcp-reaper"
        ));
        assert!(package_id_names(
            "path+file:///w/daemon#mcp-reaper@0.1.0",
            "mcp-reaper"
        ));
        assert!(!package_id_names(
            "path+file:///w/mcp-reaper-ebpf#0.1.0",
            "mcp-reaper"
        ));
        assert!(!package_id_names(
            "registry+https://github.com/rust-lang/crates.io-index#libc@0.2.1",
            "mcp-reaper"
        ));
        assert!(!package_id_names("no fragment", "mcp-reaper"));
    }

    #[test]
    fn out_dir_of_the_named_build_script() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/mcp-reaper#0.1.0"}"#,
            "\n",
            r#"{"reason":"build-script-executed","package_id":"registry+x#libc@0.2.1","out_dir":"/t/libc"}"#,
            "\n",
            r#"{"reason":"build-script-executed","package_id":"path+file:///w/mcp-reaper#0.1.0","out_dir":"/t/out"}"#,
            "\nnot json\n"
        );
        assert_eq!(
            build_script_out_dir(messages, "mcp-reaper"),
            Some(PathBuf::from("/t/out"))
        );
        assert_eq!(build_script_out_dir(messages, "other"), None);
    }
}
