//! The Debian package's round trip on this machine, as `cargo xtask test`
//! runs it as root: build it (`dist`), install it with dpkg, check what it
//! installed (`systemd-analyze verify` on the unit where systemd-analyze
//! exists, `config check` of the installed configuration, the installed
//! binary's `doctor`, the manual page and the completions, and a short run
//! of the installed service's command line against a real leaky host: the
//! test `shipped_run`), then purge it
//! and check that it is gone.
//!
//! Owns: installing and purging the package it built. Must never: start the
//! service through systemd (the run is the daemon in the foreground, as the
//! unit's command line starts it), or touch a mcp-reaper package it did not
//! install (it refuses to run when one is installed already).
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::build;
use super::deb::{
    BASH_COMPLETION, BIN, COMPLETIONS, CONFIG, LOG_DIR, MAN_PAGE, PACKAGE, UNIT, systemd_verify,
};
use crate::cmd::{Cmd, cargo, is_root};
use crate::paths::npm_dir;

/// Why the round trip cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("not root: dpkg -i needs root".to_owned());
    }
    if !Cmd::new("dpkg").args(["--version"]).succeeds() {
        return Some("dpkg is not available".to_owned());
    }
    None
}

fn installed() -> bool {
    Cmd::new("dpkg-query")
        .args(["--show", "--showformat=${Status}", PACKAGE])
        .stdout()
        .is_ok_and(|status| status.trim() == "install ok installed")
}

pub fn run() -> Result<()> {
    if let Some(reason) = skip_reason() {
        bail!("the Debian package round trip cannot run: {reason}");
    }
    if installed() {
        bail!(
            "{PACKAGE} is installed on this machine already: the round trip would replace and purge it"
        );
    }
    let artifacts = build()?;
    Cmd::new("dpkg")
        .args(["--install".as_ref(), artifacts.deb.as_os_str()])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let checked = check_installed().and_then(|()| check_service_run());
    let purged = Cmd::new("dpkg")
        .args(["--purge", PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run();
    checked?;
    purged?;
    check_purged()
}

fn check_installed() -> Result<()> {
    for file in [BIN, UNIT, CONFIG] {
        if !Path::new(file).is_file() {
            bail!("the package did not install {file}");
        }
    }
    if !Path::new(LOG_DIR).is_dir() {
        bail!("the package did not create {LOG_DIR}");
    }
    let conffiles = Cmd::new("dpkg-query")
        .args(["--show", "--showformat=${Conffiles}", PACKAGE])
        .stdout()?;
    if !conffiles.lines().any(|l| l.trim().starts_with(CONFIG)) {
        bail!("dpkg does not list {CONFIG} as a conffile ({conffiles})");
    }
    if !systemd_verify(Path::new(UNIT))? {
        println!("roundtrip: systemd-analyze not found: {UNIT} was not verified");
    }
    Cmd::new(BIN).args(["config", "check", CONFIG]).run()?;
    check_docs()?;
    check_doctor()
}

/// The manual page is valid gzip, every completion script is there, and
/// bash's registers a completion for the binary.
fn check_docs() -> Result<()> {
    Cmd::new("gzip").args(["--test", MAN_PAGE]).run()?;
    for (_, script) in COMPLETIONS {
        if !Path::new(script).is_file() {
            bail!("the package did not install {script}");
        }
    }
    let load = format!("source {BASH_COMPLETION} && complete -p {PACKAGE}");
    Cmd::new("bash").args(["-c", &load]).run()
}

/// `doctor` must run and name a tier: exit 0 (eBPF) or 3 (pidfd or poll
/// only); 1 means the installed binary cannot run here.
fn check_doctor() -> Result<()> {
    eprintln!("$ {BIN} doctor");
    let status = std::process::Command::new(BIN)
        .arg("doctor")
        .status()
        .with_context(|| format!("could not start {BIN}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(3) => {
            println!("roundtrip: doctor: only the pidfd or poll tier can run on this machine");
            Ok(())
        }
        _ => bail!("`{BIN} doctor` failed ({status})"),
    }
}

/// The installed service against a real leaky host: the test
/// `shipped_run` with the installed binary, unit and configuration (it
/// runs the unit's command line, and checks that a released tree is reaped
/// and audited and a live one left alone).
fn check_service_run() -> Result<()> {
    cargo(&["test", "--package", PACKAGE, "--test", "shipped_run"])
        .env("MCP_REAPER_BIN", BIN)
        .env("MCP_REAPER_SHIPPED_UNIT", UNIT)
        .env("MCP_REAPER_SHIPPED_CONFIG", CONFIG)
        .env("MCP_REAPER_REQUIRE_PRIVILEGED", "1")
        .env("MCP_REAPER_NPM_DIR", npm_dir())
        .run()
}

fn check_purged() -> Result<()> {
    if installed() {
        bail!("{PACKAGE} is still installed after dpkg --purge");
    }
    let completions = COMPLETIONS.map(|(_, script)| script);
    for path in [BIN, UNIT, CONFIG, LOG_DIR, MAN_PAGE]
        .into_iter()
        .chain(completions)
    {
        if Path::new(path).exists() {
            bail!("{path} is left after dpkg --purge");
        }
    }
    Ok(())
}
