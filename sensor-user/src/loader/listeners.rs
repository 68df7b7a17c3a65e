//! Listening sockets opened before the sensor started. The kernel side learns which process
//! listens on a (cgroup, port) when the socket enters `LISTEN`, which a listener opened earlier
//! never does again: without this, the accepts of every server that outlived an agent restart
//! would go unreported. At start, the listening TCP sockets of every network namespace
//! (`/proc/PID/net/tcp`, `tcp6`, read once per namespace) are matched to the processes holding
//! them (`/proc/PID/fd`), and seeded into the kernel's listener map as the hook would have.

use std::{
    borrow::BorrowMut,
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use sensor_common::{COMM_LEN, Caller, ListenerKey};

/// TCP_LISTEN in `/proc/net/tcp`'s `st` column.
const LISTEN: &str = "0A";

/// A listening socket: its inode and local port.
#[derive(Debug, PartialEq, Eq)]
struct Listening {
    inode: u64,
    port: u16,
}

/// The listening sockets of a `/proc/net/tcp` or `tcp6` table.
fn listening(table: &str) -> Vec<Listening> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.get(3) != Some(&LISTEN) {
                return None;
            }
            let port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode = cols.get(9)?.parse().ok()?;
            Some(Listening { inode, port })
        })
        .collect()
}

/// The socket inodes among a process's fds.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// A process's cgroup2 id: the inode of its cgroup directory under `mount`.
fn cgroup_id(mount: &Path, pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(
        fs::metadata(mount.join(path.trim_start_matches('/')))
            .ok()?
            .ino(),
    )
}

fn comm(pid: u32) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    if let Ok(name) = fs::read_to_string(format!("/proc/{pid}/comm")) {
        let name = name.trim_end().as_bytes();
        let n = name.len().min(COMM_LEN - 1);
        out[..n].copy_from_slice(&name[..n]);
    }
    out
}

/// Seeds `map` with every listening TCP socket on the node and the process holding it;
/// returns how many were seeded. Entries the hook made meanwhile are kept.
pub fn seed<T: BorrowMut<MapData>>(
    map: &mut BpfHashMap<T, ListenerKey, Caller>,
    mount: &Path,
) -> Result<usize> {
    let mut seen_netns = HashSet::new();
    // socket inode -> port, over all namespaces.
    let mut ports: HashMap<u64, u16> = HashMap::new();
    let pids: Vec<u32> = fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for &pid in &pids {
        let Ok(netns) = fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino()) else {
            continue;
        };
        if !seen_netns.insert(netns) {
            continue;
        }
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                ports.extend(listening(&text).into_iter().map(|l| (l.inode, l.port)));
            }
        }
    }
    let mut seeded = 0;
    for &pid in &pids {
        let held: Vec<u16> = socket_inodes(pid)
            .into_iter()
            .filter_map(|ino| ports.get(&ino).copied())
            .collect();
        if held.is_empty() {
            continue;
        }
        let Some(cgroup_id) = cgroup_id(mount, pid) else {
            continue;
        };
        let caller = Caller {
            pid,
            tgid: pid,
            cgroup_id,
            comm: comm(pid),
        };
        for port in held {
            let key = ListenerKey {
                cgroup_id,
                port,
                _pad: [0; 6],
            };
            // A listener the hook saw since start knows its process better.
            if map.get(&key, 0).is_ok() {
                continue;
            }
            if map.insert(key, caller, 0).is_ok() {
                seeded += 1;
            }
        }
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_of_a_proc_net_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41234 1 0000000000000000 100 0 0 10 0\n   \
            1: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 41999 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            listening(table),
            [Listening {
                inode: 41234,
                port: 8080
            }]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            listening(v6),
            [Listening {
                inode: 555,
                port: 22
            }]
        );
    }
}
