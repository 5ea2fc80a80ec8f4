//! `cargo xtask setup`: installs what building, testing and packaging
//! need, idempotently.
//!
//! Each step checks first and prints one line: `ok` (already there),
//! `installed`, or `FAILED: <what to do>`; a step that builds from source
//! says so first, with roughly how long it takes. Tools are installed with
//! `cargo install --locked`; the nightly is the pinned one (`toolchain`).
//! Tools live under the tools directory, `~/.cache/mcp-reaper` unless
//! `$MCP_REAPER_TOOLS_DIR` says otherwise; see `design/TOOLCHAIN.md` for why
//! bpf-linker is built against the nightly toolchain's own libLLVM.
//!
//! Owns: checking and installing the toolchain, test and packaging
//! prerequisites.
//! Must never: install outside the tools directory, rustup's toolchains and
//! targets and `tests/npm`, except Debian packages through apt-get when run
//! as root.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{Cmd, cargo, is_root};
use crate::paths::{
    BPF_LINKER_VERSION, CARGO_DEB_VERSION, CARGO_FUZZ_VERSION, bpf_linker_root, cargo_deb_root,
    cargo_fuzz_root, npm_dir, repo_root, tools_dir,
};
use crate::toolchain::{self, NIGHTLY, NIGHTLY_RUSTC};

/// The target of the static release binary `dist` packages.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// Debian packages the tests need, with what they provide.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("prometheus", "promtool"),
    ("podman", "the container image and its test"),
    // crun, podman's default runtime, refuses this machine's hybrid
    // cgroup hierarchy; the container test runs with runc.
    ("runc", "the container runtime the container test uses"),
];

/// What to install besides the toolchain `cargo build` needs (pinned
/// nightly, its rust-src, bpf-linker).
#[derive(Clone, Copy, Default)]
pub struct Scope {
    /// Test prerequisites: promtool, podman and runc, the npm packages.
    pub tests: bool,
    /// Release packaging: the musl target and cargo-deb.
    pub dist: bool,
}

impl Scope {
    pub const TOOLCHAIN: Self = Self {
        tests: false,
        dist: false,
    };
    pub const TESTS: Self = Self {
        tests: true,
        dist: false,
    };
    pub const DIST: Self = Self {
        tests: false,
        dist: true,
    };
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
    step(&format!("{NIGHTLY} toolchain"), &mut ensure_nightly);
    step(&format!("rust-src for {NIGHTLY}"), &mut ensure_rust_src);
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION}"),
        &mut ensure_bpf_linker,
    );
    if scope.tests {
        let mut apt_updated = false;
        for &(package, provides) in DEBIAN_PACKAGES {
            step(
                &format!("Debian package {package} ({provides})"),
                &mut || ensure_debian_package(package, &mut apt_updated),
            );
        }
        step("npm packages (tests/npm)", &mut ensure_npm_packages);
        step(
            &format!("cargo-fuzz {CARGO_FUZZ_VERSION}"),
            &mut ensure_cargo_fuzz,
        );
    }
    if scope.dist {
        step(
            &format!("Rust target {MUSL_TARGET}"),
            &mut ensure_musl_target,
        );
        step(
            &format!("cargo-deb {CARGO_DEB_VERSION}"),
            &mut ensure_cargo_deb,
        );
    }
    failed
}

/// Says before a step that takes minutes that it will, and roughly how long.
fn announce(what: &str, how_long: &str) {
    println!("setup: {what}: this takes {how_long}");
}

/// The installed toolchain that is the pinned nightly.
fn pinned_nightly() -> Result<&'static str> {
    toolchain::installed().ok_or_else(|| {
        anyhow!(
            "{NIGHTLY} ({NIGHTLY_RUSTC}) is not installed (`nightly` here: {}): run `cargo xtask setup`",
            toolchain::channel_version()
        )
    })
}

fn nightly_sysroot() -> Result<PathBuf> {
    let toolchain = pinned_nightly()?;
    Cmd::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .stdout()
        .map(PathBuf::from)
}

