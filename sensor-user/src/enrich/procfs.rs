//! Reading a process's state from `/proc`, for processes that predate the sensor and as a
//! fallback when a kernel record was lost.

use std::fs;

use sensor_common::Namespaces;

use crate::{clock::ticks_to_boot_ns, types::BootNs};

/// What `/proc/PID` tells about a process.
#[derive(Clone, Debug, Default)]
pub struct ProcSnapshot {
    pub ppid: u32,
    pub ns_pid: u32,
    pub comm: String,
    pub exe: String,
    pub args: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub cap_effective: u64,
    pub seccomp_mode: u32,
    pub start: BootNs,
    pub namespaces: Namespaces,
    /// The cgroup2 path (`0::` line of `/proc/PID/cgroup`).
    pub cgroup_path: Option<String>,
}

/// Reads `/proc/<pid>`; `None` when the process is gone.
pub fn snapshot(pid: u32) -> Option<ProcSnapshot> {
    let dir = format!("/proc/{pid}");
    let text = fs::read_to_string(format!("{dir}/stat")).ok()?;
    let stat = Stat::parse(&text)?;
    let (comm, ppid, start) = (stat.comm.to_string(), stat.ppid, stat.start);
    let mut snap = ProcSnapshot {
        ppid,
        comm,
        start,
        ..Default::default()
    };

    if let Ok(status) = fs::read_to_string(format!("{dir}/status")) {
        parse_status(&status, &mut snap);
    }
    snap.exe = fs::read_link(format!("{dir}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if let Ok(cmdline) = fs::read(format!("{dir}/cmdline")) {
        snap.args = crate::decode::split_args(&cmdline);
    }
    snap.cgroup_path = fs::read_to_string(format!("{dir}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    snap.namespaces = namespaces(&dir);
    Some(snap)
}

/// When `pid` started, from `/proc/PID/stat` alone: enough to tell whether a process still
/// lives (a reused pid starts later), for one read instead of [`snapshot`]'s dozen.
pub fn start_time(pid: u32) -> Option<BootNs> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Stat::parse(&stat).map(|s| s.start)
}

/// The fields of `/proc/PID/stat` the agent uses.
struct Stat<'a> {
    comm: &'a str,
    ppid: u32,
    start: BootNs,
}

impl<'a> Stat<'a> {
    fn parse(stat: &'a str) -> Option<Stat<'a>> {
        // comm may hold spaces and parentheses: the fields start after the last ')'.
        let (head, rest) = stat.rsplit_once(')')?;
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let mut fields = rest.split_whitespace();
        // rest starts at field 3 (state): ppid is field 4, starttime field 22.
        let ppid = fields.nth(1)?.parse().ok()?;
        let start = ticks_to_boot_ns(fields.nth(17)?.parse().ok()?);
        Some(Stat { comm, ppid, start })
    }
}

fn parse_status(status: &str, snap: &mut ProcSnapshot) {
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let nums: Vec<&str> = value.split_whitespace().collect();
        let n = |i: usize| nums.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
        match key {
            "Uid" => (snap.uid, snap.euid) = (n(0), n(1)),
            "Gid" => (snap.gid, snap.egid) = (n(0), n(1)),
            "CapEff" => snap.cap_effective = u64::from_str_radix(value.trim(), 16).unwrap_or(0),
            "Seccomp" => snap.seccomp_mode = n(0),
            // The innermost pid namespace's view is the last number.
            "NSpid" => snap.ns_pid = nums.last().and_then(|v| v.parse().ok()).unwrap_or(0),
            _ => {}
        }
    }
}

/// The executable of an exec whose path is not telling by itself: relative (`./x`), through
/// `/proc/self/exe` (busybox, runc re-executing themselves) or a file descriptor (`/dev/fd/5`,
/// fexecve). Such paths are resolved through `/proc/PID/exe` while the process lives; otherwise
/// the path given to execve is kept.
pub fn resolve_exe(pid: u32, filename: String) -> String {
    let telling = filename.starts_with('/')
        && !filename.starts_with("/proc/")
        && !filename.starts_with("/dev/fd/");
    if telling {
        return filename;
    }
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or(filename)
}

/// For an executable path read from `/proc/PID/exe`: the file's own name when it has no link
/// (`/memfd:x (deleted)`, `/tmp/#123 (deleted)` for O_TMPFILE, a deleted file), else None.
pub fn unlinked_exe(exe_link: &str) -> Option<String> {
    let path = exe_link.strip_suffix(" (deleted)")?;
    Some(path.rsplit('/').next().unwrap_or(path).to_string())
}

/// The namespace inodes of a `/proc/PID` (or `/proc/self`) directory; 0 where unreadable.
pub fn namespaces(proc_dir: &str) -> Namespaces {
    let ns = |name: &str| ns_inode(&format!("{proc_dir}/ns/{name}"));
    Namespaces {
        mnt: ns("mnt"),
        pid: ns("pid"),
        net: ns("net"),
        uts: ns("uts"),
        ipc: ns("ipc"),
        user: ns("user"),
        cgroup: ns("cgroup"),
        _pad: 0,
    }
}

/// The inode in a namespace link like `net:[4026531840]`; 0 when unreadable.
pub fn ns_inode(link: &str) -> u32 {
    fs::read_link(link)
        .ok()
        .and_then(|t| {
            let t = t.to_string_lossy().into_owned();
            t.split_once('[')?.1.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// The local (non-loopback) addresses of `pid`'s network namespace, IPv4 in the first four
/// bytes: from `/proc/PID/net/fib_trie` (host routes marked LOCAL) and `/proc/PID/net/if_inet6`.
pub fn local_addresses(pid: u32) -> Vec<[u8; 16]> {
    let mut out = Vec::new();
    if let Ok(trie) = fs::read_to_string(format!("/proc/{pid}/net/fib_trie")) {
        let mut last: Option<std::net::Ipv4Addr> = None;
        for line in trie.lines() {
            if let Some(addr) = line.trim_start().strip_prefix("|-- ") {
                last = addr.trim().parse().ok();
            } else if line.contains("/32 host LOCAL")
                && let Some(a) = last.filter(|a| !a.is_loopback())
            {
                let mut buf = [0u8; 16];
                buf[..4].copy_from_slice(&a.octets());
                if !out.contains(&buf) {
                    out.push(buf);
                }
            }
        }
    }
    if let Ok(v6) = fs::read_to_string(format!("/proc/{pid}/net/if_inet6")) {
        for line in v6.lines() {
            let Some(hex) = line.split_whitespace().next() else {
                continue;
            };
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            if let Ok(buf) = <[u8; 16]>::try_from(bytes.as_slice())
                && !std::net::Ipv6Addr::from(buf).is_loopback()
                && !out.contains(&buf)
            {
                out.push(buf);
            }
        }
    }
    out
}

/// The host-side ifindexes of `pid`'s interfaces: each interface's `iflink` as the process's own
/// sysfs shows it (`/proc/PID/root/sys/class/net/*/iflink`); for a veth, its host-side peer.
pub fn peer_ifindexes(pid: u32) -> Vec<u32> {
    let dir = format!("/proc/{pid}/root/sys/class/net");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name() != "lo")
        .filter_map(|e| {
            let index: u32 = fs::read_to_string(e.path().join("ifindex"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let link: u32 = fs::read_to_string(e.path().join("iflink"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (link != index).then_some(link)
        })
        .collect()
}

/// Pids of every process in `/proc`.
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exe_without_a_link_is_named_by_its_file() {
        assert_eq!(
            unlinked_exe("/memfd:payload (deleted)").as_deref(),
            Some("memfd:payload")
        );
        assert_eq!(
            unlinked_exe("/tmp/#1234 (deleted)").as_deref(),
            Some("#1234")
        );
        assert_eq!(unlinked_exe("/usr/bin/sleep"), None);
    }

    #[test]
    fn snapshot_of_self() {
        let me = snapshot(std::process::id()).expect("own /proc entry");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(!me.comm.is_empty());
        assert!(me.exe.starts_with('/'), "{}", me.exe);
        assert!(!me.args.is_empty());
        assert_eq!(me.namespaces.net, ns_inode("/proc/self/ns/net"));
        assert_ne!(me.namespaces.net, 0);
        assert!(me.start.0 > 0);
        assert_eq!(start_time(std::process::id()), Some(me.start));
    }

    #[test]
    fn stat_fields_after_a_comm_with_spaces_and_parentheses() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 500 0 0";
        let stat = Stat::parse(line).unwrap();
        assert_eq!((stat.comm, stat.ppid), ("a (b) c", 7));
        assert_eq!(stat.start, ticks_to_boot_ns(500));
        assert!(Stat::parse("42 (x) S").is_none());
    }

    #[test]
    fn resolves_untelling_exe_paths() {
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap().display().to_string();
        assert_eq!(resolve_exe(me, "/proc/self/exe".into()), exe);
        assert_eq!(resolve_exe(me, "/dev/fd/5".into()), exe);
        assert_eq!(resolve_exe(me, "./relative".into()), exe);
        assert_eq!(resolve_exe(me, "/bin/sh".into()), "/bin/sh");
        assert_eq!(resolve_exe(4_194_400, "./gone".into()), "./gone");
    }

    #[test]
    fn local_addresses_of_self() {
        // This host's namespace has at least one non-loopback address, and never 127.0.0.1.
        let addrs = local_addresses(std::process::id());
        assert!(!addrs.is_empty());
        assert!(
            !addrs
                .iter()
                .any(|a| a[..4] == [127, 0, 0, 1] && a[4..] == [0; 12])
        );
    }

    #[test]
    fn status_fields() {
        let mut s = ProcSnapshot::default();
        parse_status(
            "Uid:\t1000\t0\t0\t0\nGid:\t5\t6\t6\t6\nCapEff:\t0000000000200000\nNSpid:\t812\t1\n",
            &mut s,
        );
        assert_eq!((s.uid, s.euid, s.gid, s.egid), (1000, 0, 5, 6));
        assert_eq!(s.cap_effective, 1 << 21);
        assert_eq!(s.ns_pid, 1);
    }
}
