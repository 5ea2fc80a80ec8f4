//! The `[policy]` section: how long a tree gets before it is reaped, when
//! it counts as idle, and, per reason, whether to act or only observe.
//!
//! Owns: the reasons a tree may be reaped for (`Reason`, their names in the
//! file, metrics and audit log), the keys `[policy]` and `[policy.actions]`
//! accept (`RawPolicy`), their defaults (equal to `default.toml`) and their
//! checks.
//! Must never: decide a verdict or signal anything: this only says what the
//! operator allowed; the supervisor and the reaper apply it.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{
    duration::{duration_field, ser_duration},
    errors::Errs,
};

/// What to do when a tree raises a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Metrics, audit and scan output only.
    Observe,
    /// Reap the tree after the grace period.
    Enforce,
}

/// Why a tree is a candidate for reaping (ARCHITECTURE.md, signals table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    PeerReleased,
    HostExited,
    SessionEnded,
    Remnant,
    Idle,
    Superseded,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::PeerReleased,
        Reason::HostExited,
        Reason::SessionEnded,
        Reason::Remnant,
        Reason::Idle,
        Reason::Superseded,
    ];

    /// The name used in the file, metrics and the audit log.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PeerReleased => "peer-released",
            Reason::HostExited => "host-exited",
            Reason::SessionEnded => "session-ended",
            Reason::Remnant => "remnant",
            Reason::Idle => "idle",
            Reason::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Per-reason actions (`[policy.actions]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Actions {
    pub peer_released: Action,
    pub host_exited: Action,
    pub session_ended: Action,
    pub remnant: Action,
    pub idle: Action,
    pub superseded: Action,
}

impl Actions {
    #[must_use]
    pub fn get(&self, reason: Reason) -> Action {
        match reason {
            Reason::PeerReleased => self.peer_released,
            Reason::HostExited => self.host_exited,
            Reason::SessionEnded => self.session_ended,
            Reason::Remnant => self.remnant,
            Reason::Idle => self.idle,
            Reason::Superseded => self.superseded,
        }
    }

    fn set(&mut self, reason: Reason, action: Action) {
        let slot = match reason {
            Reason::PeerReleased => &mut self.peer_released,
            Reason::HostExited => &mut self.host_exited,
            Reason::SessionEnded => &mut self.session_ended,
            Reason::Remnant => &mut self.remnant,
            Reason::Idle => &mut self.idle,
            Reason::Superseded => &mut self.superseded,
        };
        *slot = action;
    }
}

impl Default for Actions {
    fn default() -> Self {
        Actions {
            peer_released: Action::Enforce,
            host_exited: Action::Enforce,
            session_ended: Action::Enforce,
            remnant: Action::Enforce,
            idle: Action::Observe,
            superseded: Action::Observe,
        }
    }
}

/// `[policy]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    #[serde(serialize_with = "ser_duration")]
    pub grace: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub kill_after: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub idle_after: Duration,
    pub dry_run: bool,
    pub actions: Actions,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            grace: Duration::from_secs(2),
            kill_after: Duration::from_secs(2),
            idle_after: Duration::from_secs(30 * 60),
            dry_run: false,
            actions: Actions::default(),
        }
    }
}

/// `[policy]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    grace: Option<Spanned<String>>,
    kill_after: Option<Spanned<String>>,
    idle_after: Option<Spanned<String>>,
    dry_run: Option<bool>,
    actions: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

/// Checks `[policy]`; a bad value is recorded and replaced by its default.
pub(super) fn build(errs: &mut Errs, raw: RawPolicy) -> PolicyConfig {
    let d = PolicyConfig::default();
    let zero = Duration::ZERO;
    let grace = duration_field(errs, raw.grace, d.grace, zero, "grace");
    let kill_after = duration_field(errs, raw.kill_after, d.kill_after, zero, "kill_after");
    let idle_after = duration_field(
        errs,
        raw.idle_after,
        d.idle_after,
        Duration::from_secs(1),
        "idle_after",
    );
    PolicyConfig {
        grace,
        kill_after,
        idle_after,
        dry_run: raw.dry_run.unwrap_or(d.dry_run),
        actions: actions(errs, raw.actions.unwrap_or_default()),
    }
}

/// `[policy.actions]`: reason names to `"observe"` or `"enforce"`; reasons
/// not named keep their default.
fn actions(errs: &mut Errs, raw: BTreeMap<Spanned<String>, Spanned<String>>) -> Actions {
    let mut actions = Actions::default();
    for (reason, action) in raw {
        let Some(r) = Reason::parse(reason.get_ref()) else {
            let known: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
            errs.at(
                reason.span(),
                format!(
                    "unknown reason {:?} (known: {})",
                    reason.get_ref(),
                    known.join(", ")
                ),
            );
            continue;
        };
        match action.get_ref().as_str() {
            "observe" => actions.set(r, Action::Observe),
            "enforce" => actions.set(r, Action::Enforce),
            other => errs.at(
                action.span(),
                format!("unknown action {other:?}: expected \"observe\" or \"enforce\""),
            ),
        }
    }
    actions
}