fn ensure_nightly() -> Result<Outcome> {
    if toolchain::installed().is_some() {
        return Ok(Outcome::Ok);
    }
    announce(
        &format!("downloading {NIGHTLY} ({NIGHTLY_RUSTC})"),
        "a minute or two",
    );
    Cmd::new("rustup")
        .args(["toolchain", "install", NIGHTLY, "--profile", "minimal"])
        .run()
        .with_context(|| {
            format!(
                "the kernel programs are known to build with {NIGHTLY} ({NIGHTLY_RUSTC}); \
                 `nightly` here is {}: install the pinned one with \
                 `rustup toolchain install {NIGHTLY} --profile minimal`",
                toolchain::channel_version()
            )
        })?;
    Ok(Outcome::Installed)
}

fn ensure_rust_src() -> Result<Outcome> {
    let toolchain = pinned_nightly()?;
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(Outcome::Ok);
    }
    let by_hand = format!("rustup component add rust-src --toolchain {toolchain}");
    Cmd::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", toolchain])
        .run()
        .with_context(|| format!("install it with `{by_hand}`"))?;
    if !core.is_dir() {
        bail!(
            "rust-src was added but {} is still missing: reinstall it with `rustup component remove rust-src --toolchain {toolchain} && {by_hand}`",
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
        "build it by hand: LLVM_PREFIX={} cargo install --locked bpf-linker@{BPF_LINKER_VERSION} \
         --no-default-features --features llvm-{major} --root {}",
        prefix.display(),
        root.display()
    );
    let features = format!("llvm-{major}");
    let package = format!("bpf-linker@{BPF_LINKER_VERSION}");
    let args: [&OsStr; 8] = [
        "install".as_ref(),
        "--locked".as_ref(),
        package.as_ref(),
        "--no-default-features".as_ref(),
        "--features".as_ref(),
        features.as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
    ];
    announce(
        &format!("building bpf-linker {BPF_LINKER_VERSION} from source against LLVM {major}"),
        "about a minute on an idle machine and up to five on two busy cores",
    );
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

/// The musl standard library for the workspace's own toolchain
/// (`rust-toolchain.toml`), hence run in the repository root.
fn ensure_musl_target() -> Result<Outcome> {
    let installed = Cmd::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(repo_root())
        .stdout()?;
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        return Ok(Outcome::Ok);
    }
    Cmd::new("rustup")
        .args(["target", "add", MUSL_TARGET])
        .current_dir(repo_root())
        .run()
        .with_context(|| format!("install it with `rustup target add {MUSL_TARGET}`"))?;
    Ok(Outcome::Installed)
}

/// cargo-fuzz for `cargo xtask fuzz`, under the tools directory.
fn ensure_cargo_fuzz() -> Result<Outcome> {
    let root = cargo_fuzz_root();
    if Cmd::new(root.join("bin").join("cargo-fuzz"))
        .args(["fuzz", "--version"])
        .succeeds()
    {
        return Ok(Outcome::Ok);
    }
    install_tool(
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        &root,
        "one to three minutes on two cores",
    )
}

fn ensure_cargo_deb() -> Result<Outcome> {
    let root = cargo_deb_root();
    if Cmd::new(root.join("bin").join("cargo-deb"))
        .args(["--version"])
        .succeeds()
    {
        return Ok(Outcome::Ok);
    }
    install_tool(
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        &root,
        "three to six minutes on two cores",
    )
}

/// `cargo install --locked <package> --root <root>`, announced first with
/// how long it takes (`estimate`).
fn install_tool(package: &str, root: &std::path::Path, estimate: &str) -> Result<Outcome> {
    announce(&format!("building {package} from source"), estimate);
    let args: [&OsStr; 5] = [
        "install".as_ref(),
        "--locked".as_ref(),
        package.as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
    ];
    cargo(&args)
        .env_remove("CARGO_TARGET_DIR")
        .run()
        .with_context(|| {
            format!(
                "build it by hand: cargo install --locked {package} --root {}",
                root.display()
            )
        })?;
    Ok(Outcome::Installed)
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
