//! The Debian package, built by cargo-deb from `[package.metadata.deb]` in
//! mcp-reaper/Cargo.toml and the maintainer scripts in mcp-reaper/debian,
//! out of the binary `dist` built and checked (`--no-build`).
//!
//! Owns: the files cargo-deb takes from the build directory (the unit with
//! ExecStart in /usr/bin, the README excerpt; `docs` writes the manual
//! pages and completions beside them), running cargo-deb, and the check of
//! what the package holds. Must never: install the package (the
//! round trip in `roundtrip` does, as root, in `cargo xtask test`).
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::docs::{self, Generated};
use crate::cmd::{Cmd, cargo};
use crate::paths::{dist_path_env, repo_root};
use crate::setup::MUSL_TARGET;

pub const PACKAGE: &str = "mcp-reaper";
/// Where the package puts things (as in `[package.metadata.deb]`).
pub const BIN: &str = "/usr/bin/mcp-reaper";
pub const UNIT: &str = "/usr/lib/systemd/system/mcp-reaper.service";
pub const CONFIG: &str = "/etc/mcp-reaper/config.toml";
pub const LOG_DIR: &str = "/var/log/mcp-reaper";
/// Every command's manual page goes here; the top one is [`MAN_PAGE`].
const MAN_DIR: &str = "/usr/share/man/man1";
pub const MAN_PAGE: &str = "/usr/share/man/man1/mcp-reaper.1.gz";
pub const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/mcp-reaper";
/// The completion scripts: (file name under `docs`' completions
/// directory, where the package puts it).
pub const COMPLETIONS: [(&str, &str); 3] = [
    (docs::BASH, BASH_COMPLETION),
    (docs::ZSH, "/usr/share/zsh/vendor-completions/_mcp-reaper"),
    (
        docs::FISH,
        "/usr/share/fish/vendor_completions.d/mcp-reaper.fish",
    ),
];
/// The unit as shipped in deploy/, for installing by hand in /usr/local.
const SOURCE_UNIT: &str = "deploy/systemd/mcp-reaper.service";
const HAND_INSTALLED_BIN: &str = "/usr/local/bin/mcp-reaper";
/// Under cargo-deb's `target/release/` (the musl release directory): the
/// generated files the metadata's assets name.
pub const ASSETS_SUBDIR: &str = "deb";

/// The first word of the unit's `ExecStart=`, without systemd's prefixes.
fn exec_start(unit: &str) -> Option<&str> {
    unit.lines()
        .find_map(|l| l.trim().strip_prefix("ExecStart="))
        .map(|cmd| cmd.trim_start_matches(['-', '@', ':', '+', '!']))
        .and_then(|cmd| cmd.split_whitespace().next())
}

/// deploy's unit with the binary in /usr/bin, where the package puts it,
/// and a header for the packaged copy in place of deploy's (which tells how
/// to install it by hand).
pub fn packaged_unit(unit: &str) -> Result<String> {
    if exec_start(unit) != Some(HAND_INSTALLED_BIN) {
        bail!(
            "{SOURCE_UNIT}: ExecStart does not run {HAND_INSTALLED_BIN}: teach `packaged_unit` the new path"
        );
    }
    let body: Vec<&str> = unit
        .lines()
        .skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .collect();
    let packaged = format!(
        "# mcp-reaper: finds and reaps leaked MCP server process trees.\n\
         # Installed by the {PACKAGE} Debian package, which neither enables nor\n\
         # starts it: review {CONFIG}, then `systemctl enable --now {PACKAGE}`.\n\
         # Change it with `systemctl edit {PACKAGE}`.\n{}\n",
        body.join("\n").replace(HAND_INSTALLED_BIN, BIN)
    );
    if exec_start(&packaged) != Some(BIN) {
        bail!("the packaged unit's ExecStart does not run {BIN}");
    }
    Ok(packaged)
}

/// `systemd-analyze verify` of a unit file, where systemd-analyze exists:
/// fails on its exit status and on any complaint it prints (it exits 0 on
/// unknown keys). Returns false when systemd-analyze is not there.
pub fn systemd_verify(unit: &Path) -> Result<bool> {
    if !Cmd::new("systemd-analyze").args(["--version"]).succeeds() {
        return Ok(false);
    }
    eprintln!("$ systemd-analyze verify {}", unit.display());
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .context("could not start systemd-analyze")?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !complaints.trim().is_empty() {
        bail!(
            "systemd-analyze verify {} ({}): {}",
            unit.display(),
            out.status,
            complaints.trim()
        );
    }
    Ok(true)
}

