//! How conditions parse: precedence, grouping, lists and macros, shown through `Display`.

use super::{compile, compiled, defs};

#[test]
fn precedence_grouping_and_expansion() {
    for (src, want) in [
        // not > and > or
        (
            "a.b = 1 or c.d = 2 and e.f = 3",
            r#"(a.b = "1" or (c.d = "2" and e.f = "3"))"#,
        ),
        (
            "a.b = 1 and c.d = 2 or e.f = 3",
            r#"((a.b = "1" and c.d = "2") or e.f = "3")"#,
        ),
        (
            "not a.b = 1 and c.d = 2",
            r#"(not a.b = "1" and c.d = "2")"#,
        ),
        ("not not a.b exists", "not not a.b exists"),
        (
            "a.b in_cidr (10.0.0.0/8, 'fd00::/8', 192.168.1.7)",
            r#"a.b in_cidr ("10.0.0.0/8", "fd00::/8", "192.168.1.7/32")"#,
        ),
        (
            "a.b = 1 or c.d = 2 or e.f = 3",
            r#"(a.b = "1" or c.d = "2" or e.f = "3")"#,
        ),
        // parentheses override it, and redundant ones vanish
        (
            "(a.b = 1 or c.d = 2) and e.f = 3",
            r#"((a.b = "1" or c.d = "2") and e.f = "3")"#,
        ),
        (
            "not (a.b = 1 or c.d = 2)",
            r#"not (a.b = "1" or c.d = "2")"#,
        ),
        ("((a.b = 1))", r#"a.b = "1""#),
        // every operator, with and without blanks around signs
        ("proc.name=nc", r#"proc.name = "nc""#),
        ("a.b==1", r#"a.b = "1""#),
        ("a.b!=1", r#"a.b != "1""#),
        ("a.b<1 and a.b<=2", r#"(a.b < "1" and a.b <= "2")"#),
        ("a.b>-1 and a.b>=2", r#"(a.b > "-1" and a.b >= "2")"#),
        ("a.b contains x", r#"a.b contains "x""#),
        ("a.b icontains X", r#"a.b icontains "X""#),
        ("a.b startswith /usr/", r#"a.b startswith "/usr/""#),
        ("a.b endswith .sh", r#"a.b endswith ".sh""#),
        ("a.b glob '*/n?'", r#"a.b glob "*/n?""#),
        ("a.b exists", "a.b exists"),
        ("proc.aname[2] = sh", r#"proc.aname[2] = "sh""#),
        // values: bare words, both quotes, escapes, keywords quoted
        (
            r#"a.b in (nc, 'a b', "say \"hi\"", -e, "and")"#,
            r#"a.b in ("nc", "a b", "say \"hi\"", "-e", "and")"#,
        ),
        // lists: alone, mixed with values, nested, empty; a quoted name is a value
        (
            "a.b in (shell_binaries)",
            r#"a.b in ("sh", "bash", "dash")"#,
        ),
        (
            "a.b in (shell_binaries, zsh)",
            r#"a.b in ("sh", "bash", "dash", "zsh")"#,
        ),
        (
            "a.b in (suspicious_tools)",
            r#"a.b in ("nc", "ncat", "socat", "sh", "bash", "dash")"#,
        ),
        ("a.b in (empty_list)", "a.b in ()"),
        ("a.b in ()", "a.b in ()"),
        ("a.b in ('net_tools')", r#"a.b in ("net_tools")"#),
        // macros are kept by name
        (
            "spawned_process and not shell_procs",
            "(spawned_process and not shell_procs)",
        ),
        ("net_tool_in_container", "net_tool_in_container"),
        // a macro used twice is not a cycle
        (
            "shell_procs or (container and shell_procs)",
            "(shell_procs or (container and shell_procs))",
        ),
        // multi-line, as YAML block scalars deliver it
        (
            "spawned_process\n  and proc.name in (nc,\n    ncat)\n",
            r#"(spawned_process and proc.name in ("nc", "ncat"))"#,
        ),
    ] {
        let got = compiled(src).to_string();
        assert_eq!(got, want, "parsing {src:?}");
        // The printed form is itself a condition meaning the same thing.
        let again = compile(&got, &defs()).unwrap_or_else(|e| panic!("{got:?}: {e}"));
        assert_eq!(again.to_string(), want, "re-parsing {got:?}");
    }
}
