//! From text to `Config` and back: the entry points (`from_toml_str`,
//! `load`, `Default`, `to_toml`) and the order in which a file is read.
//!
//! Owns: the documented defaults (`default.toml`, embedded), reading the
//! file, and running every check over every section so that all errors
//! come back at once, each with its line and column.
//! Must never: return a `Config` when any error was found, stop at the
//! first error, panic on any input, or read anything but the file it is
//! given (and `/etc/passwd` and `/etc/group`, through `protect`, to
//! resolve user and group names).

use std::path::Path;

use super::{
    control::{self, ControlConfig},
    daemon::{self, DaemonConfig},
    errors::{ConfigErrors, Errs},
    host,
    model::{Config, Parts},
    policy::{self, PolicyConfig},
    presets::{self, builtins},
    protect::{self, SystemUsers, Users},
    raw, server,
};

/// The documented default configuration (every option, commented).
const DEFAULT_TOML: &str = include_str!("default.toml");

/// The documented default configuration file.
#[must_use]
pub fn default_toml() -> &'static str {
    DEFAULT_TOML
}

impl Default for Config {
    /// The embedded `default.toml`; equal to parsing [`default_toml`].
    fn default() -> Self {
        // The fallback is unreachable (tested); still never panic.
        Config::from_toml_str(DEFAULT_TOML, "<default>").unwrap_or_else(|_| fallback())
    }
}

/// Defaults built in code, without presets or built-in shapes: only used
/// should the embedded files ever fail to parse.
fn fallback() -> Config {
    let parts = Parts {
        presets: Vec::new(),
        builtin_servers: false,
        daemon: DaemonConfig::default(),
        policy: PolicyConfig::default(),
        hosts: Vec::new(),
        servers: Vec::new(),
        protect: Vec::new(),
        control: ControlConfig::default(),
    };
    Config::from_parts(parts, &[], &[])
}

impl Config {
    /// Parses and validates `text`; `source_name` names it in errors. Every
    /// error is reported, each with its line and column.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        parse(text, source_name, &SystemUsers)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Config::from_toml_str(&text, &name),
                Err(e) => Err(ConfigErrors::whole_file(
                    &name,
                    format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
                )),
            },
            Err(e) => Err(ConfigErrors::whole_file(&name, format!("cannot read: {e}"))),
        }
    }

    /// This configuration as TOML (presets by name, not expanded). Parsing
    /// the result gives an equal `Config`.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }
}

/// Parses `text` (named `source_name` in errors), resolving protected user
/// names with `users`: syntax and types first, then every section's checks.
pub(super) fn parse(
    text: &str,
    source_name: &str,
    users: &dyn Users,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errs::default();
    let raw = raw::deserialize_all(text, &mut errs);
    let (preset_hosts, shapes) = match builtins() {
        Ok((h, s)) => (h.as_slice(), s.as_slice()),
        Err(msg) => {
            errs.push(None, msg);
            (&[][..], &[][..])
        }
    };
    let presets = presets::enabled(&mut errs, raw.presets);
    let builtin_servers = raw.builtin_servers.unwrap_or(true);
    let daemon = daemon::build(&mut errs, raw.daemon.unwrap_or_default());
    let policy = policy::build(&mut errs, raw.policy.unwrap_or_default());
    let hosts = host::build(&mut errs, raw.host.unwrap_or_default(), &presets);
    let servers = server::build(&mut errs, raw.server.unwrap_or_default());
    let protect = protect::build(&mut errs, users, raw.protect.unwrap_or_default());
    let control = control::build(&mut errs, users, raw.control.unwrap_or_default());

    if !errs.is_empty() {
        return Err(errs.into_errors(text, source_name));
    }
    let parts = Parts {
        presets,
        builtin_servers,
        daemon,
        policy,
        hosts,
        servers,
        protect,
        control,
    };
    Ok(Config::from_parts(parts, preset_hosts, shapes))
}
