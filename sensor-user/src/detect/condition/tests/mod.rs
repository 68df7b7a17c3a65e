//! Tests of the whole language through its public API, sharing one set of lists, macros and
//! one sample event so each table reads as "this condition, this outcome".

mod analysis;
mod errors;
mod eval;
mod parse;

use std::collections::HashMap;

use super::{Condition, ConditionError, Definitions, Value, compile};

/// Lists and macros in the shape the rule files will declare them.
fn defs() -> Definitions {
    let mut d = Definitions::new();
    d.add_list("shell_binaries", ["sh", "bash", "dash"])
        .add_list("net_tools", ["nc", "ncat", "socat"])
        .add_list("suspicious_tools", ["net_tools", "shell_binaries"])
        .add_list("empty_list", Vec::<String>::new())
        .add_list("cyclic_list", ["x", "cyclic_list"])
        .add_macro("spawned_process", "evt.kind = exec")
        .add_macro("container", "container.id exists")
        .add_macro("shell_procs", "proc.name in (shell_binaries)")
        .add_macro("net_tool_procs", "proc.name in (net_tools)")
        .add_macro(
            "net_tool_in_container",
            "spawned_process and container and net_tool_procs",
        )
        .add_macro("broken", "proc.name nc")
        .add_macro("uses_broken", "container and\n  broken")
        .add_macro("typo_field", "proc.nmae = nc")
        .add_macro("uses_typo_field", "container and typo_field")
        .add_macro("loop_a", "container and loop_b")
        .add_macro("loop_b", "not loop_a")
        .add_macro("self_ref", "self_ref or container");
    d
}

fn compiled(src: &str) -> Condition {
    compile(src, &defs()).unwrap_or_else(|e| panic!("{src:?} should compile: {e}"))
}

fn compile_err(src: &str) -> ConditionError {
    match compile(src, &defs()) {
        Ok(c) => panic!("{src:?} should not compile, got {c}"),
        Err(e) => e,
    }
}

/// An exec of `nc -l -p 4444` in a container, with a few extra fields to exercise types.
fn event() -> HashMap<String, Value> {
    [
        ("evt.kind", Value::from("exec")),
        ("container.id", "4f3c".repeat(16).into()),
        ("proc.name", "nc".into()),
        ("proc.exe", "/usr/bin/nc".into()),
        ("proc.args", vec!["-l", "-p", "4444"].into()),
        ("proc.cmdline", r#"echo "hi""#.into()),
        ("proc.title", "Hello World".into()),
        ("proc.pid_text", "123".into()),
        (
            "proc.cap_effective",
            vec!["CAP_SYS_ADMIN", "CAP_NET_RAW"].into(),
        ),
        ("proc.only_cap", vec!["CAP_BPF"].into()),
        ("net.remote.port", 4444.into()),
        ("net.remote.address", "10.1.2.3".into()),
        ("net.addresses", vec!["fd00::7", "192.168.1.7"].into()),
        ("ns.target_is_host", true.into()),
        ("fd.name", "/tmp/my file.txt".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn conditions_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Condition>();
}
