//! Which configuration is in force: the file the command line names, else
//! the file at the default path when there is one, else the built-in
//! defaults.
//!
//! Owns: the default path (`/etc/mcp-reaper/config.toml`, moved by
//! `MCP_REAPER_DEFAULT_CONFIG`, which tests set so that they never read
//! /etc), the rule that a named file must exist while the default one may
//! be absent, and loading whichever is in force.
//! Must never: fall back to the built-in defaults when a file is there but
//! cannot be read or is invalid, or when the file the command line names
//! is missing: the operator meant a file, and nothing starts without it.

use std::{
    fmt,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use super::{errors::ConfigErrors, model::Config};

/// Where the configuration is read from when the command line names none.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mcp-reaper/config.toml";

/// Environment variable that moves [`DEFAULT_CONFIG_PATH`].
pub const DEFAULT_CONFIG_ENV: &str = "MCP_REAPER_DEFAULT_CONFIG";

/// The configuration in force, and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// Named on the command line: it must exist.
    Given(PathBuf),
    /// Found at the default path.
    Default(PathBuf),
    /// Nothing at the default path (`looked_at`): the built-in defaults.
    BuiltIn { looked_at: PathBuf },
}

/// The default path: [`DEFAULT_CONFIG_ENV`] when set and not empty, else
/// [`DEFAULT_CONFIG_PATH`].
#[must_use]
pub fn default_config_path() -> PathBuf {
    std::env::var_os(DEFAULT_CONFIG_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from)
}

impl ConfigFile {
    /// `given` if the command line names a file, else the file at
    /// [`default_config_path`] if one is there, else the built-in defaults.
    #[must_use]
    pub fn resolve(given: Option<&Path>) -> ConfigFile {
        ConfigFile::resolve_with(given, &default_config_path())
    }

    /// As [`ConfigFile::resolve`], with the default path given. Anything
    /// at `default` (a file, an unreadable file, a dangling link) is in
    /// force; only nothing there at all means the built-in defaults.
    #[must_use]
    pub fn resolve_with(given: Option<&Path>, default: &Path) -> ConfigFile {
        if let Some(path) = given {
            return ConfigFile::Given(path.to_path_buf());
        }
        match std::fs::symlink_metadata(default) {
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                ConfigFile::BuiltIn {
                    looked_at: default.to_path_buf(),
                }
            }
            _ => ConfigFile::Default(default.to_path_buf()),
        }
    }

    /// The file read, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigFile::Given(p) | ConfigFile::Default(p) => Some(p),
            ConfigFile::BuiltIn { .. } => None,
        }
    }

    /// Reads and checks the file in force, or gives the built-in defaults.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self.path() {
            Some(p) => Config::load(p),
            None => Ok(Config::default()),
        }
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigFile::Given(p) => write!(f, "{}", p.display()),
            ConfigFile::Default(p) => write!(f, "{} (the default path)", p.display()),
            ConfigFile::BuiltIn { looked_at } => {
                write!(f, "the built-in defaults (no {})", looked_at.display())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_named_file_wins_and_the_default_is_used_only_when_there() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config.toml");
        let named = dir.path().join("named.toml");
        let absent = ConfigFile::resolve_with(None, &default);
        assert_eq!(
            absent,
            ConfigFile::BuiltIn {
                looked_at: default.clone()
            }
        );
        assert_eq!(absent.load().unwrap(), Config::default());
        assert!(absent.to_string().contains("built-in defaults"), "{absent}");

        std::fs::write(&default, "[policy]\ngrace = \"7s\"\n").unwrap();
        let present = ConfigFile::resolve_with(None, &default);
        assert_eq!(present, ConfigFile::Default(default.clone()));
        let c = present.load().unwrap();
        assert_eq!(c.policy.grace, std::time::Duration::from_secs(7));

        // A named file overrides the default one, and must exist.
        let given = ConfigFile::resolve_with(Some(&named), &default);
        assert_eq!(given, ConfigFile::Given(named.clone()));
        let e = given.load().unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_default_file_that_fails_is_an_error_not_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("config.toml");
        std::fs::write(&default, "presets = [\"no-such-host\"]\n").unwrap();
        let e = ConfigFile::resolve_with(None, &default)
            .load()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown preset"), "{e}");
        // A dangling link at the default path is a file meant to be there.
        std::fs::remove_file(&default).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone.toml"), &default).unwrap();
        let f = ConfigFile::resolve_with(None, &default);
        assert_eq!(f, ConfigFile::Default(default.clone()));
        assert!(f.load().is_err());
        // A default path below a regular file is simply not there.
        let below_file = dir.path().join("gone.toml/config.toml");
        std::fs::write(dir.path().join("gone.toml"), "").unwrap();
        assert!(matches!(
            ConfigFile::resolve_with(None, &below_file),
            ConfigFile::BuiltIn { .. }
        ));
    }
}
