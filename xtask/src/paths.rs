//! Where things are: the repository, cargo's build output, the tools
//! directory (`~/.cache/mcp-reaper`, or `$MCP_REAPER_TOOLS_DIR`) and the PATH
//! every cargo invocation gets.
//!
//! Owns: every path xtask derives from its own location or the environment.
//! Must never: create, change or run anything; it only computes paths, so
//! every other module can use it.
use std::ffi::OsString;
use std::path::PathBuf;

/// The bpf-linker release `setup` builds; its install directory is named
/// after it.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The cargo-deb release `setup --dist` installs, likewise.
pub const CARGO_DEB_VERSION: &str = "3.8.0";
/// cargo-fuzz, which `cargo xtask fuzz` drives (`setup --tests`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The workspace root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), PathBuf::from)
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The npm packages the tests run (`tests/npm`).
pub fn npm_dir() -> PathBuf {
    repo_root().join("tests").join("npm")
}

/// `~/.cache/mcp-reaper`, or `$MCP_REAPER_TOOLS_DIR` when set.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MCP_REAPER_TOOLS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("mcp-reaper")
}

pub fn bpf_linker_root() -> PathBuf {
    tools_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
}

pub fn cargo_deb_root() -> PathBuf {
    tools_dir().join(format!("cargo-deb-{CARGO_DEB_VERSION}"))
}

/// Where `setup --tests` installs cargo-fuzz.
pub fn cargo_fuzz_root() -> PathBuf {
    tools_dir().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"))
}

/// Where `dist` leaves its artifacts.
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// PATH with `first` in front (each once).
fn path_with_first(first: &[PathBuf]) -> OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = first.to_vec();
    dirs.extend(std::env::split_paths(&current).filter(|d| !first.contains(d)));
    std::env::join_paths(&dirs).unwrap_or_else(|_| {
        let mut path = OsString::new();
        for dir in first {
            path.push(dir);
            path.push(":");
        }
        path.push(current);
        path
    })
}

/// PATH with the bpf-linker bin directory first. Every cargo invocation
/// uses it: the userspace build script builds the eBPF object, and the
/// nested nightly build looks bpf-linker up on PATH.
pub fn tool_path_env() -> OsString {
    path_with_first(&[bpf_linker_root().join("bin")])
}

/// [`tool_path_env`] with cargo-deb's bin directory too, for `cargo deb`.
pub fn dist_path_env() -> OsString {
    path_with_first(&[bpf_linker_root().join("bin"), cargo_deb_root().join("bin")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_path_puts_bpf_linker_first() {
        let path = tool_path_env();
        let first = std::env::split_paths(&path).next();
        assert_eq!(first, Some(bpf_linker_root().join("bin")));
    }
}
