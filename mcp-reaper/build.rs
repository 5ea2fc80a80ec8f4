//! Builds the kernel programs (`mcp-reaper-ebpf`) with the pinned nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs both; a plain
//! `cargo build` then works without bpf-linker on PATH, because this script
//! looks for it where setup put it. Set AYA_BUILD_SKIP=1 to build the
//! userspace alone (the eBPF source then reports itself missing, and
//! `cargo xtask dist` refuses the binary).
//!
//! The pins below are copies of xtask's (`xtask/src/paths.rs`,
//! `xtask/src/toolchain.rs`); an xtask unit test keeps them equal.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly-2026-05-20";
const NIGHTLY_COMMIT: &str = "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        // Empty objects: the userspace builds and its pure tests run; loading
        // the programs then fails with a clear error.
        let out = PathBuf::from(std::env::var("OUT_DIR")?);
        for name in ["mcp-reaper", "mcp-reaper-probes"] {
            std::fs::write(out.join(name), [])?;
        }
        println!("cargo:warning=AYA_BUILD_SKIP set: built without kernel programs");
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "mcp-reaper-ebpf")
        .ok_or_else(|| anyhow!("mcp-reaper-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("mcp-reaper-ebpf has no manifest directory"))?;
    put_bpf_linker_on_path()?;
    let nightly = pinned_nightly()?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        nightly.map_or(Toolchain::Nightly, Toolchain::Custom),
    )
}

/// Where `cargo xtask setup` installs bpf-linker: `bpf-linker-<version>/bin`
/// under `$MCP_REAPER_TOOLS_DIR`, or `~/.cache/mcp-reaper`.
fn setup_bpf_linker_dir() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=MCP_REAPER_TOOLS_DIR");
    println!("cargo:rerun-if-env-changed=HOME");
    let tools = match std::env::var_os("MCP_REAPER_TOOLS_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache")
            .join("mcp-reaper"),
    };
    Some(
        tools
            .join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
            .join("bin"),
    )
}

fn has_bpf_linker(dir: &Path) -> bool {
    dir.join("bpf-linker").is_file()
}

/// The nested nightly build finds bpf-linker on PATH: put the one setup
/// built (against the pinned nightly's LLVM) first, or keep PATH's own.
fn put_bpf_linker_on_path() -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let setup_dir = setup_bpf_linker_dir();
    if let Some(dir) = setup_dir.as_deref().filter(|d| has_bpf_linker(d)) {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path).filter(|d| d != dir));
        let joined: OsString = std::env::join_paths(dirs).context("join PATH")?;
        // SAFETY: the build script has one thread here; aya-build's nested
        // cargo, started below, inherits the variable.
        unsafe { std::env::set_var("PATH", joined) };
        return Ok(());
    }
    if std::env::split_paths(&path).any(|d| has_bpf_linker(&d)) {
        return Ok(());
    }
    bail!(
        "bpf-linker {BPF_LINKER_VERSION} is neither in {} nor on PATH: run `cargo xtask setup`, \
         or build without the kernel programs with AYA_BUILD_SKIP=1",
        setup_dir.map_or_else(
            || "$HOME/.cache/mcp-reaper".to_owned(),
            |d| d.display().to_string()
        )
    )
}

/// `rustc -vV` of a rustup toolchain, without installing it.
fn rustc_verbose_version(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rustup toolchain that is the pinned nightly: the dated one, else
/// `nightly` when built from the same commit. None without rustup (aya-build
/// then uses the current toolchain).
fn pinned_nightly() -> anyhow::Result<Option<&'static str>> {
    if Command::new("rustup").arg("--version").output().is_err() {
        println!(
            "cargo:warning=rustup not found: building the kernel programs with the current toolchain"
        );
        return Ok(None);
    }
    if rustc_verbose_version(NIGHTLY).is_some() {
        return Ok(Some(NIGHTLY));
    }
    let channel = rustc_verbose_version("nightly").unwrap_or_default();
    let commit = channel
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash:"))
        .map(str::trim);
    if commit == Some(NIGHTLY_COMMIT) {
        return Ok(Some("nightly"));
    }
    bail!(
        "the kernel programs build with {NIGHTLY} (rustc commit {NIGHTLY_COMMIT}), which is not \
         installed (`nightly` here: {}): run `cargo xtask setup`",
        channel.lines().next().unwrap_or("not installed")
    )
}
