//! BENCHMARKS.md: a short preamble, then one `## <title>` section per
//! benchmark. Writing a section replaces the one with the same title (or
//! appends it) and leaves every other section as it was.
use std::path::Path;

use anyhow::{Context as _, Result};

const PREAMBLE: &str = "# Benchmarks\n\n\
Written by `cargo xtask bench` (run as root). Each section belongs to one \
benchmark and is replaced when that benchmark runs again: \
`cargo xtask bench <name>` refreshes one, `cargo xtask bench` all of them.\n";

/// One benchmark's results, rendered as a `## <title>` block.
pub struct Section {
    pub title: String,
    /// Markdown below the heading.
    pub body: String,
    /// Targets this run missed, one short phrase each.
    pub missed_targets: Vec<String>,
}

impl Section {
    /// Closes `body` with the "Target missed" line when `missed` is not
    /// empty, the way every benchmark section ends.
    pub fn with_targets(title: &str, mut body: String, missed: Vec<String>) -> Self {
        if !missed.is_empty() {
            use std::fmt::Write as _;
            let _ = writeln!(body, "\n**Target missed:** {}.", missed.join("; "));
        }
        Self {
            title: title.to_owned(),
            body,
            missed_targets: missed,
        }
    }
}

pub fn write_section(path: &Path, section: &Section) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let updated = upsert_section(&existing, &section.title, &section.body);
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, updated).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}

pub fn upsert_section(existing: &str, title: &str, body: &str) -> String {
    crate::sections::upsert(existing, PREAMBLE, title, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_document_with_preamble() {
        let out = upsert_section("", "Spawn storm", "result 1\n");
        assert!(out.starts_with("# Benchmarks\n"));
        assert!(out.ends_with("\n## Spawn storm\n\nresult 1\n"));
    }

    #[test]
    fn replaces_only_its_own_section() {
        let doc = "# Benchmarks\n\nintro\n\n## Spawn storm\n\nold\n\n## Memory\n\nkeep me\n```\n## not a heading\n```\n";
        let out = upsert_section(doc, "Spawn storm", "new");
        assert_eq!(
            out,
            "# Benchmarks\n\nintro\n\n## Spawn storm\n\nnew\n\n## Memory\n\nkeep me\n```\n## not a heading\n```\n"
        );
        let again = upsert_section(&out, "Spawn storm", "new");
        assert_eq!(again, out, "rewriting the same result changes nothing");
    }

    #[test]
    fn appends_new_sections_after_existing_ones() {
        let doc = upsert_section("", "Spawn storm", "a");
        let out = upsert_section(&doc, "Reap latency", "b");
        let storm = out.find("## Spawn storm");
        let reap = out.find("## Reap latency");
        assert!(storm.is_some() && reap.is_some() && storm < reap);
    }

    #[test]
    fn writes_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("BENCHMARKS.md");
        let section = |body: &str| Section {
            title: "Spawn storm".to_owned(),
            body: body.to_owned(),
            missed_targets: Vec::new(),
        };
        write_section(&path, &section("one"))?;
        write_section(&path, &section("two"))?;
        let text = std::fs::read_to_string(&path)?;
        assert!(text.contains("\ntwo\n") && !text.contains("\none\n"));
        Ok(())
    }
}
