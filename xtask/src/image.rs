//! `cargo xtask image`: the daemon's container image, built from the
//! project with no registry: `dist`'s static musl binary (checked the same
//! way: static, with its kernel programs) on an empty base (`FROM
//! scratch`), the default configuration at /etc/mcp-reaper/config.toml,
//! and `mcp-reaper` as the entrypoint. Built with Podman (Debian's
//! package, which `cargo xtask setup --tests` installs) and tagged
//! `localhost/mcp-reaper:<version>`; `--output FILE` also writes it as an
//! OCI archive for `podman load` or a registry push elsewhere.
//!
//! Owns: the image's contents and its build. Must never: pull from or
//! push to a registry, or run the image (`tests/tests/container.rs` does).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args as ClapArgs;

use crate::cmd::Cmd;
use crate::dist;
use crate::paths::target_dir;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The tag `image` gives by default, and the image the tests run.
pub fn default_tag() -> String {
    format!("localhost/mcp-reaper:{VERSION}")
}

#[derive(ClapArgs)]
pub struct Args {
    /// The image's name and tag.
    #[arg(long, value_name = "NAME:TAG", default_value_t = default_tag())]
    pub tag: String,
    /// Also write the image to FILE as an OCI archive.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The build context's recipe: nothing but the binary and its default
/// configuration on an empty base.
fn containerfile() -> String {
    format!(
        "FROM scratch\n\
         COPY mcp-reaper /usr/bin/mcp-reaper\n\
         COPY config.toml /etc/mcp-reaper/config.toml\n\
         LABEL org.opencontainers.image.title=\"mcp-reaper\" \
         org.opencontainers.image.version=\"{VERSION}\" \
         org.opencontainers.image.source=\"{}\"\n\
         ENTRYPOINT [\"/usr/bin/mcp-reaper\"]\n\
         CMD [\"run\"]\n",
        env!("CARGO_PKG_REPOSITORY")
    )
}

pub fn run(args: &Args) -> Result<ExitCode> {
    build(&args.tag)?;
    if let Some(out) = &args.output {
        Cmd::new("podman")
            .args(["save", "--format", "oci-archive", "--output"])
            .args([out.as_os_str(), args.tag.as_ref()])
            .run()?;
        println!("image: wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the image as `tag`.
pub fn build(tag: &str) -> Result<()> {
    if !Cmd::new("podman").args(["--version"]).succeeds() {
        bail!("podman is not installed: `cargo xtask setup --tests` installs Debian's podman");
    }
    let binary = dist::release_binary()?;
    let context = target_dir().join("image");
    if context.exists() {
        fs::remove_dir_all(&context).with_context(|| format!("remove {}", context.display()))?;
    }
    fs::create_dir_all(&context).with_context(|| format!("create {}", context.display()))?;
    copy(&binary, &context.join("mcp-reaper"))?;
    let config = Cmd::new(&binary).args(["config", "default"]).stdout()?;
    write(&context.join("config.toml"), &format!("{config}\n"))?;
    write(&context.join("Containerfile"), &containerfile())?;
    Cmd::new("podman")
        .args(["build", "--quiet", "--tag", tag, "--file"])
        .args([context.join("Containerfile"), context.clone()])
        .run()?;
    println!("image: built {tag} (FROM scratch, the static binary and its default configuration)");
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_holds_only_the_binary_and_its_configuration() {
        let file = containerfile();
        let lines: Vec<&str> = file.lines().collect();
        assert_eq!(lines.first(), Some(&"FROM scratch"));
        let copies: Vec<&&str> = lines.iter().filter(|l| l.starts_with("COPY")).collect();
        assert_eq!(copies.len(), 2, "{file}");
        assert!(!file.contains("RUN "), "an empty base has no shell: {file}");
        assert!(
            file.contains("ENTRYPOINT [\"/usr/bin/mcp-reaper\"]"),
            "{file}"
        );
    }
}
