//! Tests of reading a whole file: the documented defaults, round trips
//! through `to_toml`, reading from disk, the fixtures, and every error of
//! a broken file reported at once without a panic.

use std::{path::Path, time::Duration};

use super::support::errors;
use crate::config::{
    Action, Config, DaemonConfig, PRESET_NAMES, PolicyConfig, Reason, Source, default_toml,
};

#[test]
fn default_config_parses_and_equals_default() {
    let c = Config::from_toml_str(default_toml(), "default.toml").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.presets.len(), PRESET_NAMES.len());
    assert!(c.builtin_servers);
    assert_eq!(c.daemon.source, Source::Auto);
    assert_eq!(c.daemon.poll_interval, Duration::from_secs(1));
    assert_eq!(c.daemon.listen, Some("127.0.0.1:9863".parse().unwrap()));
    assert_eq!(c.daemon.audit_log, None);
    assert_eq!(c.daemon.unknown_server_label, "other");
    assert_eq!(c.policy, PolicyConfig::default());
    assert_eq!(c.policy.actions.get(Reason::Idle), Action::Observe);
    assert_eq!(c.policy.actions.get(Reason::PeerReleased), Action::Enforce);
    assert_eq!(c.host_rules().len(), PRESET_NAMES.len());
    assert!(c.server_rules().len() >= 8);
    // Code defaults agree with the documented file.
    assert_eq!(c.daemon, DaemonConfig::default());
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(
        Config::from_toml_str("", "empty").unwrap(),
        Config::default()
    );
}

#[test]
fn default_round_trips() {
    let c = Config::default();
    let text = c.to_toml().unwrap();
    assert_eq!(Config::from_toml_str(&text, "rt").unwrap(), c, "{text}");
}

#[test]
fn custom_config_round_trips() {
    let text = r#"
presets = ["openclaw", "vscode"]
builtin_servers = false
[daemon]
source = "poll"
poll_interval = "1500ms"
listen = "off"
audit_log = "/var/log/mcp-reaper/audit.jsonl"
server_labels = ["server-everything", "mcp-server-fetch"]
[policy]
grace = "1h30m"
kill_after = "0s"
dry_run = true
[policy.actions]
idle = "enforce"
[[host]]
name = "my-agent"
comm = 'my-agent'
match = [{ cmdline = 'node \S*/agent\.js(?: .*)?' }]
session_env = ["MY_SESSION"]
relays = [{ cmdline = 'relay(?: .*)?' }]
lineage_fds = [3, 4]
[[server]]
name = "{package}"
cmdline = '(?:\S*/)?bunx (?P<package>\S*mcp\S*)(?: .*)?'
[[protect]]
users = [0, "root"]
cgroups = ["/system.slice/keep.service", 're:/user\.slice/.*']
comm = 'keep'
"#;
    let c = Config::from_toml_str(text, "custom").unwrap();
    assert_eq!(c.daemon.listen, None);
    assert_eq!(c.policy.grace, Duration::from_secs(5400));
    assert_eq!(c.policy.actions.get(Reason::Idle), Action::Enforce);
    assert_eq!(c.host_rules().len(), 3);
    assert_eq!(c.server_rules().len(), 1);
    let out = c.to_toml().unwrap();
    assert_eq!(Config::from_toml_str(&out, "rt").unwrap(), c, "{out}");
}

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[policy]\ngrace = \"x\"\n").unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:2:9: ", p.display())), "{e}");
    let e = Config::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read"), "{e}");
    std::fs::write(&p, b"a = \"\xff\"\n").unwrap();
    assert!(Config::load(&p).unwrap_err().to_string().contains("UTF-8"));
}

#[test]
fn fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    Config::load(&dir.join("full.toml")).unwrap();
    let e = Config::load(&dir.join("broken.toml")).unwrap_err();
    assert!(e.errors.len() >= 5, "{e}");
}

