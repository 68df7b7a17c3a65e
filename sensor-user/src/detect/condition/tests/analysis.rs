//! `kinds()`, `fields()` and `resolve()`.

use super::super::{Slot, Value};
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
fn resolve_accepts_known_fields() {
    compiled("net_tool_in_container and proc.exe startswith /tmp")
        .resolve(&KNOWN)
        .unwrap();
}

#[test]
fn resolve_names_the_unknown_field_and_where() {
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
        let e = compiled(src).resolve(&KNOWN).unwrap_err();
        assert_eq!(e.message, message, "{src}");
        assert_eq!((e.line, e.column), (line, column), "{src}");
    }
}

/// Answers only through resolved slots: reading a field by name fails the test.
struct BySlot;

impl super::super::Fields for BySlot {
    fn field(&self, name: &str) -> Option<Value> {
        panic!("{name} was looked up by name after the condition was resolved")
    }

    fn resolved(&self, slot: &Slot, name: &str) -> Option<Value> {
        Some(match slot {
            Slot::Field(i) => Value::Str(format!("{name}#{i}")),
            Slot::Keyed(i, key) => Value::Str(format!("{i}:{key}")),
        })
    }
}

#[test]
fn a_resolved_condition_reads_its_fields_through_their_slots() {
    const SCHEMA: &[&str] = &["evt.kind", "proc.name", "container.label[]"];
    let c = compiled("proc.name = 'proc.name#1' and container.label[team] = '2:team'");
    c.resolve(&SCHEMA).unwrap();
    assert!(c.eval(&BySlot));
    // A macro's body is resolved too, and a clone keeps the resolution.
    let c = compiled("spawned_process and evt.kind = 'evt.kind#0'");
    c.resolve(&SCHEMA).unwrap();
    assert!(!c.clone().eval(&BySlot));
}
