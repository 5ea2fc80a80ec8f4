//! Tests of each section's own checks, through the whole parse so that
//! lines and columns are checked too: patterns, durations, the presets
//! list, host names, labels and templates, reasons and actions.

use super::support::errors;
use crate::config::{Config, Source};

#[test]
fn bad_regex_has_line_and_column() {
    let e = errors("[[host]]\nname = \"x\"\ncomm = 'foo(bar'\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:3:8: invalid pattern"), "{e:?}");
}

#[test]
fn bad_duration_has_line_and_column() {
    let e = errors("[policy]\ngrace = \"2 seconds\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:9: invalid duration"), "{e:?}");
    let e = errors("[daemon]\npoll_interval = \"1ms\"\n");
    assert!(
        e[0].starts_with("t.toml:2:17: poll_interval must be at least 10ms"),
        "{e:?}"
    );
}

#[test]
fn unknown_preset_has_line_and_column() {
    let e = errors("presets = [\"openclaw\",\n  \"vim\"]\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:3: unknown preset \"vim\""),
        "{e:?}"
    );
}

#[test]
fn duplicate_host_name() {
    let e = errors(
        "presets = []\n[[host]]\nname = \"a\"\ncomm = 'a'\n[[host]]\nname = \"a\"\ncomm = 'b'\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:6:8: duplicate host name \"a\""),
        "{e:?}"
    );
    // Same name as an enabled preset.
    let e = errors("[[host]]\nname = \"cursor\"\ncomm = 'c'\n");
    assert!(
        e[0].starts_with("t.toml:2:8: duplicate host name \"cursor\""),
        "{e:?}"
    );
    // Fine once the preset is off.
    assert!(
        Config::from_toml_str(
            "presets = [\"vscode\"]\n[[host]]\nname = \"cursor\"\ncomm = 'c'\n",
            "t"
        )
        .is_ok()
    );
}

#[test]
fn bad_label_names() {
    let e = errors("[[host]]\nname = \"My Host\"\ncomm = 'x'\n");
    assert!(e[0].starts_with("t.toml:2:8: bad host name"), "{e:?}");
    let e = errors(&format!(
        "[[host]]\nname = \"{}\"\ncomm = 'x'\n",
        "a".repeat(33)
    ));
    assert!(e[0].starts_with("t.toml:2:8: bad host name"), "{e:?}");
    let e = errors(
        "[daemon]\nunknown_server_label = \"Other!\"\nserver_labels = [\"ok\", \"no way\"]\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:24: bad server label"), "{e:?}");
    assert!(e[1].starts_with("t.toml:3:24: bad server label"), "{e:?}");
    let e = errors("[[server]]\nname = \"Bad\"\ncomm = 'x'\n");
    assert!(e[0].starts_with("t.toml:2:8: server name"), "{e:?}");
    let e = errors("[[server]]\nname = \"{pkg}\"\ncmdline = 'x (?P<package>y)'\n");
    assert!(
        e[0].starts_with("t.toml:2:8: server name refers to {pkg}"),
        "{e:?}"
    );
}

#[test]
fn unknown_reason_and_action() {
    let e = errors("[policy.actions]\nidle = \"kill\"\nbored = \"observe\"\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("t.toml:2:8: unknown action \"kill\""),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.toml:3:1: unknown reason \"bored\""),
        "{e:?}"
    );
}

#[test]
fn daemon_source_takes_every_spelling_the_command_line_takes() {
    for (text, want) in [
        ("auto", Source::Auto),
        ("ebpf", Source::Ebpf),
        ("pidfd", Source::Pidfd),
        ("poll", Source::Poll),
    ] {
        let c = Config::from_toml_str(&format!("[daemon]\nsource = \"{text}\"\n"), "t").unwrap();
        assert_eq!(c.daemon.source, want, "{text}");
        // Written back the same way.
        assert!(
            c.to_toml()
                .unwrap()
                .contains(&format!("source = \"{text}\""))
        );
    }
    let e = errors("[daemon]\nsource = \"kernel\"\n");
    assert!(
        e[0].starts_with("t.toml:2:10: unknown source \"kernel\": expected \"auto\", \"ebpf\", \"pidfd\" or \"poll\""),
        "{e:?}"
    );
}
