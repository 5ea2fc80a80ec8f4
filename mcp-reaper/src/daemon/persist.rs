//! The tree table kept across restarts.
//!
//! Owns: writing the daemon's trees (root, host, server label, and every
//! live member by the kernel's lineage) to a file in the state directory
//! (`trees.json`, replaced atomically), and reading it back at start,
//! keeping only what is provably the same process now (pid and start time
//! in /proc). Lineage the kernel kept is lost with a killed daemon's maps;
//! this record is how a member that was reparented to PID 1 while the
//! daemon was down is still known as a member of its tree.
//! Must never: let a record name a process by a bare PID (a member whose
//! PID now names another process is dropped), fail a start because the
//! file is missing, old or broken (it is ignored with a warning), or
//! signal anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{procs::identity::ProcKey, procs::procscan};

/// The file's name in the state directory.
pub const FILE: &str = "trees.json";

/// Bumped when the layout changes incompatibly (an old file is ignored).
const VERSION: u32 = 1;

/// One tree as saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTree {
    pub root: ProcKey,
    pub host: Option<ProcKey>,
    pub host_rule: String,
    pub server: String,
    /// Live members at the time of writing (the root included if alive).
    pub members: Vec<ProcKey>,
}

/// The whole table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedTable {
    pub version: u32,
    pub trees: Vec<SavedTree>,
}

impl SavedTable {
    pub fn new(mut trees: Vec<SavedTree>) -> Self {
        trees.sort_by_key(|t| t.root);
        for t in &mut trees {
            t.members.sort();
            t.members.dedup();
        }
        Self {
            version: VERSION,
            trees,
        }
    }
}

/// Where the table lives in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Writes `table` to `state_dir` (a temporary file renamed over the old
/// one, so a reader never sees half a table).
///
/// # Errors
/// When the directory or the file cannot be written.
pub fn save(state_dir: &Path, table: &SavedTable) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let text = serde_json::to_vec(table).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path(state_dir))
}

/// Reads the table a previous run wrote, if there is a usable one.
pub fn load(state_dir: &Path) -> Option<SavedTable> {
    let text = std::fs::read(path(state_dir)).ok()?;
    match serde_json::from_slice::<SavedTable>(&text) {
        Ok(t) if t.version == VERSION => Some(t),
        Ok(t) => {
            tracing::warn!(
                version = t.version,
                "ignoring a tree table of another version"
            );
            None
        }
        Err(e) => {
            tracing::warn!("ignoring an unreadable tree table: {e}");
            None
        }
    }
}

/// Keeps of `table` only what `alive` says is the same process now; a tree
/// with no live member left is dropped. `alive` is a parameter so that the
/// rule is tested without processes.
pub fn verify(table: SavedTable, alive: impl Fn(ProcKey) -> bool) -> Vec<SavedTree> {
    table
        .trees
        .into_iter()
        .filter_map(|mut t| {
            t.members.retain(|&m| alive(m));
            (!t.members.is_empty()).then_some(t)
        })
        .collect()
}

/// `verify` against /proc: a member is alive when its PID reads with its
/// start time.
pub fn verify_in_proc(table: SavedTable, proc_root: &Path) -> Vec<SavedTree> {
    verify(table, |k| procscan::read_key(proc_root, k.tgid) == Some(k))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(t: u32, s: u64) -> ProcKey {
        ProcKey::new(t, s)
    }

    fn tree(root: ProcKey, members: Vec<ProcKey>) -> SavedTree {
        SavedTree {
            root,
            host: Some(key(1, 1)),
            host_rule: "h".into(),
            server: "s".into(),
            members,
        }
    }

    #[test]
    fn a_saved_table_reads_back_and_keeps_only_the_same_processes() {
        let dir = tempfile::tempdir().unwrap();
        let table = SavedTable::new(vec![
            tree(
                key(10, 5),
                vec![key(12, 7), key(10, 5), key(11, 6), key(12, 7)],
            ),
            tree(key(20, 5), vec![key(21, 6)]),
        ]);
        save(dir.path(), &table).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, table);
        assert_eq!(
            back.trees[0].members,
            vec![key(10, 5), key(11, 6), key(12, 7)]
        );
        // 10 is gone, 11 lives, 12's PID names another process now; tree 20
        // has nothing left.
        let alive = |k: ProcKey| k == ProcKey::new(11, 6) || k == ProcKey::new(12, 99);
        let kept = verify(back, alive);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].root, key(10, 5));
        assert_eq!(kept[0].members, vec![key(11, 6)]);
    }

    #[test]
    fn a_missing_broken_or_foreign_table_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(load(dir.path()).is_none());
        std::fs::write(path(dir.path()), br#"{"version":999,"trees":[]}"#).unwrap();
        assert!(load(dir.path()).is_none());
    }
}
