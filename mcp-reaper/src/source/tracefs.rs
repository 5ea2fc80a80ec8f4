//! Reaching tracefs for the per-syscall tracepoints of the close tier.
//!
//! Owns: running a piece of load or attach work where tracefs is visible at
//! `/sys/kernel/tracing` (the machine's own mount when it has one, else a
//! tracefs mounted in a private mount namespace of one short-lived thread),
//! and reading the `syscalls:sys_enter_*` format files into the argument
//! offsets the kernel programs use.
//! Must never: change the machine's mounts (the private namespace is a
//! slave of the machine's and dies with its thread), or trust a format
//! file: a malformed one is an error, not an offset.

use std::path::Path;

use mcp_reaper_common::SyscallTpArgs;

/// Where aya looks for tracefs first, and where a private one is mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// The per-syscall tracepoints of the close tier: (program, event, the
/// arguments the program reads). dup2 is absent from the newer syscall
/// tables (aarch64, riscv); every other one must attach.
pub const CLOSE_TRACEPOINTS: [(&str, &str, &[&str]); 4] = [
    ("close_tp", "sys_enter_close", &["fd"]),
    (
        "close_range_tp",
        "sys_enter_close_range",
        &["fd", "max_fd", "flags"],
    ),
    ("dup2_tp", "sys_enter_dup2", &["oldfd", "newfd"]),
    ("dup3_tp", "sys_enter_dup3", &["oldfd", "newfd", "flags"]),
];

/// Whether `event` may be missing on this architecture.
pub fn optional(event: &str) -> bool {
    event == "sys_enter_dup2"
}

/// Runs `work` on a thread that sees tracefs at [`TRACEFS`] and returns its
/// result. When the machine has not mounted tracefs there, the thread
/// unshares its mount namespace, makes it a slave of the machine's (so
/// nothing propagates back) and mounts a tracefs of its own; both go away
/// when the thread ends. Needs CAP_SYS_ADMIN in that case.
pub fn with_tracefs<R: Send>(work: impl FnOnce(&Path) -> R + Send) -> Result<R, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let root = Path::new(TRACEFS);
                if !root.join("events").is_dir() {
                    mount_private_tracefs(root)?;
                }
                Ok(work(root))
            })
            .join()
            .map_err(|_| "the tracefs thread panicked".to_owned())?
    })
}

fn mount_private_tracefs(root: &Path) -> Result<(), String> {
    use rustix::{
        mount::{MountFlags, MountPropagationFlags, mount, mount_change},
        thread::{UnshareFlags, unshare_unsafe},
    };
    // SAFETY: NEWNS (and the FS it implies) gives this thread its own mount
    // namespace, root, cwd and umask; descriptors stay shared, so no thread
    // can see a descriptor table it does not expect.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS) }
        .map_err(|e| format!("tracefs is not mounted and unshare(CLONE_NEWNS) failed: {e}"))?;
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("making a private mount namespace a slave: {e}"))?;
    mount("tracefs", root, "tracefs", MountFlags::empty(), None)
        .map_err(|e| format!("mounting tracefs at {}: {e}", root.display()))
}

/// Reads the argument offsets of [`CLOSE_TRACEPOINTS`] under `root`.
pub fn syscall_tp_args(root: &Path) -> Result<SyscallTpArgs, String> {
    let mut args = SyscallTpArgs::NONE;
    for (_, event, fields) in CLOSE_TRACEPOINTS {
        let path = root.join("events/syscalls").join(event).join("format");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional(event) => continue,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let offsets = field_offsets(&text, fields).map_err(|e| format!("{event}: {e}"))?;
        let slot = match event {
            "sys_enter_close" => &mut args.close,
            "sys_enter_close_range" => &mut args.close_range,
            "sys_enter_dup2" => &mut args.dup2,
            _ => &mut args.dup3,
        };
        *slot = offsets;
    }
    args.valid = 1;
    Ok(args)
}

/// The largest offset accepted from a format file: syscall records are a
/// few dozen bytes, so anything beyond this is a parse error.
const MAX_OFFSET: u32 = 4096;

