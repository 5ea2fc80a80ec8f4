//! Built-in host presets and server launch shapes (`presets.toml`,
//! embedded): the hosts and servers known without any configuration.
//!
//! Owns: the preset names, the embedded file, parsing it once (with the
//! same checks as a user's file) and checking a file's `presets` list.
//! Must never: let a broken embedded file panic or pass silently: its
//! errors are reported with every configuration parsed (tests keep it
//! valid).

use std::sync::OnceLock;

use toml::Spanned;

use super::{
    errors::Errs,
    host::{self, HostRule},
    raw,
    server::{self, ServerRule},
};

/// Built-in host presets and server launch shapes.
const PRESETS_TOML: &str = include_str!("presets.toml");

/// Every built-in preset, in the default order.
pub const PRESET_NAMES: &[&str] = &[
    "openclaw",
    "claude-code",
    "claude-desktop",
    "cursor",
    "vscode",
    "codex",
    "goose",
    "generic",
];

/// The built-in presets and server shapes, in configuration syntax.
#[must_use]
pub fn presets_toml() -> &'static str {
    PRESETS_TOML
}

/// The built-in hosts and server shapes, parsed once.
pub(super) type Builtins = (Vec<HostRule>, Vec<ServerRule>);

/// The built-in hosts and server shapes, or the embedded file's errors as
/// one message.
pub(super) fn builtins() -> Result<&'static Builtins, String> {
    static BUILTINS: OnceLock<Result<Builtins, String>> = OnceLock::new();
    BUILTINS
        .get_or_init(|| {
            let mut errs = Errs::default();
            let raw = raw::deserialize_all(PRESETS_TOML, &mut errs);
            let hosts = host::build(&mut errs, raw.host.unwrap_or_default(), &[]);
            let servers = server::build(&mut errs, raw.server.unwrap_or_default());
            if errs.is_empty() {
                Ok((hosts, servers))
            } else {
                Err(errs
                    .into_errors(PRESETS_TOML, "<built-in presets>")
                    .to_string())
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The `presets` list: known names, each once. Absent: every preset.
pub(super) fn enabled(
    errs: &mut Errs,
    presets: Option<Spanned<Vec<Spanned<String>>>>,
) -> Vec<String> {
    let Some(presets) = presets else {
        return PRESET_NAMES.iter().map(|s| (*s).to_owned()).collect();
    };
    let mut out: Vec<String> = Vec::new();
    for p in presets.into_inner() {
        if !PRESET_NAMES.contains(&p.get_ref().as_str()) {
            errs.at(
                p.span(),
                format!(
                    "unknown preset {:?} (known: {})",
                    p.get_ref(),
                    PRESET_NAMES.join(", ")
                ),
            );
        } else if !out.contains(p.get_ref()) {
            out.push(p.into_inner());
        }
    }
    out
}
