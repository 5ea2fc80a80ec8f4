//! The release tarball: the static binary, the systemd unit, the example
//! configuration, the alert rules, the dashboard, the manual pages
//! (`man/`), the shell completions (`completions/`) and the README's
//! operator sections, under one directory named after the release.
//!
//! Owns: what the tarball holds and how it is written (reproducibly: fixed
//! owner, sorted names, the commit's time). Must never: write outside the
//! directory it is given.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::docs::{COMPLETIONS_SUBDIR, Generated, MAN_SUBDIR};
use crate::cmd::Cmd;
use crate::paths::repo_root;

/// `## ` sections of README.md left out of the excerpt: they are about
/// working on the source, not running the daemon.
const DEVELOPER_SECTIONS: &[&str] = &["Development", "Layout"];
/// The section the excerpt must have: how to install what it comes with.
const INSTALL_SECTION: &str = "Install";

/// Files copied from the repository: (source, name in the tarball, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/mcp-reaper.service",
        "mcp-reaper.service",
        0o644,
    ),
    ("mcp-reaper/src/config/default.toml", "config.toml", 0o644),
    (
        "deploy/prometheus/mcp-reaper-alerts.yml",
        "prometheus/mcp-reaper-alerts.yml",
        0o644,
    ),
    (
        "deploy/grafana/mcp-reaper-dashboard.json",
        "grafana/mcp-reaper-dashboard.json",
        0o644,
    ),
];

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// README.md without the development sections and without the lead's code
/// block (the development commands), ending with where the rest is.
pub fn readme_excerpt(readme: &str, repository: &str) -> Result<String> {
    let mut out = String::new();
    let mut in_lead = true;
    let mut in_fence = false;
    let mut skipping = false;
    let mut has_install = false;
    for line in readme.lines() {
        let fence = is_fence(line);
        if !in_fence && let Some(title) = line.strip_prefix("## ") {
            in_lead = false;
            skipping = DEVELOPER_SECTIONS.contains(&title.trim());
            has_install |= title.trim() == INSTALL_SECTION;
        }
        let lead_code = in_lead && (in_fence || fence);
        if fence {
            in_fence = !in_fence;
        }
        if skipping || lead_code {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !has_install {
        bail!("README.md has no `## {INSTALL_SECTION}` section for the release's README");
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out.push_str(&format!(
        "\nThis is the operator part of the README; the whole README, with building\n\
         from source and the source layout, is at {repository}.\n"
    ));
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    Ok(out)
}

fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

/// Copies every file of `from` (not its subdirectories) into `to`.
fn copy_files(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let entries = fs::read_dir(from).with_context(|| format!("read {}", from.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read {}", from.display()))?;
        if entry.file_type()?.is_file() {
            copy_with_mode(&entry.path(), &to.join(entry.file_name()), mode)?;
        }
    }
    Ok(())
}

/// The commit's time (or `$SOURCE_DATE_EPOCH`), so that the same commit
/// gives the same tarball.
fn source_date_epoch() -> String {
    if let Some(epoch) = std::env::var_os("SOURCE_DATE_EPOCH").filter(|e| !e.is_empty()) {
        return epoch.to_string_lossy().into_owned();
    }
    Cmd::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(repo_root())
        .stdout()
        .unwrap_or_else(|_| "0".to_owned())
}

/// Lays out `<dist>/<name>/` and packs it into `<dist>/<name>.tar.gz`.
pub fn write(
    dist: &Path,
    name: &str,
    binary: &Path,
    readme: &str,
    docs: &Generated,
) -> Result<PathBuf> {
    let stage = dist.join(name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("remove {}", stage.display()))?;
    }
    copy_with_mode(binary, &stage.join("mcp-reaper"), 0o755)?;
    for &(source, dest, mode) in FILES {
        copy_with_mode(&repo_root().join(source), &stage.join(dest), mode)?;
    }
    copy_files(&docs.man, &stage.join(MAN_SUBDIR), 0o644)?;
    copy_files(&docs.completions, &stage.join(COMPLETIONS_SUBDIR), 0o644)?;
    fs::write(stage.join("README.md"), readme).context("write README.md")?;
    let tarball = dist.join(format!("{name}.tar.gz"));
    let mtime = format!("--mtime=@{}", source_date_epoch());
    Cmd::new("tar")
        // gzip -n: no file name or time stamp in the gzip header.
        .args(["--create", "--use-compress-program=gzip -n", "--sort=name"])
        .args(["--owner=0", "--group=0"])
        .args(["--numeric-owner", &mtime, "--file"])
        .args([
            tarball.as_os_str(),
            "--directory".as_ref(),
            dist.as_os_str(),
        ])
        .args([name])
        .run()?;
    fs::remove_dir_all(&stage).with_context(|| format!("remove {}", stage.display()))?;
    Ok(tarball)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "# tool\n\nWhat it is.\n\n```sh\ncargo xtask run\n```\n\n\
        ## Install\n\nFrom the package.\n\n## Usage\n\n```text\n## not a heading\n```\n\n\
        ### Details\n\nMore.\n\n## Development\n\nxtask.\n\n### Sub\n\nhidden\n\n\
        ## Layout\n\nfolders\n";

    #[test]
    fn excerpt_drops_development_and_the_lead_commands() -> Result<()> {
        let excerpt = readme_excerpt(README, "https://example.invalid/repo")?;
        assert!(excerpt.starts_with("# tool\n\nWhat it is.\n\n## Install\n"));
        assert!(!excerpt.contains("cargo xtask run"));
        assert!(
            excerpt.contains("## not a heading"),
            "a code block is kept whole"
        );
        assert!(excerpt.contains("### Details\n\nMore."));
        for gone in ["xtask.", "hidden", "folders", "## Development", "## Layout"] {
            assert!(!excerpt.contains(gone), "{gone} should be left out");
        }
        assert!(excerpt.ends_with("is at https://example.invalid/repo.\n"));
        Ok(())
    }

    #[test]
    fn excerpt_needs_an_install_section() {
        assert!(readme_excerpt("# tool\n\n## Usage\n", "r").is_err());
    }

    #[test]
    fn shipped_files_exist() {
        for &(source, _, _) in FILES {
            assert!(repo_root().join(source).is_file(), "{source} is missing");
        }
    }
}
