//! The nightly toolchain the kernel programs are built with, pinned to one
//! dated release (see `design/TOOLCHAIN.md`): bpf-linker is built against
//! that release's own libLLVM, so a newer nightly would need a new linker.
//!
//! `mcp-reaper/build.rs` makes the same choice for a plain `cargo build`; a
//! unit test keeps its copies of the pins equal to these.
//!
//! Owns: the pin and which rustup toolchain name satisfies it here.
//! Must never: install anything (`setup` does).
use std::ffi::OsStr;

use crate::cmd::Cmd;
use crate::paths::{repo_root, tool_path_env};

/// The pinned release, as rustup names it.
pub const NIGHTLY: &str = "nightly-2026-05-20";
/// What `rustc -vV` of that release says, for messages.
pub const NIGHTLY_RUSTC: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)";
/// The commit of that release's rustc: a plain `nightly` toolchain built
/// from it is the same release and is used as is, without a second download.
pub const NIGHTLY_COMMIT: &str = "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a";
/// The floating channel that may hold the pinned release.
const CHANNEL: &str = "nightly";

/// `rustc -vV` of a rustup toolchain, without installing it.
fn rustc_verbose_version(toolchain: &str) -> Option<String> {
    Cmd::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .stdout()
        .ok()
}

fn commit_hash(verbose_version: &str) -> Option<&str> {
    verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash:"))
        .map(str::trim)
}

/// The installed rustup toolchain that is the pinned release: the dated
/// one, else `nightly` when it was built from the pinned commit.
pub fn installed() -> Option<&'static str> {
    if rustc_verbose_version(NIGHTLY).is_some() {
        return Some(NIGHTLY);
    }
    let channel = rustc_verbose_version(CHANNEL)?;
    (commit_hash(&channel) == Some(NIGHTLY_COMMIT)).then_some(CHANNEL)
}

/// What the `nightly` channel holds here, for a message about why it does
/// not satisfy the pin.
pub fn channel_version() -> String {
    rustc_verbose_version(CHANNEL)
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "not installed".to_owned())
}

/// `cargo <args>` from the pinned nightly (for the eBPF crate), in the
/// repository root with the tools on PATH. Falls back to `nightly` when the
/// pin is not installed, so the command fails with rustup's own message.
pub fn nightly_cargo<S: AsRef<OsStr>>(args: &[S]) -> Cmd {
    let toolchain = installed().unwrap_or(CHANNEL);
    Cmd::new("rustup")
        .args(["run", toolchain, "cargo"])
        .args(args)
        .current_dir(repo_root())
        .env("PATH", tool_path_env())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_hash_from_rustc_verbose_version() {
        let out = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\n\
                   commit-hash: e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a\ncommit-date: 2026-05-19\n";
        assert_eq!(commit_hash(out), Some(NIGHTLY_COMMIT));
        assert_eq!(commit_hash("rustc 1.97.0-nightly\n"), None);
    }

    /// A plain `cargo build` must pick the same nightly and bpf-linker as
    /// `cargo xtask`: mcp-reaper/build.rs carries copies of the pins.
    #[test]
    fn build_script_carries_the_same_pins() -> std::io::Result<()> {
        let build_rs = std::fs::read_to_string(repo_root().join("mcp-reaper/build.rs"))?;
        for line in [
            format!(
                "const BPF_LINKER_VERSION: &str = \"{}\";",
                crate::paths::BPF_LINKER_VERSION
            ),
            format!("const NIGHTLY: &str = \"{NIGHTLY}\";"),
            format!("const NIGHTLY_COMMIT: &str = \"{NIGHTLY_COMMIT}\";"),
        ] {
            assert!(
                build_rs.lines().any(|l| l.trim() == line),
                "mcp-reaper/build.rs lacks `{line}`"
            );
        }
        Ok(())
    }

    #[test]
    fn pin_names_one_dated_release() {
        assert!(NIGHTLY_RUSTC.contains(&NIGHTLY_COMMIT[..9]));
        let date = NIGHTLY.strip_prefix("nightly-").unwrap_or_default();
        assert_eq!(date.len(), "2026-05-20".len(), "{NIGHTLY} is not dated");
    }
}
