//! `--help` as an operator reads it: defaults in the units they are
//! written in, no names from inside the program, and the options shared by
//! every command under a heading of their own. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Every help page: the top one and each command's.
const PAGES: [&[&str]; 11] = [
    &[],
    &["run"],
    &["scan"],
    &["doctor"],
    &["release"],
    &["config"],
    &["config", "check"],
    &["config", "default"],
    &["config", "presets"],
    &["completions"],
    &["manpage"],
];

fn help(command: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-reaper"))
        .args(command)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{command:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sizes_and_durations_are_shown_in_units() {
    let text = help(&["run"]);
    for shown in ["[default: 1MiB]", "[default: 64MiB]", "else 1s"] {
        assert!(text.contains(shown), "{shown} missing from\n{text}");
    }
    for raw in ["1048576", "67108864"] {
        assert!(!text.contains(raw), "{raw} in\n{text}");
    }
}

#[test]
fn no_names_from_inside_the_program() {
    for page in PAGES {
        let text = help(page);
        for internal in ["EbpfSource", "::", "aya", "mcp_reaper="] {
            assert!(
                !text.contains(internal),
                "{page:?}: {internal:?} in\n{text}"
            );
        }
    }
}

#[test]
fn global_options_are_listed_once_under_their_own_heading() {
    for page in PAGES {
        let text = help(page);
        let heading = text
            .find("Global options:")
            .unwrap_or_else(|| panic!("{page:?}: no global heading in\n{text}"));
        for global in ["--log-format", "--log-level"] {
            assert_eq!(
                text.matches(global).count(),
                1,
                "{page:?}: {global}\n{text}"
            );
            assert!(text.find(global).unwrap() > heading, "{page:?}: {global}");
        }
    }
    // The command's own options come first.
    let text = help(&["run"]);
    let heading = text.find("Global options:").unwrap();
    for own in ["--source", "--state-dir", "--ring-buffer-bytes"] {
        assert!(text.find(own).unwrap() < heading, "{own}\n{text}");
    }
}
