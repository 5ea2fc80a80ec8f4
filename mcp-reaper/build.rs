//! Builds the kernel programs (`mcp-reaper-ebpf`) with the nightly toolchain
//! and bpf-linker, and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//! `cargo xtask setup` installs what this needs; set AYA_BUILD_SKIP=1 to
//! build the userspace alone (the eBPF source then reports itself missing).
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        // Empty objects: the userspace builds and its pure tests run; loading
        // the programs then fails with a clear error.
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
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
    if which_bpf_linker().is_none() {
        println!(
            "cargo:warning=bpf-linker is not on PATH: run `cargo xtask setup` and build through `cargo xtask build`"
        );
    }
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
