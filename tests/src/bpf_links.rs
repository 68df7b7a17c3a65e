//! The kernel's own view of what a process attached: its programs (from `/proc/PID/fdinfo`) and
//! the perf-event links that attach them to tracepoints, read through `bpf(2)`
//! (`BPF_LINK_GET_NEXT_ID`, `BPF_LINK_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`; the tracepoint
//! name of a perf-event link is in `bpf_link_info` since Linux 6.6). The Debian bpftool lists
//! such links without their tracepoint, hence this reader. On older kernels, whose link info
//! does not say, a perf-event link is named by its program's name instead (the kernel keeps 15
//! characters of it; the sensor names its tracepoint programs after their tracepoints):
//! compare with [`names`].

use std::{collections::HashSet, io};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Bytes of a program name the kernel keeps (`BPF_OBJ_NAME_LEN` less the NUL).
const PROG_NAME_KEPT: usize = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_LINK_TYPE_RAW_TRACEPOINT: u32 = 1;
const BPF_PERF_EVENT_TRACEPOINT: u32 = 5;

/// `BPF_OBJ_GET_INFO_BY_FD` of a link or program into `info`.
fn link_info(fd: i32, info: &mut [u8; 128]) -> bool {
    let mut attr = [0u64; 8];
    attr[0] = fd as u64 | ((info.len() as u64) << 32); // bpf_fd, info_len
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).is_ok()
}

/// The program id and tracepoint of a raw tracepoint or tracepoint perf-event link.
///
/// `struct bpf_link_info`: u32 type, id, prog_id, then a union at offset 16: for raw
/// tracepoints `{ u64 tp_name; u32 tp_name_len }`; for perf events `{ u32 type; u32 pad;
/// tracepoint { u64 tp_name; u32 name_len } }`.
fn link_tracepoint(fd: i32) -> Option<(u32, String)> {
    let mut info = [0u8; 128];
    if !link_info(fd, &mut info) {
        return None;
    }
    let word =
        |info: &[u8; 128], at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
    let prog = word(&info, 8);
    let name_at = match word(&info, 0) {
        BPF_LINK_TYPE_RAW_TRACEPOINT => 16,
        BPF_LINK_TYPE_PERF_EVENT if word(&info, 16) == BPF_PERF_EVENT_TRACEPOINT => 24,
        // A kernel before 6.6 leaves the perf event's details out.
        BPF_LINK_TYPE_PERF_EVENT if word(&info, 16) == 0 => {
            return program_name(prog).map(|name| (prog, name));
        }
        _ => return None,
    };
    let mut name = [0u8; 128];
    let mut info = [0u8; 128];
    info[name_at..name_at + 8].copy_from_slice(&(name.as_mut_ptr() as u64).to_ne_bytes());
    info[name_at + 8..name_at + 12].copy_from_slice(&(name.len() as u32).to_ne_bytes());
    if !link_info(fd, &mut info) {
        return None;
    }
    let len = name.iter().position(|b| *b == 0).unwrap_or(0);
    Some((prog, String::from_utf8_lossy(&name[..len]).into_owned()))
}

/// The name of program `id` (`struct bpf_prog_info.name`, at offset 64).
fn program_name(id: u32) -> Option<String> {
    let mut attr = [0u64; 8];
    attr[0] = id as u64; // prog_id
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).ok()? as i32;
    let mut info = [0u8; 128];
    let ok = link_info(fd, &mut info);
    // SAFETY: `fd` is ours, returned by BPF_PROG_GET_FD_BY_ID.
    unsafe { libc::close(fd) };
    let name = &info[64..80];
    let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    ok.then(|| String::from_utf8_lossy(&name[..len]).into_owned())
}

/// Whether `listed` (from [`tracepoints_of`]) names the tracepoint `wanted`: equal, or the
/// kernel's 15-character cut of a program named after it.
pub fn names(listed: &str, wanted: &str) -> bool {
    listed == wanted || (listed.len() == PROG_NAME_KEPT && wanted.starts_with(listed))
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed, large enough `union bpf_attr`; the kernel reads its size.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 64usize) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Ids of the programs whose fds `pid` holds.
pub fn program_ids(pid: u32) -> HashSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// The tracepoints (`category`-less names, such as `sys_enter_ptrace`) that perf-event links
/// attach programs of `pid` to.
pub fn tracepoints_of(pid: u32) -> Vec<String> {
    let ours = program_ids(pid);
    let mut names = Vec::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u64; 8];
        attr[0] = id as u64; // start_id
        if bpf(BPF_LINK_GET_NEXT_ID, &mut attr).is_err() {
            break;
        }
        id = (attr[0] >> 32) as u32; // next_id
        let mut attr = [0u64; 8];
        attr[0] = id as u64; // link_id
        let Ok(fd) = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr) else {
            continue;
        };
        if let Some((prog, name)) = link_tracepoint(fd as i32)
            && ours.contains(&prog)
        {
            names.push(name);
        }
        // SAFETY: `fd` is ours, returned by BPF_LINK_GET_FD_BY_ID.
        unsafe { libc::close(fd as i32) };
    }
    names
}
