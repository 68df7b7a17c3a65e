//! `kinds()`, `fields()` and `check_fields()`.

use super::compiled;

#[test]
fn kinds_for_dispatch() {
    for (src, want) in [
        ("evt.kind = exec and proc.name = nc", Some(vec!["exec"])),
        ("proc.name = nc and evt.kind = exec", Some(vec!["exec"])),
        (
            "evt.kind in (fork, exec) and proc.name = nc",
            Some(vec!["exec", "fork"]),
        ),
        ("spawned_process and proc.name = nc", Some(vec!["exec"])),
        ("net_tool_in_container", Some(vec!["exec"])),
        ("proc.name = nc", None),
        ("evt.kind = exec or proc.name = nc", None),
        (
            "(evt.kind = exec and proc.name = nc) or evt.kind = socket",
            Some(vec!["exec", "socket"]),
        ),
        ("not evt.kind = exec", None),
        ("evt.kind != exec", None),
        ("evt.kind exists", None),
        ("evt.kind startswith container_", None),
        (
            "evt.kind in (exec, fork) and evt.kind = fork",
            Some(vec!["fork"]),
        ),
        // contradictory: no kind can match
        ("evt.kind = exec and evt.kind = fork", Some(vec![])),
    ] {
        let want = want.map(|k| k.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(compiled(src).kinds(), want, "{src}");
    }
}

#[test]
fn fields_include_macros_once_each() {
    let c = compiled(
        "net_tool_in_container and proc.name != x and not proc.pname exists and shell_procs",
    );
    assert_eq!(
        c.fields(),
        ["container.id", "evt.kind", "proc.name", "proc.pname"]
    );
}

const KNOWN: &[&str] = &["evt.kind", "container.id", "proc.name", "proc.exe"];

#[test]
fn check_fields_accepts_known_fields() {
    compiled("net_tool_in_container and proc.exe startswith /tmp")
        .check_fields(KNOWN)
        .unwrap();
}

#[test]
fn check_fields_names_the_unknown_field_and_where() {
    for (src, line, column, message) in [
        (
            "proc.name = nc and\n  proc.nmae = ncat",
            2,
            3,
            r#"unknown field "proc.nmae" (did you mean "proc.name"?)"#,
        ),
        (
            "proc.name = nc and net.remote.port = 1 and zzz.yyy = 2",
            1,
            20,
            r#"unknown field "net.remote.port""#,
        ),
        (
            "spawned_process and typo_field",
            1,
            21,
            r#"unknown field "proc.nmae" (did you mean "proc.name"?) in macro "typo_field" at line 1, column 1 of its condition"#,
        ),
        (
            "uses_typo_field",
            1,
            1,
            r#"unknown field "proc.nmae" (did you mean "proc.name"?) in macro "typo_field" at line 1, column 1 of its condition (reached through uses_typo_field -> typo_field)"#,
        ),
    ] {
        let e = compiled(src).check_fields(KNOWN).unwrap_err();
        assert_eq!(e.message, message, "{src}");
        assert_eq!((e.line, e.column), (line, column), "{src}");
    }
}
