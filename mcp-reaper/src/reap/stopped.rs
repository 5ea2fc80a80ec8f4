//! The record of processes a reap has stopped, kept on disk until the reap
//! ends, so that a daemon killed between SIGSTOP and SIGCONT never leaves a
//! tree frozen: its next start continues them before anything else.
//!
//! Owns: one file per reap under the state directory (`/run/mcp-reaper/
//! stopped` by default), a line per process (`tgid start_ticks`) written
//! before that process is sent SIGSTOP; removing it when the reap ends; and
//! at start, continuing every recorded process that is still the same
//! process (pidfd, then start time) and still stopped.
//! Must never: continue a process it did not record (a job an operator
//! stopped is none of its business), or one whose PID now names another
//! process; signal anything but SIGCONT.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use rustix::process::{Pid, PidfdFlags, Signal};

use crate::{procs::identity::ProcKey, procs::procscan};

/// The subdirectory of the state directory that holds the records.
pub const SUBDIR: &str = "stopped";

/// One reap's record of what it stopped.
#[derive(Debug)]
pub struct StopLog {
    path: PathBuf,
}

impl StopLog {
    /// The record for the reap of `root`, under `state_dir`.
    pub fn for_reap(state_dir: &Path, root: ProcKey) -> Self {
        Self {
            path: state_dir
                .join(SUBDIR)
                .join(format!("{}-{}", root.tgid, root.start_ticks)),
        }
    }

    /// Records `keys` as about to be stopped. Called before SIGSTOP is
    /// sent: a death after this write leaves a record of a process that may
    /// not be stopped (continuing it is harmless), never the other way
    /// round.
    ///
    /// # Errors
    /// When the record cannot be written: the caller must not stop them.
    pub fn record(&self, keys: &[ProcKey]) -> std::io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut text = String::new();
        for k in keys {
            text.push_str(&format!("{} {}\n", k.tgid, k.start_ticks));
        }
        f.write_all(text.as_bytes())
    }

    /// The reap ended: every process it stopped was continued or is gone.
    pub fn finish(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The keys in one record's text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<ProcKey> {
    text.lines()
        .filter_map(|l| {
            let (pid, start) = l.trim().split_once(' ')?;
            Some(ProcKey::new(pid.parse().ok()?, start.parse().ok()?))
        })
        .collect()
}

/// What start-up did with one recorded process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Still stopped: sent SIGCONT.
    Continued,
    /// Alive and running: nothing to do.
    Running,
    /// Gone, or its PID names another process now.
    Gone,
    /// SIGCONT failed.
    Failed,
}

/// Continues every process a previous run recorded as stopped and that is
/// still the same process and still stopped, then removes the records.
/// Returns what was done to each.
pub fn recover(state_dir: &Path, proc_root: &Path) -> Vec<(ProcKey, Recovered)> {
    let dir = state_dir.join(SUBDIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for key in parse(&text) {
            out.push((key, continue_if_stopped(key, proc_root)));
        }
        let _ = std::fs::remove_file(&path);
    }
    out
}

fn continue_if_stopped(key: ProcKey, proc_root: &Path) -> Recovered {
    let Some(pid) = i32::try_from(key.tgid).ok().and_then(Pid::from_raw) else {
        return Recovered::Gone;
    };
    let Ok(fd) = rustix::process::pidfd_open(pid, PidfdFlags::empty()) else {
        return Recovered::Gone;
    };
    // The pidfd is open: if /proc still shows the key, the pidfd is it.
    match procscan::read_process(proc_root, key.tgid) {
        Ok(p) if p.key == key && matches!(p.state, 'T' | 't') => {
            match rustix::process::pidfd_send_signal(&fd, Signal::CONT) {
                Ok(()) => Recovered::Continued,
                Err(_) => Recovered::Failed,
            }
        }
        Ok(p) if p.key == key => Recovered::Running,
        _ => Recovered::Gone,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn records_append_parse_and_vanish_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let log = StopLog::for_reap(dir.path(), ProcKey::new(10, 5));
        log.record(&[ProcKey::new(10, 5), ProcKey::new(11, 6)])
            .unwrap();
        log.record(&[]).unwrap();
        log.record(&[ProcKey::new(12, 7)]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SUBDIR).join("10-5")).unwrap();
        assert_eq!(
            parse(&text),
            vec![
                ProcKey::new(10, 5),
                ProcKey::new(11, 6),
                ProcKey::new(12, 7)
            ]
        );
        log.finish();
        assert!(!dir.path().join(SUBDIR).join("10-5").exists());
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(
            parse("1 2\ngarbage\n3\n4 x\n-1 2\n5 6 7\n 8 9 \n"),
            vec![ProcKey::new(1, 2), ProcKey::new(8, 9)]
        );
    }
}
