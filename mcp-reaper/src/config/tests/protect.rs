//! Tests of `[[protect]]`: users (by uid and by name, resolved from a
//! given passwd text), cgroup prefixes and patterns, and fields ANDed.

use super::support::{args, view};
use crate::config::{Config, ProcView, load, protect};

#[test]
fn protect_rules() {
    let passwd =
        "root:x:0:0:root:/root:/bin/bash\npostgres:x:114:120::/var/lib/postgresql:/bin/bash\n";
    struct P<'a>(&'a str);
    impl protect::Users for P<'_> {
        fn uid_of(&self, name: &str) -> Option<u32> {
            protect::uid_in_passwd(self.0, name)
        }
        fn gid_of(&self, _: &str) -> Option<u32> {
            None
        }
    }
    let text = r#"
[[protect]]
users = ["postgres"]
[[protect]]
cgroups = ["/system.slice/keep.service", 're:/user\.slice/user-\d+\.slice/app-keep-.*\.scope']
[[protect]]
users = [1000]
comm = 'vim|nvim'
[[protect]]
cmdline = '.* --keep-alive(?: .*)?'
"#;
    let c = load::parse(text, "t", &P(passwd)).unwrap();
    let a = args("mcp-server-fetch");
    let mk = |uid, cgroup, comm| ProcView {
        comm,
        exe: None,
        cmdline: &a,
        uid,
        cgroup,
    };
    assert!(c.is_protected(&mk(114, None, "x")));
    assert!(!c.is_protected(&mk(115, None, "x")));
    assert!(c.is_protected(&mk(0, Some("/system.slice/keep.service"), "x")));
    assert!(c.is_protected(&mk(0, Some("/system.slice/keep.service/sub"), "x")));
    assert!(!c.is_protected(&mk(0, Some("/system.slice/keep.service2"), "x")));
    assert!(c.is_protected(&mk(
        0,
        Some("/user.slice/user-1000.slice/app-keep-1.scope"),
        "x"
    )));
    assert!(c.is_protected(&mk(1000, None, "nvim")));
    assert!(
        !c.is_protected(&mk(1000, None, "node")),
        "fields of one rule are ANDed"
    );
    assert!(!c.is_protected(&mk(1001, None, "vim")));
    let b = args("node server.js --keep-alive");
    assert!(c.is_protected(&view("node", &b)));
    assert!(!Config::default().is_protected(&mk(0, None, "x")));
    let e = load::parse("[[protect]]\nusers = [\"nobody-here\"]\n", "t", &P(passwd)).unwrap_err();
    assert!(e.to_string().starts_with("t:2:10: unknown user"), "{e}");
}

/// `[control] read_group`: a group name resolved from the group file, or a
/// gid; anything else is an error at its line, and the section round-trips.
#[test]
fn control_read_group() {
    struct G;
    impl protect::Users for G {
        fn uid_of(&self, _: &str) -> Option<u32> {
            None
        }
        fn gid_of(&self, name: &str) -> Option<u32> {
            protect::uid_in_passwd("root:x:0:\nmcp-reaper:x:994:alice,bob\n", name)
        }
    }
    let parse = |text: &str| load::parse(text, "t", &G);
    let gid = |text: &str| {
        parse(text)
            .map(|c| c.control.read_group.map(|g| g.gid))
            .map_err(|e| e.to_string())
    };
    assert_eq!(gid(""), Ok(None));
    assert_eq!(gid("[control]\n"), Ok(None));
    assert_eq!(
        gid("[control]\nread_group = \"mcp-reaper\"\n"),
        Ok(Some(994))
    );
    assert_eq!(gid("[control]\nread_group = 4321\n"), Ok(Some(4321)));
    for (bad, says) in [
        (
            "read_group = \"nobody-here\"",
            "t:2:14: unknown group \"nobody-here\"",
        ),
        (
            "read_group = -1",
            "t:2:14: read_group -1 is not a valid gid",
        ),
        ("read_group = 4294967295", "not a valid gid"),
        (
            "read_group = true",
            "t:2:14: read_group must be a group name",
        ),
        ("read_groups = \"x\"", "t:2:1: unknown field"),
    ] {
        let e = gid(&format!("[control]\n{bad}\n")).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    // The section round-trips, by name or by gid, and is left out unset.
    for text in [
        "[control]\nread_group = \"mcp-reaper\"\n",
        "[control]\nread_group = 7\n",
    ] {
        let c = parse(text).unwrap();
        let again = parse(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }
    let plain = parse("").unwrap().to_toml().unwrap();
    assert!(!plain.contains("[control]"), "{plain}");
}
