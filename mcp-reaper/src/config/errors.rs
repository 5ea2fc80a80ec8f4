//! Configuration errors: what the caller sees (`ConfigErrors`, each error
//! with its line and column) and how the parser collects them (byte spans,
//! turned into lines and columns once the whole file has been read).
//!
//! Owns: the error types, their display (`FILE:LINE:COL: message`), the
//! echo rule (an error inside a syntax error's span is not reported twice)
//! and the sorting and de-duplication of the final list.
//! Must never: drop an error that is not an echo, or depend on any other
//! file of the configuration: every other file reports through this one.

use std::{fmt, ops::Range};

/// One configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based; `None` for errors about the whole file.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    pub message: String,
}

/// Every error found in one configuration source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(super) fn whole_file(source_name: &str, message: String) -> Self {
        ConfigErrors {
            source_name: source_name.to_owned(),
            errors: vec![ConfigError {
                line: None,
                column: None,
                message,
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match (e.line, e.column) {
                (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.source_name, e.message)?,
                _ => write!(f, "{}: {}", self.source_name, e.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Errors with byte spans, converted to lines and columns at the end.
#[derive(Default)]
pub(super) struct Errs {
    list: Vec<(Option<Range<usize>>, String)>,
    /// Spans of syntax errors: later errors there are their echoes.
    syntax: Vec<Range<usize>>,
}

impl Errs {
    /// An error at `span` of the text.
    pub(super) fn at(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.push(Some(span), msg.into());
    }

    /// An error at `span`, or about the whole file; dropped if it echoes a
    /// syntax error.
    pub(super) fn push(&mut self, span: Option<Range<usize>>, msg: String) {
        if let Some(s) = &span {
            let echo = self
                .syntax
                .iter()
                .any(|x| x.start == s.start || (x.start < s.end && s.start < x.end));
            if echo {
                return;
            }
        }
        self.list.push((span, msg));
    }

    /// A syntax error: always kept, and its span silences later echoes.
    pub(super) fn syntax(&mut self, span: Range<usize>, msg: String) {
        self.list.push((Some(span.clone()), msg));
        self.syntax.push(span);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn into_errors(self, text: &str, source_name: &str) -> ConfigErrors {
        let mut list = self.list;
        list.sort_by_key(|(span, _)| span.as_ref().map_or(usize::MAX, |s| s.start));
        list.dedup();
        let errors = list
            .into_iter()
            .map(|(span, message)| {
                let (line, column) = match span {
                    Some(s) => {
                        let (l, c) = line_col(text, s.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                ConfigError {
                    line,
                    column,
                    message,
                }
            })
            .collect();
        ConfigErrors {
            source_name: source_name.to_owned(),
            errors,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
