//! The `[daemon]` section: which event source to use, how often to poll,
//! where to serve metrics and write the audit log, and which server
//! identities may become metric labels.
//!
//! Owns: the keys `[daemon]` accepts (`RawDaemon`), their defaults
//! (`DaemonConfig::default`, equal to `default.toml`) and their checks.
//! Must never: open the listen address or the audit log (the daemon does,
//! at start), or accept a label outside the bounded label alphabet.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::{
    duration::{duration_field, ser_duration},
    errors::Errs,
    label::is_identity,
};

/// Event source choice for the daemon, spelled as `run --source` spells
/// it (the command line overrides the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Auto,
    Ebpf,
    Pidfd,
    Poll,
}

/// `[daemon]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DaemonConfig {
    pub source: Source,
    #[serde(serialize_with = "ser_duration")]
    pub poll_interval: Duration,
    /// `None`: no metrics endpoint (`listen = "off"`).
    #[serde(serialize_with = "ser_listen")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    pub unknown_server_label: String,
    /// Empty: every identity is allowed as a label.
    pub server_labels: Vec<String>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            source: Source::Auto,
            poll_interval: Duration::from_secs(1),
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9863))),
            audit_log: None,
            unknown_server_label: "other".to_owned(),
            server_labels: Vec::new(),
        }
    }
}

fn ser_listen<S: Serializer>(l: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match l {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_str("off"),
    }
}

/// `[daemon]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    source: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    unknown_server_label: Option<Spanned<String>>,
    server_labels: Option<Vec<Spanned<String>>>,
}

/// Checks `[daemon]`; a bad value is recorded and replaced by its default.
pub(super) fn build(errs: &mut Errs, raw: RawDaemon) -> DaemonConfig {
    let d = DaemonConfig::default();
    let source = source(errs, raw.source, d.source);
    let poll_interval = duration_field(
        errs,
        raw.poll_interval,
        d.poll_interval,
        Duration::from_millis(10),
        "poll_interval",
    );
    let listen = listen(errs, raw.listen, d.listen);
    let audit_log = raw.audit_log.and_then(|p| {
        let path = PathBuf::from(p.get_ref());
        if path.is_absolute() {
            Some(path)
        } else {
            errs.at(p.span(), "audit_log must be an absolute path");
            None
        }
    });
    let unknown_server_label = match raw.unknown_server_label {
        None => d.unknown_server_label,
        Some(l) if is_identity(l.get_ref()) => l.into_inner(),
        Some(l) => {
            errs.at(l.span(), bad_identity(l.get_ref()));
            d.unknown_server_label
        }
    };
    let mut server_labels: Vec<String> = Vec::new();
    for l in raw.server_labels.unwrap_or_default() {
        if !is_identity(l.get_ref()) {
            errs.at(l.span(), bad_identity(l.get_ref()));
        } else if !server_labels.contains(l.get_ref()) {
            server_labels.push(l.into_inner());
        }
    }
    DaemonConfig {
        source,
        poll_interval,
        listen,
        audit_log,
        unknown_server_label,
        server_labels,
    }
}

fn source(errs: &mut Errs, raw: Option<Spanned<String>>, default: Source) -> Source {
    let Some(s) = raw else { return default };
    match s.get_ref().as_str() {
        "auto" => Source::Auto,
        "ebpf" => Source::Ebpf,
        "pidfd" => Source::Pidfd,
        "poll" => Source::Poll,
        other => {
            errs.at(
                s.span(),
                format!(
                    "unknown source {other:?}: expected \"auto\", \"ebpf\", \"pidfd\" or \"poll\""
                ),
            );
            default
        }
    }
}

/// `IP:PORT`, or `"off"` for no metrics endpoint.
fn listen(
    errs: &mut Errs,
    raw: Option<Spanned<String>>,
    default: Option<SocketAddr>,
) -> Option<SocketAddr> {
    match raw {
        None => default,
        Some(l) if l.get_ref() == "off" => None,
        Some(l) => match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.at(
                    l.span(),
                    format!(
                        "invalid listen address {:?}: expected IP:PORT or \"off\"",
                        l.get_ref()
                    ),
                );
                default
            }
        },
    }
}

fn bad_identity(s: &str) -> String {
    format!("bad server label {s:?}: must match ^[a-z0-9_.-]{{1,48}}$")
}
