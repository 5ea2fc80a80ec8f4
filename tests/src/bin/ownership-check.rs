//! ownership-check: runs `mcp_reaper::ownership::stdio_owner` once, in a
//! process of its own, so a test can run the daemon's ownership code with
//! fewer capabilities (under `setpriv`) or fewer descriptors than itself.
//!
//! Usage: `ownership-check ROOT_PID [--probe PID] [--one-spare-fd]`.
//! - `--one-spare-fd`: first lowers RLIMIT_NOFILE so that exactly one more
//!   descriptor can be open at a time (the walk holds a directory open and
//!   then needs a second one for fdinfo: EMFILE, as in a daemon out of fds).
//! - `--probe PID`: before the check, lists /proc/PID/fd, reads the first
//!   entry's link and opens its fdinfo, and reports each errno (0 = ok), so
//!   the test can prove the reduced process really cannot read that table.
//!
//! Prints one JSON line: `{"probe": {...} | null, "ownership": {...}}`, with
//! the tree taken to be the root alone. Exits 2 on a usage error.

use std::{collections::HashSet, path::Path};

use mcp_reaper::{identity::ProcKey, ownership::stdio_owner};
use serde_json::json;

fn errno(r: std::io::Result<()>) -> i32 {
    r.err().map_or(0, |e| e.raw_os_error().unwrap_or(-1))
}

/// What reading `pid`'s fd table gives this process.
fn probe(pid: u32) -> serde_json::Value {
    let dir = format!("/proc/{pid}/fd");
    let mut first = None;
    let list = errno(std::fs::read_dir(&dir).and_then(|entries| {
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            first.get_or_insert(name);
        }
        Ok(())
    }));
    let Some(fd) = first else {
        return json!({"list": list, "fds": 0});
    };
    // Hold the fd directory open, as the walk does, while opening fdinfo.
    let held = std::fs::read_dir(&dir);
    let link = errno(std::fs::read_link(format!("{dir}/{fd}")).map(drop));
    let info = errno(std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).map(drop));
    drop(held);
    json!({"list": list, "link": link, "fdinfo": info})
}

/// Closes every inherited fd above stderr, then lowers the soft
/// RLIMIT_NOFILE to 4: one descriptor (fd 3) fits at a time, no more.
fn one_spare_fd() {
    for fd in 3..1024 {
        // SAFETY: closing fds this process never uses (inherited ones).
        unsafe { libc::close(fd) };
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            fail("getrlimit");
        }
        lim.rlim_cur = 4;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            fail("setrlimit");
        }
    }
}

fn fail(what: &str) -> ! {
    eprintln!(
        "ownership-check: {what}: {}",
        std::io::Error::last_os_error()
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(root) = args.first().and_then(|a| a.parse::<u32>().ok()) else {
        eprintln!("usage: ownership-check ROOT_PID [--probe PID] [--one-spare-fd]");
        std::process::exit(2);
    };
    let probe_pid = args
        .iter()
        .position(|a| a == "--probe")
        .and_then(|i| args.get(i + 1)?.parse::<u32>().ok());
    let proc_root = Path::new("/proc");
    let Some(start) = mcp_reaper::ownership::fdtable::start_ticks(proc_root, root) else {
        fail("root has no stat");
    };
    if args.iter().any(|a| a == "--one-spare-fd") {
        one_spare_fd();
    }
    let probed = probe_pid.map(probe);
    let tree: HashSet<u32> = [root].into();
    let own = stdio_owner(ProcKey::new(root, start), &tree, &[], proc_root);
    println!("{}", json!({"probe": probed, "ownership": own}));
}
