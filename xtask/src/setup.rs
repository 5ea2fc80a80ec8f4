//! `cargo xtask setup`: installs what building and testing need, idempotently.
//!
//! Each step checks first and prints one line: `ok` (already there),
//! `installed`, or `FAILED: <what to do>`. Tools live under the tools
//! directory, `~/.cache/mcp-reaper` unless `$MCP_REAPER_TOOLS_DIR` says
//! otherwise; see `design/TOOLCHAIN.md` for why bpf-linker is built against
//! the nightly toolchain's own libLLVM.
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{Cmd, cargo, is_root, repo_root};

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";
/// Debian packages the tests need, with what they provide.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[("prometheus", "promtool")];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// What `cargo build` needs: nightly rust-src and bpf-linker.
    Toolchain,
    /// The toolchain plus test prerequisites.
    Tests,
}

impl Scope {
    pub fn from_tests_flag(tests: bool) -> Self {
        if tests { Self::Tests } else { Self::Toolchain }
    }
}

enum Outcome {
    Ok,
    Installed,
}

/// Runs the steps of `scope`; the exit code is non-zero when one failed.
pub fn run(scope: Scope) -> Result<ExitCode> {
    let failed = run_steps(scope);
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("setup failed: missing {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// Runs the steps of `scope` and turns a failed step into an error.
pub fn run_or_fail(scope: Scope) -> Result<()> {
    let failed = run_steps(scope);
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "setup failed: missing {} (see the FAILED lines above)",
            failed.join(", ")
        )
    }
}

/// Returns the names of the steps that failed.
fn run_steps(scope: Scope) -> Vec<String> {
    let mut failed = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<Outcome>| match f() {
        Ok(Outcome::Ok) => println!("setup: {name}: ok"),
        Ok(Outcome::Installed) => println!("setup: {name}: installed"),
        Err(e) => {
            println!("setup: {name}: FAILED: {e:#}");
            failed.push(name.to_owned());
        }
    };
    step("nightly toolchain", &mut ensure_nightly);
    step("rust-src for nightly", &mut ensure_rust_src);
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION}"),
        &mut ensure_bpf_linker,
    );
    if scope == Scope::Tests {
        let mut apt_updated = false;
        for &(package, provides) in DEBIAN_PACKAGES {
            step(
                &format!("Debian package {package} ({provides})"),
                &mut || ensure_debian_package(package, &mut apt_updated),
            );
        }
        step("npm packages (tests/npm)", &mut ensure_npm_packages);
    }
    failed
}

/// `~/.cache/mcp-reaper`, or `$MCP_REAPER_TOOLS_DIR` when set.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MCP_REAPER_TOOLS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("mcp-reaper")
}

fn bpf_linker_root() -> PathBuf {
    tools_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
}

/// PATH with the bpf-linker bin directory first. Every cargo invocation
/// uses it: the userspace build script builds the eBPF object, and the
/// nested nightly build looks bpf-linker up on PATH.
pub fn tool_path_env() -> OsString {
    let bin = bpf_linker_root().join("bin");
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.clone()];
    dirs.extend(std::env::split_paths(&current).filter(|d| *d != bin));
    std::env::join_paths(dirs).unwrap_or_else(|_| {
        let mut path = bin.into_os_string();
        path.push(":");
        path.push(current);
        path
    })
}

fn nightly_sysroot() -> Result<PathBuf> {
    Cmd::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .stdout()
        .map(PathBuf::from)
        .context("the nightly toolchain is missing: run `rustup toolchain install nightly`")
}

fn ensure_nightly() -> Result<Outcome> {
    if Cmd::new("rustc").args(["+nightly", "--version"]).succeeds() {
        return Ok(Outcome::Ok);
    }
    Cmd::new("rustup")
        .args(["toolchain", "install", NIGHTLY, "--profile", "minimal"])
        .run()
        .context("install it with `rustup toolchain install nightly --profile minimal`")?;
    Ok(Outcome::Installed)
}

fn ensure_rust_src() -> Result<Outcome> {
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(Outcome::Ok);
    }
    Cmd::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", NIGHTLY])
        .run()
        .context("install it with `rustup component add rust-src --toolchain nightly`")?;
    if !core.is_dir() {
        bail!(
            "rust-src was added but {} is still missing: reinstall it with `rustup component remove rust-src --toolchain nightly && rustup component add rust-src --toolchain nightly`",
            core.display()
        );
    }
    Ok(Outcome::Installed)
}

fn bpf_linker_runs(bin: &Path) -> bool {
    Cmd::new(bin).args(["--version"]).succeeds()
}

