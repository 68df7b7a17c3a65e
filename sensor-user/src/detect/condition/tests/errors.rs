//! Rejected conditions: the message, and the line and column it points at.

use super::compile_err;

#[test]
fn messages_and_positions() {
    for (src, line, column, message) in [
        (
            "net.remote.address in_cidr (10.0.0.0/8, 10.1.0.0/8)",
            1,
            41,
            r#""10.1.0.0/8" has bits set past its /8 prefix; write the network (10.0.0.0/8)"#,
        ),
        (
            "net.remote.address in_cidr 10.0.0.0/8",
            1,
            28,
            r#"expected "(" after "in_cidr", found "10.0.0.0/8""#,
        ),
        (
            "proc.name nc",
            1,
            11,
            r#"expected an operator after field proc.name, found "nc""#,
        ),
        (
            "proc.name startwith /bin",
            1,
            11,
            r#"expected an operator after field proc.name, found "startwith" (did you mean "startswith"?)"#,
        ),
        (
            "proc.name",
            1,
            10,
            "expected an operator after field proc.name, found the end of the condition",
        ),
        (
            "spawned_process and shel_procs",
            1,
            21,
            r#"unknown macro "shel_procs" (did you mean "shell_procs"?)"#,
        ),
        (
            "nothing_like_it",
            1,
            1,
            r#"unknown macro "nothing_like_it""#,
        ),
        (
            "proc.name = \"abc",
            1,
            13,
            "unterminated string: no closing \" for the one opened here",
        ),
        (
            "(proc.name = nc",
            1,
            1,
            "unbalanced parenthesis: this \"(\" is never closed",
        ),
        (
            "proc.name = nc)",
            1,
            15,
            "unbalanced parenthesis: this \")\" has no matching \"(\"",
        ),
        (
            "(proc.name = nc))",
            1,
            17,
            "unbalanced parenthesis: this \")\" has no matching \"(\"",
        ),
        (
            "proc.name in (sh, bash",
            1,
            14,
            "unbalanced parenthesis: this \"(\" is never closed",
        ),
        (
            "(proc.name = nc proc.exe = x)",
            1,
            17,
            r#"expected "and", "or" or ")", found "proc.exe""#,
        ),
        (
            "proc.name in (sh bash)",
            1,
            18,
            r#"expected "," or ")", found "bash""#,
        ),
        (
            "proc.name in sh",
            1,
            14,
            r#"expected "(" after "in", found "sh""#,
        ),
        (
            "proc.name in (sh,)",
            1,
            18,
            r#"expected a value or a list name, found ")""#,
        ),
        (
            "proc.name in (shel_binaries)",
            1,
            15,
            r#"unknown list "shel_binaries" (did you mean "shell_binaries"?); quote it if you meant the value itself"#,
        ),
        (
            "proc.name in (cyclic_list)",
            1,
            15,
            "list cycle: cyclic_list -> cyclic_list",
        ),
        (
            "",
            1,
            1,
            "empty condition: expected a field, a macro, \"not\" or \"(\"",
        ),
        (
            "  \n   ",
            2,
            4,
            "empty condition: expected a field, a macro, \"not\" or \"(\"",
        ),
        (
            "and proc.name = nc",
            1,
            1,
            r#"expected a field, a macro, "not" or "(", found "and""#,
        ),
        (
            "proc.name = nc and",
            1,
            19,
            r#"expected a field, a macro, "not" or "(", found the end of the condition"#,
        ),
        (
            "proc.name = nc adn proc.exe = x",
            1,
            16,
            r#"expected "and", "or" or the end of the condition, found "adn" (did you mean "and"?)"#,
        ),
        (
            "proc.name =",
            1,
            12,
            r#"expected a value after "=", found the end of the condition"#,
        ),
        (
            "proc.name = and proc.exe = x",
            1,
            13,
            r#"expected a value after "=", found "and" (quote it to mean the word itself)"#,
        ),
        (
            "proc.name contains (x)",
            1,
            20,
            r#"expected a value after "contains", found "(""#,
        ),
        (
            "net.remote.port < high",
            1,
            19,
            r#"expected an integer after "<", found "high""#,
        ),
        (
            "proc.name ! = x",
            1,
            11,
            r#"unexpected "!": write "!=" to compare or "not" to negate"#,
        ),
        (
            "42 = proc.name",
            1,
            1,
            r#"expected a field, a macro, "not" or "(", found "42""#,
        ),
        // errors inside macros point at the use and say where in the macro
        (
            "spawned_process and uses_broken",
            1,
            21,
            r#"in macro "uses_broken" at line 2, column 3 of its condition: in macro "broken" at line 1, column 11 of its condition: expected an operator after field proc.name, found "nc""#,
        ),
        // cycles name the path, once, at the outermost use
        (
            "spawned_process and\n  loop_a",
            2,
            3,
            "macro cycle: loop_a -> loop_b -> loop_a",
        ),
        ("self_ref", 1, 1, "macro cycle: self_ref -> self_ref"),
    ] {
        let e = compile_err(src);
        assert_eq!(e.message, message, "message for {src:?}");
        assert_eq!(
            (e.line, e.column),
            (line, column),
            "position for {src:?}: {e}"
        );
    }
}

#[test]
fn a_multi_line_condition_reports_the_right_line() {
    let src = "spawned_process\n  and proc.name in (nc,\n    ncat)\n  and net.remote.port > high";
    let e = compile_err(src);
    assert_eq!((e.line, e.column), (4, 25));
    assert_eq!(
        e.to_string(),
        r#"line 4, column 25: expected an integer after ">", found "high""#
    );
}

#[test]
fn absurd_nesting_is_an_error_not_a_stack_overflow() {
    let src = format!("{}a.b = 1{}", "(".repeat(500), ")".repeat(500));
    assert!(compile_err(&src).message.contains("nested more than"));
    let src = format!("{}a.b = 1", "not ".repeat(500));
    assert!(compile_err(&src).message.contains("nested more than"));
}