/// Writes the generated assets, runs cargo-deb and checks the package.
pub fn build(
    release_dir: &Path,
    binary: &Path,
    dist: &Path,
    readme: &str,
    docs: &Generated,
) -> Result<PathBuf> {
    let assets = release_dir.join(ASSETS_SUBDIR);
    fs::create_dir_all(&assets).with_context(|| format!("create {}", assets.display()))?;
    let unit = fs::read_to_string(repo_root().join(SOURCE_UNIT))
        .with_context(|| format!("read {SOURCE_UNIT}"))?;
    fs::write(assets.join("mcp-reaper.service"), packaged_unit(&unit)?)
        .context("write the packaged unit")?;
    fs::write(assets.join("README.md"), readme).context("write the packaged README")?;
    let printed = cargo(&["deb", "--package", PACKAGE, "--target", MUSL_TARGET])
        .args(["--no-build", "--no-strip", "--output"])
        .args([dist])
        .env("PATH", dist_path_env())
        .stdout_showing_stderr()?;
    let deb = printed
        .lines()
        .rev()
        .map(|l| PathBuf::from(l.trim()))
        .find(|p| p.extension().is_some_and(|e| e == "deb") && p.is_file())
        .with_context(|| format!("cargo deb printed no .deb path: {printed}"))?;
    verify(&deb, binary, docs, &dist.join(".deb-contents"))?;
    Ok(deb)
}

/// Unpacks the package into `scratch` and checks that it holds the built
/// binary, the /usr/bin unit (which `systemd-analyze verify` accepts), the
/// configuration as a conffile, the maintainer script that makes the log
/// directory, and the manual pages and completions that were generated.
fn verify(deb: &Path, binary: &Path, docs: &Generated, scratch: &Path) -> Result<()> {
    if scratch.exists() {
        fs::remove_dir_all(scratch).with_context(|| format!("remove {}", scratch.display()))?;
    }
    Cmd::new("dpkg-deb")
        .args(["--extract".as_ref(), deb.as_os_str(), scratch.as_os_str()])
        .run()?;
    let inside = |path: &str| scratch.join(path.trim_start_matches('/'));
    let packaged = fs::read(inside(BIN)).with_context(|| format!("the package has no {BIN}"))?;
    let built = fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    if packaged != built {
        bail!("{BIN} in the package is not the binary that was built and checked");
    }
    let unit =
        fs::read_to_string(inside(UNIT)).with_context(|| format!("the package has no {UNIT}"))?;
    if exec_start(&unit) != Some(BIN) {
        bail!("{UNIT} in the package does not run {BIN}");
    }
    // Not installed, the unit is checked with its ExecStart pointing at the
    // binary unpacked here (verify wants the binary to exist).
    let copy = scratch.join("mcp-reaper.service");
    fs::write(&copy, unit.replace(BIN, &inside(BIN).to_string_lossy()))
        .with_context(|| format!("write {}", copy.display()))?;
    if !systemd_verify(&copy)? {
        println!("dist: systemd-analyze not found: the packaged unit was not verified");
    }
    if !inside(CONFIG).is_file() {
        bail!("the package has no {CONFIG}");
    }
    let conffiles = Cmd::new("dpkg-deb")
        .args(["--info".as_ref(), deb.as_os_str(), "conffiles".as_ref()])
        .stdout()
        .context("the package has no conffiles")?;
    if !conffiles.lines().any(|l| l.trim() == CONFIG) {
        bail!("{CONFIG} is not a conffile of the package (conffiles: {conffiles})");
    }
    let postinst = Cmd::new("dpkg-deb")
        .args(["--info".as_ref(), deb.as_os_str(), "postinst".as_ref()])
        .stdout()
        .context("the package has no postinst")?;
    if !postinst.contains(LOG_DIR) {
        bail!("the package's postinst does not create {LOG_DIR}");
    }
    verify_docs(&inside, docs)?;
    fs::remove_dir_all(scratch).with_context(|| format!("remove {}", scratch.display()))
}