/// The byte offsets of `names` (at most three) in a tracepoint `format`
/// file; unused slots are `u32::MAX`. Each field must be 8 bytes wide, as
/// syscall arguments are.
pub fn field_offsets(format: &str, names: &[&str]) -> Result<[u32; 3], String> {
    if names.len() > 3 {
        return Err(format!("{} arguments asked for, at most 3", names.len()));
    }
    let mut out = [u32::MAX; 3];
    for (slot, name) in out.iter_mut().zip(names) {
        let (offset, size) = format
            .lines()
            .filter_map(parse_field)
            .find(|f| f.0 == *name)
            .map(|f| (f.1, f.2))
            .ok_or_else(|| format!("no field `{name}` in the format"))?;
        if size != 8 {
            return Err(format!("field `{name}` is {size} bytes, expected 8"));
        }
        if offset > MAX_OFFSET {
            return Err(format!(
                "field `{name}` at offset {offset}, beyond {MAX_OFFSET}"
            ));
        }
        *slot = offset;
    }
    Ok(out)
}

/// `field:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;` -> ("fd", 16, 8).
fn parse_field(line: &str) -> Option<(&str, u32, u32)> {
    let mut parts = line.trim().split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?;
    let name = decl.rsplit([' ', '*']).next()?.split('[').next()?;
    let (mut offset, mut size) = (None, None);
    for part in parts {
        if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse().ok();
        }
    }
    Some((name, offset?, size?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The format file of `syscalls:sys_enter_close_range` on Linux 6.18.
    const CLOSE_RANGE: &str = "name: sys_enter_close_range
ID: 1009
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned int max_fd;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned int flags;\toffset:32;\tsize:8;\tsigned:0;

print fmt: \"fd: 0x%08lx, max_fd: 0x%08lx, flags: 0x%08lx\", ((unsigned long)(REC->fd)), ((unsigned long)(REC->max_fd)), ((unsigned long)(REC->flags))
";

    #[test]
    fn reads_argument_offsets_by_name() {
        assert_eq!(
            field_offsets(CLOSE_RANGE, &["fd", "max_fd", "flags"]),
            Ok([16, 24, 32])
        );
        assert_eq!(
            field_offsets(CLOSE_RANGE, &["flags"]),
            Ok([32, u32::MAX, u32::MAX])
        );
    }

    #[test]
    fn a_missing_narrow_or_far_field_is_an_error_not_an_offset() {
        assert!(
            field_offsets(CLOSE_RANGE, &["oldfd"])
                .unwrap_err()
                .contains("no field `oldfd`")
        );
        // common_pid is 4 bytes: reading 8 would take the next field too.
        assert!(
            field_offsets(CLOSE_RANGE, &["common_pid"])
                .unwrap_err()
                .contains("4 bytes")
        );
        let far = CLOSE_RANGE.replace("offset:16;", "offset:99999;");
        assert!(field_offsets(&far, &["fd"]).unwrap_err().contains("beyond"));
        assert!(field_offsets(CLOSE_RANGE, &["a", "b", "c", "d"]).is_err());
    }

    #[test]
    fn hostile_or_truncated_format_files_never_panic() {
        for text in [
            "",
            "field:",
            "field:;",
            "field:int;offset:;size:8;",
            "field:int fd;offset:-1;size:8;",
            "field:int fd;offset:16",
            "\u{0}\u{ffff};;;field:x fd;offset:16;size:8",
            "field:char name[16];\toffset:16;\tsize:16;\tsigned:0;",
        ] {
            assert!(field_offsets(text, &["fd"]).is_err(), "{text:?}");
        }
        // Pointer and array declarations still name their field.
        assert_eq!(
            parse_field("field:char *p;offset:8;size:8;"),
            Some(("p", 8, 8))
        );
        assert_eq!(
            parse_field("field:char comm[16];offset:8;size:16;"),
            Some(("comm", 8, 16))
        );
    }

    #[test]
    fn this_machines_close_tracepoints_have_the_expected_layout() {
        if !crate::procs::caps::test_has_root("tracefs, perhaps in a private mount namespace") {
            return;
        }
        let args = with_tracefs(syscall_tp_args)
            .expect("tracefs reachable")
            .expect("format files parse");
        assert_eq!(args.valid, 1);
        assert_eq!(args.close, [16, u32::MAX, u32::MAX]);
        assert_eq!(args.close_range, [16, 24, 32]);
        assert_eq!(args.dup3, [16, 24, 32]);
        // The private mount, if one was needed, is not visible here.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let here = mounts.lines().any(|l| l.contains(" /sys/kernel/tracing "));
        let visible = Path::new(TRACEFS).join("events").is_dir();
        assert_eq!(
            here, visible,
            "tracefs visibility matches this thread's mounts"
        );
    }
}
