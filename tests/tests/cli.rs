//! The command line: `sensor check` and refusing to run without privileges.

use std::{path::Path, process::Command};

use sensor_tests::sensor_bin;

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
    assert!(line("raw_tracepoint").contains("usable"), "{stdout}");
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
        .args(["run", "--hooks", "kprobe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'kprobe'") && stderr.contains("default, syscall"),
        "{stderr}"
    );
}