/// Every generated page is in [`MAN_DIR`] as generated, and every script
/// where its shell looks for it; `inside` maps an installed path to the
/// unpacked package.
fn verify_docs(inside: &dyn Fn(&str) -> PathBuf, docs: &Generated) -> Result<()> {
    let pages = fs::read_dir(&docs.man).with_context(|| format!("read {}", docs.man.display()))?;
    for page in pages {
        let page = page.with_context(|| format!("read {}", docs.man.display()))?;
        let installed = format!("{MAN_DIR}/{}", page.file_name().to_string_lossy());
        same_file(&page.path(), &inside(&installed), &installed)?;
    }
    if !inside(MAN_PAGE).is_file() {
        bail!("the package has no {MAN_PAGE}");
    }
    for (file, installed) in COMPLETIONS {
        same_file(&docs.completions.join(file), &inside(installed), installed)?;
    }
    Ok(())
}

/// Fails unless `packaged` (installed as `installed`) holds what
/// `generated` does.
fn same_file(generated: &Path, packaged: &Path, installed: &str) -> Result<()> {
    let want = fs::read(generated).with_context(|| format!("read {}", generated.display()))?;
    let have = fs::read(packaged).with_context(|| format!("the package has no {installed}"))?;
    if want != have {
        bail!(
            "{installed} in the package is not {} as generated",
            generated.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packaged_unit_runs_the_binary_from_usr_bin() -> Result<()> {
        let unit = "[Service]\nExecStart=/usr/local/bin/mcp-reaper run --config /etc/x\n\
                    ExecReload=/bin/kill -HUP $MAINPID\n";
        let packaged = packaged_unit(unit)?;
        assert_eq!(exec_start(&packaged), Some(BIN));
        assert!(packaged.contains("ExecStart=/usr/bin/mcp-reaper run --config /etc/x\n"));
        assert!(!packaged.contains(HAND_INSTALLED_BIN));
        let with_header = format!("# Install: cp {HAND_INSTALLED_BIN} by hand\n\n{unit}");
        let packaged = packaged_unit(&with_header)?;
        assert!(!packaged.contains("by hand"), "deploy's header is replaced");
        assert!(packaged.contains("\n[Service]\nExecStart=/usr/bin/mcp-reaper run"));
        assert!(packaged_unit("[Service]\nExecStart=/opt/x run\n").is_err());
        Ok(())
    }

    #[test]
    fn exec_start_skips_systemd_prefixes() {
        assert_eq!(exec_start("ExecStart=-/usr/bin/x run"), Some("/usr/bin/x"));
        assert_eq!(exec_start("ExecStart=!!/usr/bin/x"), Some("/usr/bin/x"));
        assert_eq!(exec_start("Description=x"), None);
    }

    /// The unit in deploy/ is the one packaged: it must stay convertible.
    #[test]
    fn deploy_unit_packages() -> Result<()> {
        packaged_unit(&fs::read_to_string(repo_root().join(SOURCE_UNIT))?)?;
        Ok(())
    }

    /// The metadata's assets and the paths the checks and the round trip
    /// look for must agree.
    #[test]
    fn metadata_names_the_checked_paths() -> Result<()> {
        let manifest = fs::read_to_string(repo_root().join("mcp-reaper/Cargo.toml"))?;
        let man_dir = format!("{MAN_DIR}/");
        let completions = COMPLETIONS.map(|(_, installed)| installed);
        for dest in [BIN, UNIT, CONFIG, man_dir.as_str()]
            .into_iter()
            .chain(completions)
        {
            let dest = dest.trim_start_matches('/');
            assert!(
                manifest.contains(&format!("\"{dest}\"")),
                "no asset for {dest}"
            );
        }
        let man_pages = format!("{}/*.1.gz", docs::MAN_SUBDIR);
        let scripts = COMPLETIONS.map(|(file, _)| format!("{}/{file}", docs::COMPLETIONS_SUBDIR));
        let generated = ["mcp-reaper.service", "README.md", man_pages.as_str()];
        for generated in generated
            .into_iter()
            .chain(scripts.iter().map(String::as_str))
        {
            let source = format!("\"target/release/{ASSETS_SUBDIR}/{generated}\"");
            assert!(manifest.contains(&source), "no asset from {source}");
        }
        assert_eq!(MAN_PAGE, format!("{MAN_DIR}/{}", docs::TOP_PAGE));
        Ok(())
    }
}
