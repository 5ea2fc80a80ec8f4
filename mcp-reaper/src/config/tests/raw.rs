//! Tests of the raw read: syntax errors, wrong types and unknown keys, each
//! with its line and column.

use super::support::errors;

#[test]
fn syntax_error_has_line_and_column() {
    let e = errors("[daemon]\nsource = \"auto\"\npoll_interval = \n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:3:"), "{e:?}");
}

#[test]
fn several_syntax_errors_all_reported() {
    let e = errors("a = \nb = [\n[daemon\n");
    assert!(e.len() >= 2, "{e:?}");
    assert!(e[0].starts_with("t.toml:1:"), "{e:?}");
}

#[test]
fn wrong_type_has_line_and_column() {
    let e = errors("[policy]\ndry_run = \"yes\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:11: "), "{e:?}");
    assert!(e[0].contains("bool"), "{e:?}");
}

#[test]
fn unknown_key_reported() {
    let e = errors("[daemon]\nsorce = \"auto\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.toml:2:1: "), "{e:?}");
    assert!(e[0].contains("sorce"), "{e:?}");
}
