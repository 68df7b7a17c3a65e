//! Evaluation against the sample event: every operator, list fields, missing fields, logic.

use std::collections::HashMap;

use super::{Value, compiled, event};

fn check(table: &[(&str, bool)]) {
    let ev = event();
    for (src, want) in table {
        assert_eq!(compiled(src).eval(&ev), *want, "{src}");
    }
}

#[test]
fn scalar_operators() {
    check(&[
        ("proc.name = nc", true),
        ("proc.name = ncat", false),
        ("proc.name != ncat", true),
        ("proc.name != nc", false),
        ("net.remote.port = 4444", true),
        ("net.remote.port = '4444'", true),
        ("net.remote.port != 4444", false),
        ("net.remote.port = nc", false),
        ("net.remote.port > 1024", true),
        ("net.remote.port >= 4444", true),
        ("net.remote.port < 4444", false),
        ("net.remote.port <= 4444", true),
        ("net.remote.port < -1", false),
        // a numeric string field orders as a number; a non-numeric one never does
        ("proc.pid_text > 99", true),
        ("proc.name > 0", false),
        ("ns.target_is_host = true", true),
        ("ns.target_is_host = false", false),
        ("ns.target_is_host != false", true),
        ("ns.target_is_host = 1", false),
        ("proc.name in (sh, nc)", true),
        ("proc.name in (shell_binaries)", false),
        ("proc.name in (shell_binaries, nc)", true),
        ("proc.name in (suspicious_tools)", true),
        ("proc.name in (empty_list)", false),
        ("net.remote.port in (80, 443, 4444)", true),
        ("net.remote.port in ('4444')", true),
        ("ns.target_is_host in (true)", true),
        ("proc.exe contains /bin/", true),
        ("proc.exe contains /sbin/", false),
        ("proc.title icontains WORLD", true),
        ("proc.title contains WORLD", false),
        ("proc.exe startswith /usr/", true),
        ("proc.exe startswith /bin/", false),
        ("proc.exe endswith /nc", true),
        ("proc.exe endswith /ncat", false),
        ("proc.exe glob '/usr/*/n?'", true),
        ("proc.exe glob /usr/*", true),
        ("proc.exe glob '/bin/*'", false),
        ("net.remote.port startswith 44", true),
        ("proc.name exists", true),
        ("proc.pname exists", false),
    ]);
}

#[test]
fn address_blocks() {
    check(&[
        ("net.remote.address in_cidr (10.0.0.0/8)", true),
        ("net.remote.address in_cidr (10.1.2.3)", true),
        (
            "net.remote.address in_cidr ('172.16.0.0/12', fd00::/8)",
            false,
        ),
        ("net.remote.address in_cidr ()", false),
        ("net.addresses in_cidr (fd00::/8)", true),
        ("net.addresses in_cidr (192.168.1.0/24)", true),
        ("net.addresses in_cidr (10.0.0.0/8)", false),
        // text that is not an address, and a missing field, are in no block
        ("proc.name in_cidr (0.0.0.0/0)", false),
        ("net.remote.port in_cidr (0.0.0.0/0)", false),
        ("not proc.pname in_cidr (0.0.0.0/0)", true),
    ]);
}

#[test]
fn list_fields() {
    check(&[
        // contains: membership, not substring
        ("proc.cap_effective contains CAP_SYS_ADMIN", true),
        ("proc.cap_effective contains CAP_SYS", false),
        ("proc.cap_effective icontains cap_net_raw", true),
        // in: any element in the set
        ("proc.cap_effective in (CAP_BPF, CAP_NET_RAW)", true),
        ("proc.cap_effective in (CAP_BPF)", false),
        // = compares whole values
        ("proc.cap_effective = CAP_SYS_ADMIN", false),
        ("proc.cap_effective != CAP_SYS_ADMIN", true),
        ("proc.only_cap = CAP_BPF", true),
        // text operators: any element
        ("proc.args startswith -", true),
        ("proc.args glob '44*'", true),
        ("proc.args endswith x", false),
        ("proc.cap_effective > 1", false),
        ("proc.cap_effective exists", true),
    ]);
}

#[test]
fn missing_fields_are_false_and_their_negation_true() {
    check(&[
        ("proc.pname = bash", false),
        ("proc.pname != bash", false),
        ("proc.pname in (bash)", false),
        ("proc.pname contains a", false),
        ("net.local.port > 0", false),
        ("not proc.pname = bash", true),
        ("not proc.pname != bash", true),
        ("not proc.pname in (bash)", true),
        ("not proc.pname exists", true),
    ]);
}

#[test]
fn values_bare_and_quoted() {
    check(&[
        ("fd.name = '/tmp/my file.txt'", true),
        (r#"fd.name = "/tmp/my file.txt""#, true),
        ("fd.name startswith /tmp/my", true),
        ("fd.name = /tmp/my", false),
        ("proc.args contains -l", true),
        (r#"proc.cmdline = "echo \"hi\"""#, true),
        (r#"proc.cmdline = 'echo "hi"'"#, true),
        ("proc.cmdline contains '\"'", true),
    ]);
}

#[test]
fn logic_and_precedence() {
    check(&[
        ("proc.name = nc and net.remote.port = 4444", true),
        ("proc.name = nc and net.remote.port = 80", false),
        ("proc.name = sh or net.remote.port = 4444", true),
        ("proc.name = sh or net.remote.port = 80", false),
        // nc or (sh and bash); a left-to-right reading would give false
        (
            "proc.name = nc or proc.name = sh and proc.name = bash",
            true,
        ),
        (
            "(proc.name = nc or proc.name = sh) and proc.name = bash",
            false,
        ),
        // (not nc) and sh; `not` over the whole `and` would give true
        ("not proc.name = nc and proc.name = sh", false),
        ("not (proc.name = nc and proc.name = sh)", true),
        ("not not proc.name = nc", true),
    ]);
}

#[test]
fn macros() {
    check(&[
        ("spawned_process", true),
        ("spawned_process and shell_procs", false),
        ("spawned_process and not shell_procs", true),
        ("net_tool_in_container", true),
        ("net_tool_in_container and ns.target_is_host = false", false),
    ]);
}

#[test]
fn the_same_condition_on_other_events() {
    let c = compiled("net_tool_in_container and proc.args contains -l");
    let event = |pairs: &[(&str, Value)]| -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let listener = event(&[
        ("evt.kind", "exec".into()),
        ("container.id", "abc".into()),
        ("proc.name", "ncat".into()),
        ("proc.args", vec!["-l", "9000"].into()),
    ]);
    let on_host = event(&[
        ("evt.kind", "exec".into()),
        ("proc.name", "ncat".into()),
        ("proc.args", vec!["-l"].into()),
    ]);
    let client = event(&[
        ("evt.kind", "exec".into()),
        ("container.id", "abc".into()),
        ("proc.name", "socat".into()),
        ("proc.args", vec!["-", "TCP:10.0.0.1:80"].into()),
    ]);
    assert!(c.eval(&listener));
    assert!(!c.eval(&on_host));
    assert!(!c.eval(&client));
    assert!(!c.eval(&HashMap::new()));
}
