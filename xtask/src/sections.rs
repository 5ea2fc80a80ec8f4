//! Markdown documents made of `## <title>` sections that commands rewrite
//! one at a time (BENCHMARKS.md, RELIABILITY.md).
//!
//! Owns: splitting a document into sections and replacing one. Must never:
//! do I/O.

/// Splits a document into its preamble and `(title, block)` sections; a
/// `## ` line inside a fenced code block does not start a section.
fn split_sections(text: &str) -> (String, Vec<(String, String)>) {
    let mut preamble = String::new();
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let heading = (!in_fence)
            .then(|| line.strip_prefix("## "))
            .flatten()
            .map(|t| t.trim().to_owned());
        match (heading, sections.last_mut()) {
            (Some(title), _) => sections.push((title, line.to_owned())),
            (None, Some((_, block))) => block.push_str(line),
            (None, None) => preamble.push_str(line),
        }
    }
    (preamble, sections)
}

/// `existing` with its `## {title}` section replaced by (or, when it has
/// none, appended as) `body`; a document with no preamble gets `preamble`.
pub fn upsert(existing: &str, preamble_if_new: &str, title: &str, body: &str) -> String {
    let (preamble, mut sections) = split_sections(existing);
    let block = format!("## {title}\n\n{}\n", body.trim());
    match sections.iter_mut().find(|(t, _)| t == title) {
        Some((_, old)) => *old = block,
        None => sections.push((title.to_owned(), block)),
    }
    let preamble = if preamble.trim().is_empty() {
        preamble_if_new
    } else {
        preamble.as_str()
    };
    let mut out = preamble.trim_end().to_owned();
    out.push('\n');
    for (_, block) in &sections {
        out.push('\n');
        out.push_str(block.trim_end());
        out.push('\n');
    }
    out
}
