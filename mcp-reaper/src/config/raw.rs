//! The file as written: the top-level shape of the document and how it is
//! read so that every syntax and type error is found in one pass.
//!
//! Owns: the top-level keys (`RawConfig`; each section's keys belong to its
//! own file) and the prune-and-retry deserialization. The text is parsed
//! once with toml's recoverable parser (all syntax errors). The document is
//! then deserialized with serde; on a type error (or unknown key) the
//! offending value or key is pruned from the document by its span and
//! deserialization is retried, so each bad field is reported once and the
//! rest is still checked. Semantic checks (patterns, durations, names,
//! presets, reasons) run afterwards on the `Spanned` fields, in the
//! section files.
//! Must never: stop at the first error when more can be found, judge a
//! value beyond its type, or panic.

use std::ops::Range;

use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::{
    control::RawControl, daemon::RawDaemon, errors::Errs, host::RawHost, policy::RawPolicy,
    protect::RawProtect, server::RawServer,
};

type S<T> = Spanned<T>;

/// Deserialization attempts before giving up pruning (each finds one error).
const MAX_TYPE_ERRORS: usize = 200;

/// The whole document as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) presets: Option<S<Vec<S<String>>>>,
    pub(super) builtin_servers: Option<bool>,
    pub(super) daemon: Option<RawDaemon>,
    pub(super) policy: Option<RawPolicy>,
    pub(super) host: Option<Vec<S<RawHost>>>,
    pub(super) server: Option<Vec<S<RawServer>>>,
    pub(super) protect: Option<Vec<S<RawProtect>>>,
    pub(super) control: Option<RawControl>,
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer != &(0..0)
}

/// Removes the deepest key or array element whose span holds `span`.
fn prune_value(value: &mut DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(t) => prune_table(t, span),
        DeValue::Array(a) => {
            let mut victim = None;
            for (i, item) in a.iter_mut().enumerate() {
                if prune_value(item.get_mut(), span) {
                    return true;
                }
                if contains(&item.span(), span) {
                    victim = Some(i);
                    break;
                }
            }
            let Some(victim) = victim else { return false };
            let kept: Vec<_> = a
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(_, v)| v.clone())
                .collect();
            *a = kept.into_iter().collect();
            true
        }
        _ => false,
    }
}

fn prune_table(t: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    let mut victim = None;
    for (k, v) in t.iter_mut() {
        if contains(&k.span(), span) {
            victim = Some(k.clone());
            break;
        }
        if prune_value(v.get_mut(), span) {
            return true;
        }
        if contains(&v.span(), span) {
            victim = Some(k.clone());
            break;
        }
    }
    match victim {
        Some(k) => t.remove(&k).is_some(),
        None => false,
    }
}

/// Deserializes, pruning what fails, until the document deserializes.
pub(super) fn deserialize_all(text: &str, errs: &mut Errs) -> RawConfig {
    let (root, syntax) = DeTable::parse_recoverable(text);
    for e in syntax {
        let span = e.span().unwrap_or(0..0);
        errs.syntax(span, e.message().to_owned());
    }
    let span = root.span();
    let mut doc = Spanned::new(span, DeValue::Table(root.into_inner()));
    for _ in 0..MAX_TYPE_ERRORS {
        match RawConfig::deserialize(ValueDeserializer::from(doc.clone())) {
            Ok(raw) => return raw,
            Err(e) => {
                let span = e.span();
                errs.push(span.clone(), e.message().to_owned());
                match span {
                    Some(s) if prune_value(doc.get_mut(), &s) => {}
                    _ => return RawConfig::default(),
                }
            }
        }
    }
    RawConfig::default()
}
