//! The command line: `sensor check` and refusing to run without privileges.

use std::{path::Path, process::Command};

use sensor_tests::{Sensor, scratch_dir, sensor_bin};

#[test]
fn check_reports_usable_and_unavailable_hooks() {
    let out = Command::new(sensor_bin()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sensor check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |what: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("no `{what}` line in:\n{stdout}"))
            .to_string()
    };
    assert!(
        line("kernel:").contains(
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap()
                .trim()
        )
    );
    assert!(line("btf:").contains("/sys/kernel/btf/vmlinux"));
    assert!(line("tracepoint ").contains("usable"), "{stdout}");
    assert!(line("tp_btf").contains("usable"), "{stdout}");
    // What this kernel offers decides what check must say, not the kernel version.
    let has_kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let kprobe = line("kprobe");
    if has_kprobes {
        assert!(kprobe.contains("usable"), "{kprobe}");
    } else {
        assert!(
            kprobe.contains("unavailable:") && kprobe.contains("CONFIG_KPROBES"),
            "{kprobe}"
        );
    }
    assert!(
        line("fentry").contains("usable") || line("fentry").contains("unavailable: "),
        "{stdout}"
    );
    // The default hooks put nothing on the syscall path; the fallback is named with the rules
    // that are blind without it.
    assert!(
        stdout.contains("hooks in use (no syscall tracepoint):"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("syscalls:sys_"),
        "a syscall tracepoint among the hooks in use:\n{stdout}"
    );
    // `default` resolves to fentry, else kprobes, else neither, as the probes above found.
    let expected = if line("fentry").contains("usable:") {
        "fentry"
    } else if line("kprobe").contains("usable:") {
        "kprobe"
    } else {
        "tracepoint"
    };
    let set = line("hook set:");
    assert!(set.starts_with(&format!("hook set: {expected} (")), "{set}");
    let fallback = line("syscall fallback (--hooks syscall, off by default):");
    assert!(fallback.contains("usable"), "{fallback}");
    let blind = line("blind without it:");
    for rule in [
        "CRS-014: bpf",
        "CRS-016: ptrace",
        "CRS-017: perf_event_open, mount",
    ] {
        assert!(blind.contains(rule), "{blind}");
    }
    for hook in [
        "exec",
        "fork",
        "exit",
        "cgroup_mkdir",
        "cgroup_rmdir",
        "socket",
        "connect",
        "bind",
        "tcp_state",
        "signal",
    ] {
        let l = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(hook))
            .unwrap_or_else(|| panic!("hook {hook} not listed:\n{stdout}"));
        assert!(l.contains("usable"), "{l}");
    }
}

#[test]
fn run_as_an_unprivileged_user_fails_in_one_actionable_line() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(sensor_bin())
        .args(["run", "--json-out", "-"])
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("must run as root")
            && stderr.contains("uid 65534")
            && stderr.contains("sudo"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no events without privileges");
}

#[test]
fn bad_arguments_are_named() {
    let out = Command::new(sensor_bin())
        .args(["run", "--ring-mib", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}

#[test]
fn an_unknown_hook_set_is_refused_with_the_choices() {
    let out = Command::new(sensor_bin())
        .args(["run", "--hooks", "uprobe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'uprobe'")
            && stderr.contains("default, fentry, kprobe, tracepoint, syscall"),
        "{stderr}"
    );
}

/// `sensor run` with these extra arguments, expected to refuse to start: its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(sensor_bin())
        .args(["run", "--json-out", "-"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "started: {stderr}");
    assert!(out.stdout.is_empty(), "no events from a refused start");
    stderr
}

/// A start refused with an error that says all of `says`: the error.
fn refused_saying(args: &[&str], says: &[&str]) -> String {
    let stderr = refused(args);
    for part in says {
        assert!(stderr.contains(part), "`{part}` not in: {stderr}");
    }
    stderr
}

/// A start refused with an error that says all of `says` and a command in backquotes; the
/// command is run (the next start must get past this error).
fn refused_then_fixed(args: &[&str], says: &[&str]) {
    let stderr = refused_saying(args, says);
    let fix = stderr
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {stderr}"));
    let status = Command::new("sh").args(["-c", fix]).status().unwrap();
    assert!(status.success(), "{fix}");
}

#[test]
fn rules_and_state_that_others_can_write_are_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("untrusted");
    let (rules, state) = (dir.join("rules"), dir.join("state"));
    let spool = dir.join("spool").display().to_string();
    let socket = dir.join("s.sock").display().to_string();
    std::fs::create_dir(&rules).unwrap();
    let rule = rules.join("extra.yaml");
    std::fs::write(&rule, sensor_tests::shipped_rule("008-netcat-c2.yaml")).unwrap();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, PermissionsExt::from_mode(m));
    mode(&rules, 0o777).unwrap();
    let rules_arg = rules.display().to_string();
    let base = ["--spool-dir", &spool, "--grpc-socket", &socket];
    let with_rules: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--rules", &rules_arg])
        .collect();

    let loose = format!("--rules directory {rules_arg} is writable by others (mode 777)");
    refused_then_fixed(&with_rules, &[&loose, "chmod -R go-w"]);
    // A rule file another user owns is refused as well.
    let status = Command::new("chown")
        .arg("65534")
        .arg(&rule)
        .status()
        .unwrap();
    assert!(status.success());
    let says = ["file in the --rules directory", "owned by uid 65534"];
    refused_then_fixed(&with_rules, &says);

    std::fs::create_dir(&state).unwrap();
    mode(&state, 0o1777).unwrap();
    let state_arg = state.display().to_string();
    let with_state: Vec<&str> = with_rules
        .iter()
        .copied()
        .chain(["--state-dir", &state_arg])
        .collect();
    // A shared directory (sticky bit, as /tmp) gets no chmod advice: it must not be tightened.
    let says = [
        "state directory (--state-dir)",
        "mode 1777",
        "a directory of its own",
    ];
    let stderr = refused_saying(&with_state, &says);
    assert!(!stderr.contains("chmod"), "{stderr}");
    mode(&state, 0o1777 & !0o1000).unwrap();
    refused_then_fixed(&with_state, &["state directory (--state-dir)", "mode 777"]);
    // Fixed as the errors said, the same arguments start the sensor.
    let sensor = Sensor::start_with("untrusted_fixed", &with_state);
    assert!(sensor.stop().success());
    let _ = std::fs::remove_dir_all(dir);
}
