//! The `[[protect]]` rules, checked against a live process right before it
//! could be signalled or classified.
//!
//! Owns: reading what the rules match on (comm, exe, command line, uid, and
//! the cgroup when any rule names cgroups) for one process, by its full
//! identity, and saying whether it may be touched.
//! Must never: answer "not protected" for a live process whose identity
//! fields, or whose cgroup while a rule names cgroups, could not be read:
//! the check fails closed. A process that is simply gone is no concern of
//! this module (the reaper's pidfd check finds it gone or reused).

use std::path::Path;

use crate::{
    config::{Config, ProcView},
    procs::identity::ProcKey,
    procs::procscan::{self, ProcError, ProcInfo},
};

/// The refusal for a process a `[[protect]]` rule names.
pub const WHY_PROTECTED: &str = "protected by policy";
/// The refusal for a live process whose protect fields cannot be read.
pub const WHY_UNREADABLE: &str = "protect check failed: identity or cgroup unreadable";

/// What the protect check says about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    /// No rule names it: it may be touched.
    Free,
    /// A rule names it.
    Protected,
    /// Its fields could not be read: treated as protected.
    Unreadable(String),
    /// It is gone (or its PID now names another process).
    Gone,
}

impl Protection {
    /// Why the process must not be signalled, if it must not. `Gone` is no
    /// refusal: there is nothing to signal, and the pidfd check says so.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Free | Self::Gone => None,
            Self::Protected => Some(WHY_PROTECTED),
            Self::Unreadable(_) => Some(WHY_UNREADABLE),
        }
    }
}

/// A failed read: `Gone` only when the process really is (its stat no
/// longer reads with `key`'s start time); a live process is `Unreadable`.
fn from_error(proc_root: &Path, key: ProcKey, e: &ProcError) -> Protection {
    if e.is_vanished() && procscan::read_key(proc_root, key.tgid) != Some(key) {
        Protection::Gone
    } else {
        Protection::Unreadable(e.to_string())
    }
}

/// Checks `info` (already read) against the rules, reading its cgroup only
/// when some rule names cgroups.
pub fn check_info(config: &Config, proc_root: &Path, info: &ProcInfo) -> Protection {
    if config.protect.is_empty() {
        return Protection::Free;
    }
    let cgroup = if config.protects_by_cgroup() {
        match procscan::read_cgroup(proc_root, info.key) {
            Ok(Some(cg)) => Some(cg),
            Ok(None) => {
                return Protection::Unreadable(format!(
                    "pid {}: no v2 or name=systemd cgroup line",
                    info.key.tgid
                ));
            }
            Err(e) => return from_error(proc_root, info.key, &e),
        }
    } else {
        None
    };
    let view = ProcView {
        comm: &info.comm,
        exe: info.exe.as_deref(),
        cmdline: &info.cmdline,
        uid: info.uid,
        cgroup: cgroup.as_deref(),
    };
    if config.is_protected(&view) {
        Protection::Protected
    } else {
        Protection::Free
    }
}

/// Reads process `key` now and checks it against the rules.
pub fn check(config: &Config, proc_root: &Path, key: ProcKey) -> Protection {
    if config.protect.is_empty() {
        return Protection::Free;
    }
    match procscan::read_process(proc_root, key.tgid) {
        Ok(info) if info.key == key => check_info(config, proc_root, &info),
        Ok(_) => Protection::Gone,
        Err(e) => from_error(proc_root, key, &e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(protect: &str) -> Config {
        let toml = format!("presets = []\n{protect}");
        crate::config::Config::from_toml_str(&toml, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// A fake /proc entry: stat, status and cmdline; `cgroup` when given.
    fn fake(dir: &Path, pid: u32, start: u64, comm: &str, cgroup: Option<&str>) {
        let p = dir.join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        let stat = format!(
            "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194304 100 0 0 0 3 1 0 0 20 0 1 0 {start} \
             3133440 385 18446744073709551615 1 2 3 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 4 5 6 \
             7 8 8 9 0\n"
        );
        std::fs::write(p.join("stat"), stat).unwrap();
        std::fs::write(
            p.join("status"),
            format!(
                "Name:\t{comm}\nState:\tS (sleeping)\nTgid:\t{tgid}\nPid:\t{pid}\nPPid:\t1\n\
                 Uid:\t0\t0\t0\t0\nVmRSS:\t4 kB\nThreads:\t1\n",
                tgid = pid
            ),
        )
        .unwrap();
        std::fs::write(p.join("cmdline"), format!("{comm}\0")).unwrap();
        if let Some(cg) = cgroup {
            std::fs::write(p.join("cgroup"), cg).unwrap();
        }
    }

    #[test]
    fn cgroup_rules_read_the_cgroup_and_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake(root, 10, 5, "srv", Some("0::/keep.slice/app.scope\n"));
        fake(root, 11, 5, "srv", Some("0::/other.slice\n"));
        fake(root, 12, 5, "srv", None);
        fake(
            root,
            13,
            5,
            "srv",
            Some("9:name=systemd:/keep.slice/x\n4:memory:/a\n"),
        );
        fake(root, 14, 5, "srv", Some("4:memory:/a\n"));
        let by_cgroup = config("[[protect]]\ncgroups = [\"/keep.slice\"]\n");
        let cases = [
            (10, Protection::Protected),
            (11, Protection::Free),
            (13, Protection::Protected),
            (99, Protection::Gone),
        ];
        for (pid, want) in cases {
            assert_eq!(
                check(&by_cgroup, root, ProcKey::new(pid, 5)),
                want,
                "pid {pid}"
            );
        }
        // No cgroup file, or no line a rule can match: never "free".
        for pid in [12, 14] {
            let got = check(&by_cgroup, root, ProcKey::new(pid, 5));
            assert!(
                matches!(got, Protection::Unreadable(_)),
                "pid {pid}: {got:?}"
            );
            assert_eq!(got.refusal(), Some(WHY_UNREADABLE));
        }
        // Same PID, other start time: another process, so gone.
        assert_eq!(
            check(&by_cgroup, root, ProcKey::new(10, 6)),
            Protection::Gone
        );
        // Without cgroup rules the cgroup is never read.
        let by_comm = config("[[protect]]\ncomm = \"srv\"\n");
        assert_eq!(
            check(&by_comm, root, ProcKey::new(12, 5)),
            Protection::Protected
        );
        assert_eq!(
            check(&config(""), root, ProcKey::new(12, 5)),
            Protection::Free
        );
    }

    #[test]
    fn unreadable_identity_is_protected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake(root, 20, 5, "srv", Some("0::/x\n"));
        // A status file the kernel would never write.
        std::fs::write(root.join("20/status"), "garbage").unwrap();
        let c = config("[[protect]]\ncomm = \"other\"\n");
        let got = check(&c, root, ProcKey::new(20, 5));
        assert!(matches!(got, Protection::Unreadable(_)), "{got:?}");
    }

    #[test]
    fn cgroup_lines_parse_v2_first_then_name_systemd() {
        let cases = [
            ("0::/a/b\n", Some("/a/b")),
            ("12:name=systemd:/s\n0::/v2\n", Some("/v2")),
            ("12:name=systemd:/s\n3:cpu:/c\n", Some("/s")),
            ("3:cpu:/c\n", None),
            ("", None),
            ("0::relative\n", None),
            ("garbage\n0:\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(procscan::parse_cgroup(text).as_deref(), want, "{text:?}");
        }
    }
}
