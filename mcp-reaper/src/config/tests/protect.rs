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
