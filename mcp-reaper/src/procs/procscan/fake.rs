//! A fake /proc in a temporary directory, for the unit tests: processes
//! written file by file, so each test can plant exactly the odd contents
//! it is about.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, path::Path};

/// A fake /proc in a temporary directory.
pub(super) struct FakeProc {
    dir: tempfile::TempDir,
}

/// What a fixture process looks like; `..Fixture::default()` fills in a
/// plain sleeping process.
pub(super) struct Fixture<'a> {
    pub(super) pid: u32,
    pub(super) comm: &'a [u8],
    pub(super) state: char,
    pub(super) ppid: i64,
    pub(super) start: u64,
    pub(super) uid: u32,
    pub(super) rss_kib: u64,
    pub(super) cmdline: &'a [u8],
}

impl Default for Fixture<'_> {
    fn default() -> Self {
        Self {
            pid: 100,
            comm: b"node",
            state: 'S',
            ppid: 1,
            start: 5000,
            uid: 1000,
            rss_kib: 2048,
            cmdline: b"node\0server.js\0",
        }
    }
}

pub(super) fn stat_line(pid: u32, comm: &[u8], state: char, ppid: i64, start: u64) -> Vec<u8> {
    let mut line = format!("{pid} (").into_bytes();
    line.extend_from_slice(comm);
    line.extend_from_slice(
        format!(
            ") {state} {ppid} {pid} {pid} 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 {start} \
             3133440 385 18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 \
             7 8 8 9 0\n"
        )
        .as_bytes(),
    );
    line
}

pub(super) fn status_text(name: &[u8], tgid: u32, pid: u32, uid: u32, rss_kib: u64) -> Vec<u8> {
    let mut s = b"Name:\t".to_vec();
    s.extend_from_slice(name);
    s.extend_from_slice(
        format!(
            "\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{tgid}\nNgid:\t0\nPid:\t{pid}\n\
             PPid:\t1\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
             Gid:\t100\t100\t100\t100\nFDSize:\t64\nGroups:\t100 \n\
             VmRSS:\t    {rss_kib} kB\nThreads:\t1\n"
        )
        .as_bytes(),
    );
    s
}

impl FakeProc {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Non-process entries a real /proc has.
        fs::write(dir.path().join("meminfo"), "MemTotal: 1 kB\n").unwrap();
        fs::create_dir(dir.path().join("sys")).unwrap();
        Self { dir }
    }

    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn add(&self, f: Fixture<'_>) {
        self.write(
            f.pid,
            "stat",
            &stat_line(f.pid, f.comm, f.state, f.ppid, f.start),
        );
        self.write(
            f.pid,
            "status",
            &status_text(f.comm, f.pid, f.pid, f.uid, f.rss_kib),
        );
        self.write(f.pid, "cmdline", f.cmdline);
    }

    pub(super) fn write(&self, pid: u32, file: &str, contents: &[u8]) {
        let dir = self.root().join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file), contents).unwrap();
    }
}
