//! The `[control]` section: who besides root may use the control socket.
//!
//! Owns: the keys `[control]` accepts (`RawControl`), resolving
//! `read_group` (a group name from /etc/group, or a numeric gid) and its
//! checks.
//! Must never: grant more than read-only requests (`scan`) to anyone: the
//! section names no other right, and `release` stays root's whatever it
//! says.

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::{errors::Errs, protect::Users};

/// `[control]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ControlConfig {
    /// The group whose members may send read-only requests; `None`: root
    /// (and the daemon's own user) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_group: Option<ReadGroup>,
}

impl ControlConfig {
    /// Nothing set: the section is left out of `to_toml`.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `read_group`, as written and resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadGroup {
    /// The name as written, or `None` when a gid was given.
    pub name: Option<String>,
    pub gid: u32,
}

impl Serialize for ReadGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.name {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u32(self.gid),
        }
    }
}

/// `[control]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    read_group: Option<Spanned<toml::Value>>,
}

/// Checks `[control]`, resolving a group name with `users`.
pub(super) fn build(errs: &mut Errs, users: &dyn Users, raw: RawControl) -> ControlConfig {
    let Some(g) = raw.read_group else {
        return ControlConfig::default();
    };
    let span = g.span();
    let read_group = match g.into_inner() {
        toml::Value::String(name) => match users.gid_of(&name) {
            Some(gid) => Some(ReadGroup {
                name: Some(name),
                gid,
            }),
            None => {
                errs.at(
                    span,
                    format!("unknown group {name:?} in read_group: not in /etc/group"),
                );
                None
            }
        },
        toml::Value::Integer(n) => match u32::try_from(n) {
            Ok(gid) if gid != u32::MAX => Some(ReadGroup { name: None, gid }),
            _ => {
                errs.at(span, format!("read_group {n} is not a valid gid"));
                None
            }
        },
        _ => {
            errs.at(span, "read_group must be a group name or a numeric gid");
            None
        }
    };
    ControlConfig { read_group }
}
