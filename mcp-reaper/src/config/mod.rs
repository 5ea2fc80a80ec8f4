//! Configuration: the TOML file, its documented defaults, the built-in host
//! presets and server launch shapes, and the compiled matchers that classify
//! a process as a host, an MCP server or a protected process.
//!
//! Owns: parsing and validating the file (every error reported at once, each
//! with its line and column), the defaults (`default.toml`, embedded), the
//! presets (`presets.toml`, embedded), and bounded server identities used as
//! metric labels.
//!
//! Must never: panic on any input, read anything but the file in force (the
//! one given, else the one at the default path) and `/etc/passwd` (to
//! resolve protected user names), or decide by itself that a
//! process may be killed: a match here only names and scopes processes;
//! ownership and verdicts belong to other modules.
//!
//! Where to look, lowest layer first (a file imports only files above it;
//! none imports this one, which only declares and re-exports):
//! - `errors`: the error types and the span collector every check reports to.
//! - `duration`: "500ms", "1h30m" and the like; no crate.
//! - `size`: "4096", "64MiB" and the like (the command line's byte sizes);
//!   no crate.
//! - `matcher`: `ProcView`, anchored patterns (the `regex` crate: linear
//!   time, size-capped; command lines cut at [`CMDLINE_MATCH_LIMIT`]) and
//!   the `exe`/`comm`/`cmdline` matcher.
//! - `label`: bounded names and identity templates (`{package}`, ...).
//! - `launcher`: `npx`, `sh -c`, `docker run`, ...: never hosts.
//! - one file per section, each with its type, defaults, accepted keys and
//!   checks: `daemon` (`[daemon]`), `policy` (`[policy]`, reasons and
//!   actions), `host` (`[[host]]`, relays; how a host rule matches),
//!   `server` (`[[server]]`; how a server gets its identity), `protect`
//!   (`[[protect]]`), `control` (`[control]`: the control socket's read
//!   group).
//! - `raw`: the top-level keys and the read that finds every syntax and
//!   type error.
//! - `presets`: the built-in hosts and server shapes, and `presets = [...]`.
//! - `model`: `Config`, the rules in effect and the questions asked of it
//!   (`classify_host`, `classify_server`, `classify_relay`, `is_protected`).
//! - `load`: `from_toml_str`, `load`, `Default`, `to_toml`: the order in
//!   which a file is read and checked.
//! - `file`: which configuration is in force: the file named, else the one
//!   at the default path (`/etc/mcp-reaper/config.toml`), else the
//!   built-in defaults.

mod control;
mod daemon;
mod duration;
mod errors;
mod file;
mod host;
mod label;
mod launcher;
mod load;
mod matcher;
mod model;
mod policy;
mod presets;
mod protect;
mod raw;
mod server;
mod size;
#[cfg(test)]
mod tests;

pub use control::{ControlConfig, ReadGroup};
pub use daemon::{DaemonConfig, Source};
pub use duration::{format_duration, parse_duration};
pub use errors::{ConfigError, ConfigErrors};
pub use file::{ConfigFile, DEFAULT_CONFIG_ENV, DEFAULT_CONFIG_PATH, default_config_path};
pub use host::HostRule;
pub use label::MAX_LABEL_LEN;
pub use launcher::LAUNCHER_PATTERNS;
pub use load::default_toml;
pub use matcher::{CMDLINE_MATCH_LIMIT, Pattern, ProcMatcher, ProcView};
pub use model::{Config, server_identity};
pub use policy::{Action, Actions, PolicyConfig, Reason};
pub use presets::{PRESET_NAMES, presets_toml};
pub use protect::{CgroupMatch, ProtectRule, UserRef};
pub use server::{ServerMatch, ServerRule};
pub use size::{format_bytes, parse_bytes};