fn ensure_bpf_linker() -> Result<Outcome> {
    let root = bpf_linker_root();
    let bin = root.join("bin").join("bpf-linker");
    if bpf_linker_runs(&bin) {
        return Ok(Outcome::Ok);
    }
    let sysroot = nightly_sysroot()?;
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let file_name = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("unexpected libLLVM path {}", libllvm.display()))?
        .to_owned();
    let major = llvm_major(&file_name)?;
    let prefix = tools_dir().join(format!("llvm-{major}"));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("create {}", lib.display()))?;
    // One link for the linker (`-lLLVM`), one under the library's own name
    // (its SONAME) for the loader, found through bpf-linker's rpath.
    for link in ["libLLVM.so", file_name.as_str()] {
        replace_symlink(&libllvm, &lib.join(link))?;
    }
    let by_hand = format!(
        "build it by hand: LLVM_PREFIX={} cargo install bpf-linker@{BPF_LINKER_VERSION} \
         --no-default-features --features llvm-{major} --root {}",
        prefix.display(),
        root.display()
    );
    let features = format!("llvm-{major}");
    let package = format!("bpf-linker@{BPF_LINKER_VERSION}");
    let args: [&OsStr; 7] = [
        "install".as_ref(),
        package.as_ref(),
        "--no-default-features".as_ref(),
        "--features".as_ref(),
        features.as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
    ];
    cargo(&args)
        .env("LLVM_PREFIX", &prefix)
        // Build in a temporary directory that cargo install removes.
        .env_remove("CARGO_TARGET_DIR")
        .run()
        .context(by_hand)?;
    if !bpf_linker_runs(&bin) {
        bail!(
            "{} was installed but `--version` fails: check that {} resolves (ldd {})",
            bin.display(),
            lib.join(&file_name).display(),
            bin.display()
        );
    }
    Ok(Outcome::Installed)
}

/// The nightly toolchain's shared LLVM: `<sysroot>/lib/libLLVM.so.*`.
fn find_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib_dir)
        .with_context(|| format!("read {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        anyhow!(
            "no libLLVM.so.* in {}: the nightly toolchain must ship LLVM as a shared library (reinstall it with `rustup toolchain install nightly --force`)",
            lib_dir.display()
        )
    })
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> 22.
fn llvm_major(file_name: &str) -> Result<u32> {
    let version = file_name
        .strip_prefix("libLLVM.so.")
        .ok_or_else(|| anyhow!("{file_name} is not named libLLVM.so.<version>"))?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .with_context(|| format!("no LLVM major version in {file_name}"))
}

fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).with_context(|| format!("remove {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("symlink {} -> {}", link.display(), target.display()))
}

fn debian_package_installed(package: &str) -> bool {
    Cmd::new("dpkg")
        .args(["-s", package])
        .stdout()
        .is_ok_and(|out| {
            out.lines()
                .any(|l| l.trim() == "Status: install ok installed")
        })
}

fn ensure_debian_package(package: &str, apt_updated: &mut bool) -> Result<Outcome> {
    if debian_package_installed(package) {
        return Ok(Outcome::Ok);
    }
    let by_hand = format!("install it with `apt-get install {package}`");
    if !Cmd::new("apt-get").args(["--version"]).succeeds() {
        bail!("apt-get is not available: {by_hand} or your system's equivalent");
    }
    if !is_root() {
        bail!("installing needs root: {by_hand} as root, or run setup as root");
    }
    if !*apt_updated {
        Cmd::new("apt-get")
            .args(["update"])
            .run()
            .with_context(|| format!("`apt-get update` failed: {by_hand}"))?;
        *apt_updated = true;
    }
    Cmd::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .context(by_hand)?;
    Ok(Outcome::Installed)
}

pub fn npm_dir() -> PathBuf {
    repo_root().join("tests").join("npm")
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// npm writes `node_modules/.package-lock.json` on every install: the
/// packages are current when it is newer than package.json and the lock.
fn npm_install_needed(dir: &Path) -> bool {
    let Some(installed) = modified(&dir.join("node_modules").join(".package-lock.json")) else {
        return true;
    };
    ["package.json", "package-lock.json"]
        .iter()
        .filter_map(|f| modified(&dir.join(f)))
        .any(|changed| changed > installed)
}

fn ensure_npm_packages() -> Result<Outcome> {
    let dir = npm_dir();
    if !dir.join("package.json").is_file() {
        bail!(
            "{} is missing: restore it from git",
            dir.join("package.json").display()
        );
    }
    if !npm_install_needed(&dir) {
        return Ok(Outcome::Ok);
    }
    if !Cmd::new("npm").args(["--version"]).succeeds() {
        bail!("npm is not on PATH: install Node.js 20 or newer with npm");
    }
    let subcommand = if dir.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    Cmd::new("npm")
        .args([subcommand, "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .run()
        .with_context(|| format!("run `npm {subcommand}` in {}", dir.display()))?;
    Ok(Outcome::Installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustup_file_name() {
        assert!(matches!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Ok(22)
        ));
        assert!(matches!(llvm_major("libLLVM.so.19.1"), Ok(19)));
        assert!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so").is_err());
        assert!(llvm_major("libLLVM.so.x").is_err());
    }

    #[test]
    fn tool_path_puts_bpf_linker_first() {
        let path = tool_path_env();
        let first = std::env::split_paths(&path).next();
        assert_eq!(first, Some(bpf_linker_root().join("bin")));
    }

    #[test]
    fn npm_install_needed_follows_timestamps() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("package.json"), "{}")?;
        assert!(npm_install_needed(dir.path()));
        std::fs::create_dir(dir.path().join("node_modules"))?;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("node_modules/.package-lock.json"), "{}")?;
        assert!(!npm_install_needed(dir.path()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("package.json"), "{ }")?;
        assert!(npm_install_needed(dir.path()));
        Ok(())
    }
}