#[test]
fn all_errors_reported_at_once() {
    let text = "\
presets = [\"openclaw\", \"emacs\"]
builtin_servers = \"yes\"
[daemon]
source = \"kernel\"
poll_interval = 5
listen = \"localhost\"
audit_log = \"relative.log\"
[policy]
grace = \"soon\"
kill_after = \"2s\"
[[host]]
name = \"UPPER\"
comm = '('
lineage_fds = [1, \"x\"]
session_env = [\"1BAD\"]
[[host]]
name = \"nomatch\"
[[server]]
cmdline = '[z-a]'
[[protect]]
[[protect]]
users = [\"no-such-user-here\", -1]
cgroups = [\"relative\"]
";
    let e = errors(text);
    let expect = [
        "t.toml:1:24: unknown preset",
        "t.toml:2:19: invalid type",
        "t.toml:4:10: unknown source",
        "t.toml:5:17: invalid type",
        "t.toml:6:10: invalid listen address",
        "t.toml:7:13: audit_log must be an absolute path",
        "t.toml:9:9: invalid duration",
        "t.toml:12:8: bad host name",
        "t.toml:13:8: invalid pattern",
        "t.toml:14:16: bad lineage fd 1",
        "t.toml:14:19: invalid type",
        "t.toml:15:16: bad environment variable name",
        "host rule matches nothing",
        "server rule without `name`",
        "t.toml:19:11: invalid pattern",
        "empty protect rule",
        "t.toml:22:10: unknown user",
        "t.toml:22:31: bad uid -1",
        "t.toml:23:12: bad cgroup",
    ];
    for want in expect {
        assert!(
            e.iter().any(|l| l.contains(want)),
            "missing {want:?} in:\n{}",
            e.join("\n")
        );
    }
    assert_eq!(e.len(), expect.len(), "{}", e.join("\n"));
}

#[test]
fn invalid_input_is_rejected_and_the_same_input_repaired_parses() {
    // Each flawed text beside the smallest repair of it: the rejection is
    // for the flaw, not for anything else in the text.
    for (bad, good) in [
        ("\u{0}", ""),
        (
            "[[host]]\n[[host]]",
            "[[host]]\nname = \"a\"\ncomm = 'a'\n[[host]]\nname = \"b\"\ncomm = 'b'",
        ),
        ("host = 1", "[[host]]\nname = \"h\"\ncomm = 'h'"),
        ("[host]\nname = 1", "[[host]]\nname = \"h\"\ncomm = 'h'"),
        ("presets = \"all\"", "presets = [\"generic\"]"),
        (
            "[[server]]\nname = \"{\"",
            "[[server]]\nname = \"s\"\ncomm = 's'",
        ),
        (
            "[policy.actions]\nidle = [1]",
            "[policy.actions]\nidle = \"observe\"",
        ),
        ("[[protect]]\nusers = [[1]]", "[[protect]]\nusers = [1]"),
        (
            "[[host]]\nname = \"a\"\nmatch = [{}]",
            "[[host]]\nname = \"a\"\nmatch = [{ comm = 'a' }]",
        ),
        (
            "[[host]]\nrelays = 3",
            "[[host]]\nname = \"a\"\ncomm = 'a'\nrelays = [{ comm = 'r' }]",
        ),
        ("x = 1\nx = 2", "builtin_servers = true"),
        ("[daemon]\n[daemon]", "[daemon]"),
        ("\"\\uD800\" = 1", "presets = []"),
        (
            "[[host]]\nname = \"g\"\ngeneric = true\ncomm = 'x'",
            "[[host]]\nname = \"g\"\ngeneric = true",
        ),
    ] {
        assert!(Config::from_toml_str(bad, "t").is_err(), "accepted {bad:?}");
        if let Err(e) = Config::from_toml_str(good, "t") {
            panic!("rejected the repaired {good:?}: {e}");
        }
    }
    let huge = format!(
        "[[host]]\nname = \"a\"\ncomm = '{}'\n",
        "(a{1000}){1000}".repeat(10)
    );
    let e = errors(&huge);
    assert!(e[0].contains("invalid pattern"), "{e:?}");
    let small = "[[host]]\nname = \"a\"\ncomm = '(a{10}){10}'\n";
    assert!(Config::from_toml_str(small, "t").is_ok(), "{small}");
}
