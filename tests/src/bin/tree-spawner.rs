//! tree-spawner: builds process-tree shapes for the integration tests.
//!
//! Usage: `tree-spawner SHAPE [ARG]`. It waits for one line on stdin (so the
//! test can mark it as a host before it forks), builds the shape, prints one
//! `ROLE PID` line per process it creates on stdout, then prints `done` and
//! waits on stdin again; when stdin closes it exits, leaving whatever the
//! shape leaves behind (the tests clean up).
//!
//! Shapes:
//! - `escape`: root -> middle -> grandchild; the middle exits (grandchild
//!   reparented); the grandchild calls setsid and double-forks, leaving
//!   `escapee` in its own session; `root` and `escapee` sleep.
//! - `burst N`: forks N children that exit at once.

use std::io::{BufRead, Write};

fn say(role: &str) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{role} {pid}");
    let _ = out.flush();
}

/// fork(); in the child runs `f` and exits with 0.
fn fork_then(f: impl FnOnce()) -> i32 {
    // SAFETY: the child only calls async-signal-safe functions and writes to
    // stdout before _exit; the test binary is single-threaded here.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        f();
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn sleep_forever() {
    loop {
        // SAFETY: pause just waits for a signal.
        unsafe { libc::pause() };
    }
}

fn escape() {
    fork_then(|| {
        say("root");
        fork_then(|| {
            say("middle");
            // SAFETY: getpid has no preconditions.
            let middle = unsafe { libc::getpid() };
            fork_then(|| {
                // Wait until the middle has exited so this is reparented.
                // (Compared with the middle's PID taken before the fork: the
                // middle may be gone before this line runs.)
                // SAFETY: getppid has no preconditions.
                while unsafe { libc::getppid() } == middle {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                say("grandchild");
                // SAFETY: setsid in a process that is not a group leader.
                unsafe { libc::setsid() };
                fork_then(|| {
                    say("second");
                    fork_then(|| {
                        say("escapee");
                        sleep_forever();
                    });
                });
            });
        });
        sleep_forever();
    });
    // Give the shape time to settle before reporting done.
    std::thread::sleep(std::time::Duration::from_millis(300));
}

fn burst(n: u32) {
    for _ in 0..n {
        let pid = fork_then(|| {});
        if pid > 0 {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let stdin = std::io::stdin();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    match args.get(1).map(String::as_str) {
        Some("escape") => escape(),
        Some("burst") => burst(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000)),
        _ => {
            eprintln!("usage: tree-spawner escape | burst N");
            std::process::exit(2);
        }
    }
    say("done");
    line.clear();
    while stdin
        .lock()
        .read_line(&mut line)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        line.clear();
    }
}
