//! The synchronous audit writer: a file with size-based rotation, stdout,
//! or nothing.
//!
//! Owns: opening the target (mode 0600, append), rotating `path` ->
//! `path.1` -> ... -> `path.<keep>` before a record would overflow
//! `max_bytes`, and reopening after a failed write.
//! Must never: panic, split a record across files or lines, or run on the
//! async runtime (it blocks on the disk; `AuditSink` gives it a thread).

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::record::AuditRecord;

/// Where records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    /// Append to `path` (mode 0600); when a record would take it past
    /// `max_bytes` (0: never rotate), rename `path` -> `path.1` -> ... ->
    /// `path.<keep>` (the oldest is deleted) and start a new file.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    Stdout,
    Off,
}

/// A synchronous audit writer. Use it from a blocking context, or hand it to
/// an `AuditSink`.
#[derive(Debug)]
pub struct AuditLog {
    inner: Target,
}

#[derive(Debug)]
enum Target {
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
        file: Option<File>,
        size: u64,
    },
    Stdout,
    Off,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl AuditLog {
    /// Opens the target; a file that cannot be opened is an error now, at
    /// start-up, rather than a silent gap later.
    pub fn open(target: AuditTarget) -> io::Result<Self> {
        let inner = match target {
            AuditTarget::File {
                path,
                max_bytes,
                keep,
            } => {
                let (file, size) = open_append(&path)?;
                Target::File {
                    path,
                    max_bytes,
                    keep,
                    file: Some(file),
                    size,
                }
            }
            AuditTarget::Stdout => Target::Stdout,
            AuditTarget::Off => Target::Off,
        };
        Ok(Self { inner })
    }

    /// Writes one record as one line (rotating first when it would not
    /// fit). Never panics; a failed write is returned and the file is
    /// reopened on the next call.
    pub fn write(&mut self, rec: &AuditRecord) -> io::Result<()> {
        if matches!(self.inner, Target::Off) {
            return Ok(());
        }
        let line = rec.to_line()?;
        match &mut self.inner {
            Target::Off => Ok(()),
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            Target::File {
                path,
                max_bytes,
                keep,
                file,
                size,
            } => {
                let len = line.len() as u64;
                if *max_bytes > 0 && *size > 0 && size.saturating_add(len) > *max_bytes {
                    *file = None;
                    rotate(path, *keep)?;
                    *size = 0;
                }
                if file.is_none() {
                    let (f, s) = open_append(path)?;
                    *file = Some(f);
                    *size = s;
                }
                let Some(f) = file.as_mut() else {
                    return Err(io::Error::other("audit log file is not open"));
                };
                match f.write_all(&line) {
                    Ok(()) => {
                        *size = size.saturating_add(len);
                        Ok(())
                    }
                    Err(e) => {
                        *file = None;
                        Err(e)
                    }
                }
            }
        }
    }
}

/// `path.<keep>` is deleted, `path.<n>` becomes `path.<n+1>`, `path`
/// becomes `path.1` (with `keep` 0, `path` is deleted).
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    ignore_missing(std::fs::remove_file(numbered(path, keep)))?;
    for n in (1..keep).rev() {
        ignore_missing(std::fs::rename(numbered(path, n), numbered(path, n + 1)))?;
    }
    ignore_missing(std::fs::rename(path, numbered(path, 1)))
}
