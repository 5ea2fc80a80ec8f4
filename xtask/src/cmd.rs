//! Running external commands: every cargo invocation goes through
//! [`cargo`] so that it sees the tools `setup` installs on PATH.
//!
//! Owns: how a command is echoed, run and reported when it fails.
//! Must never: decide what to install or run; its callers do.
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::paths::{repo_root, tool_path_env};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command that is echoed before it runs and fails with its command line.
pub struct Cmd {
    inner: Command,
    line: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let line = program.as_ref().to_string_lossy().into_owned();
        Self {
            inner: Command::new(program),
            line,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            let arg = arg.as_ref();
            self.line.push(' ');
            self.line.push_str(&arg.to_string_lossy());
            self.inner.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.inner.env_remove(key);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.inner.current_dir(dir.into());
        self
    }

    /// Runs with inherited stdio; an error names the command and its status.
    pub fn run(mut self) -> Result<()> {
        eprintln!("$ {}", self.line);
        let status = self
            .inner
            .status()
            .with_context(|| format!("could not start `{}`", self.line))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.line);
        }
        Ok(())
    }

    /// Runs silently and reports whether it exited with status 0.
    pub fn succeeds(mut self) -> bool {
        self.inner
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs silently and returns trimmed stdout when it exits with status 0.
    pub fn stdout(mut self) -> Result<String> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("could not start `{}`", self.line))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.line,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Echoed like [`Cmd::run`] and with stderr shown as it comes (cargo's
    /// progress), returning stdout when it exits with status 0.
    pub fn stdout_showing_stderr(mut self) -> Result<String> {
        eprintln!("$ {}", self.line);
        let out = self
            .inner
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{}`", self.line))?;
        if !out.status.success() {
            bail!("`{}` failed ({})", self.line, out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The cargo that runs xtask (`$CARGO`), so nested builds use its toolchain.
pub fn cargo_bin() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// `cargo <args>` in the repository root with the tools on PATH.
pub fn cargo<S: AsRef<OsStr>>(args: &[S]) -> Cmd {
    let mut cmd = Cmd::new(cargo_bin());
    cmd.line = "cargo".to_owned();
    cmd.args(args)
        .current_dir(repo_root())
        .env("PATH", tool_path_env())
}
