//! `cargo xtask dist`: the release artifacts in target/dist. A static
//! x86_64 musl binary (checked: static, with its kernel programs), a
//! tarball holding it with the unit, the example configuration, the alert
//! rules, the dashboard, the manual pages, the shell completions and the
//! README's operator sections, a Debian package (cargo-deb), and
//! `SHA256SUMS` for both.
//!
//! Owns: the release build and the order of the packaging steps. Must
//! never: package a binary built without its kernel programs
//! (`AYA_BUILD_SKIP`), or install anything (`roundtrip` does, in tests).
mod deb;
mod docs;
pub mod elf;
pub mod roundtrip;
mod tarball;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{Cmd, cargo};
use crate::paths::{dist_dir, repo_root, target_dir};
use crate::setup::{self, MUSL_TARGET, Scope};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The workspace's `repository`, which xtask's manifest inherits.
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// What `dist` made.
pub struct Artifacts {
    pub tarball: PathBuf,
    pub deb: PathBuf,
    pub sums: PathBuf,
}

pub fn run() -> Result<ExitCode> {
    let artifacts = build()?;
    println!("\ndist: artifacts");
    for path in [&artifacts.tarball, &artifacts.deb, &artifacts.sums] {
        println!("  {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses up front when the environment asks for a build without the
/// kernel programs.
fn refuse_skip_env() -> Result<()> {
    if let Some(v) = std::env::var_os("AYA_BUILD_SKIP")
        && (v == "1" || v.eq_ignore_ascii_case("true"))
    {
        bail!(
            "AYA_BUILD_SKIP={} is set: a release without its kernel programs could only run the pidfd or poll tier; \
             unset it and run `cargo xtask dist` again",
            v.to_string_lossy()
        );
    }
    Ok(())
}

/// The musl release build; returns the binary.
fn build_binary() -> Result<PathBuf> {
    cargo(&["build", "--locked", "--release", "--package", "mcp-reaper"])
        .args(["--target", MUSL_TARGET])
        // A stripped binary for operators; the kernel programs it embeds
        // keep their own symbols (they are data to this link).
        .args(["--config", "profile.release.strip=\"symbols\""])
        .env_remove("AYA_BUILD_SKIP")
        .run()?;
    Ok(release_dir().join("mcp-reaper"))
}

fn release_dir() -> PathBuf {
    target_dir().join(MUSL_TARGET).join("release")
}

/// Fails unless the binary is static and embeds its kernel programs.
fn check_binary(binary: &Path) -> Result<()> {
    let bytes = fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    if !elf::is_static_executable(&bytes).with_context(|| binary.display().to_string())? {
        bail!(
            "{} asks for a dynamic loader: the musl build must be static",
            binary.display()
        );
    }
    let objects = elf::embedded_bpf_objects(&bytes);
    if objects == 0 {
        bail!(
            "refusing to package {}: it embeds no kernel programs (built with AYA_BUILD_SKIP?), \
             so it could only run the pidfd or poll tier; rebuild it without AYA_BUILD_SKIP",
            binary.display()
        );
    }
    println!(
        "dist: {} is static and embeds {objects} kernel program objects",
        binary.display()
    );
    Ok(())
}

/// `sha256sum` of the artifacts, by file name, into `<dist>/SHA256SUMS`.
fn write_sums(dist: &Path, files: &[&Path]) -> Result<PathBuf> {
    let names: Vec<&std::ffi::OsStr> = files.iter().filter_map(|f| f.file_name()).collect();
    let sums = Cmd::new("sha256sum")
        .args(["--binary"])
        .args(&names)
        .current_dir(dist)
        .stdout()?;
    let path = dist.join("SHA256SUMS");
    fs::write(&path, format!("{sums}\n")).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The checked static release binary (built if needed), as `dist` and
/// `image` ship it.
pub fn release_binary() -> Result<PathBuf> {
    refuse_skip_env()?;
    setup::run_or_fail(Scope::DIST)?;
    let binary = build_binary()?;
    check_binary(&binary)?;
    Ok(binary)
}

/// Builds, checks and packages; every artifact lands in target/dist.
pub fn build() -> Result<Artifacts> {
    let binary = release_binary()?;
    let docs = docs::generate(&binary, &release_dir().join(deb::ASSETS_SUBDIR))?;
    let dist = dist_dir();
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("remove {}", dist.display()))?;
    }
    fs::create_dir_all(&dist).with_context(|| format!("create {}", dist.display()))?;
    let readme = fs::read_to_string(repo_root().join("README.md")).context("read README.md")?;
    let readme = tarball::readme_excerpt(&readme, REPOSITORY)?;
    let name = format!("mcp-reaper-{VERSION}-{MUSL_TARGET}");
    let tarball = tarball::write(&dist, &name, &binary, &readme, &docs)?;
    let deb = deb::build(&release_dir(), &binary, &dist, &readme, &docs)?;
    let sums = write_sums(&dist, &[&tarball, &deb])?;
    Ok(Artifacts { tarball, deb, sums })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A static x86_64 ELF header with no program headers, and `tail`.
    fn static_binary(tail: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0; 64];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[18] = 62;
        bytes.extend_from_slice(tail);
        bytes
    }

    #[test]
    fn the_shipped_readme_names_the_repository() {
        assert!(REPOSITORY.starts_with("https://"), "{REPOSITORY:?}");
    }

    #[test]
    fn a_binary_without_kernel_programs_is_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let skipped = dir.path().join("skipped");
        fs::write(&skipped, static_binary(b"no programs here"))?;
        let err = check_binary(&skipped).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("embeds no kernel programs")),
            "{err:?}"
        );
        let mut object = static_binary(b"");
        object[18] = 247;
        let built = dir.path().join("built");
        fs::write(&built, static_binary(&object))?;
        check_binary(&built)?;
        Ok(())
    }
}
