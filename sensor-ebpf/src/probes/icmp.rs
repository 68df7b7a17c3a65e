//! ICMP traffic of processes: what a process sends and receives on raw ICMP and ICMP datagram
//! ("ping") sockets, aggregated per (cgroup, peer, ICMP type, direction) with counts, a payload
//! size histogram and samples of the first and latest payloads, so user space can tell the
//! standard ping pattern from tunnelled data. Attribution comes from the sending process.
//!
//! Counters are plain (not atomic) increments: one socket's packets are sequential; concurrent
//! senders to the same peer from one cgroup may lose a count.

use aya_ebpf::{macros::tracepoint, maps::LruHashMap, programs::TracePointContext};
use sensor_common::{
    DIR_EGRESS, DIR_INGRESS, Endpoint, Hook, ICMP_SAMPLE, ICMP_SIZE_BUCKETS, IcmpKey, IcmpStats,
    icmp_bucket,
};

use super::{
    run_probe,
    syscall::{Pending, arg, save, syscall_pair},
};
use crate::{
    kernel::{self, ReadResult},
    maps::{ICMP, ICMP_SCRATCH, net_wanted},
};

const IPPROTO_ICMP: u16 = 1;
const IPPROTO_ICMPV6: u16 = 58;
const SOCK_RAW: u16 = 3;
const AF_INET: u16 = 2;
const ICMP_HEADER: u64 = 8;

/// An ICMP socket behind `fd`: (family, type).
#[inline(always)]
fn icmp_sock(fd: i64) -> ReadResult<Option<(*const u8, u16, u16)>> {
    let Some(sk) = kernel::fd_sock(fd)? else {
        return Ok(None);
    };
    let (family, sock_type, protocol) = kernel::sock_kind(sk)?;
    if protocol != IPPROTO_ICMP && protocol != IPPROTO_ICMPV6 {
        return Ok(None);
    }
    Ok(Some((sk, family, sock_type)))
}

fn read_user<T>(ptr: u64) -> ReadResult<T> {
    // SAFETY: the helper validates the user address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(ptr as *const T) }.map_err(|e| e as i64)
}

/// Copies up to [`ICMP_SAMPLE`] payload bytes from user memory; returns how many.
#[inline(always)]
fn sample(dst: &mut [u8; ICMP_SAMPLE], src: u64, len: u64) -> u32 {
    copy_sample(
        dst,
        len,
        |at| read_user::<[u8; SAMPLE_WORD]>(src.wrapping_add(at as u64)).ok(),
        |at| read_user::<u8>(src.wrapping_add(at as u64)).ok(),
    )
}

const SAMPLE_WORD: usize = 8;

/// Copies the first `min(len, ICMP_SAMPLE)` bytes of a payload through `word` (8 bytes at an
/// offset) and `byte` readers; returns how many bytes were copied.
///
/// Every read has a constant size at a constant offset: a read of a variable length, even
/// clamped just before the call, is refused by older verifiers (6.1) when the compiler passes
/// a copy whose bounds they do not track. Whole words are read (user space uses only the first
/// `n` bytes); a word that runs past the readable end is read byte by byte.
#[inline(always)]
pub fn copy_sample(
    dst: &mut [u8; ICMP_SAMPLE],
    len: u64,
    word: impl Fn(usize) -> Option<[u8; SAMPLE_WORD]>,
    byte: impl Fn(usize) -> Option<u8>,
) -> u32 {
    let n = if len > ICMP_SAMPLE as u64 {
        ICMP_SAMPLE
    } else {
        len as usize
    };
    for w in 0..ICMP_SAMPLE / SAMPLE_WORD {
        let at = w * SAMPLE_WORD;
        if at >= n {
            break;
        }
        if let Some(bytes) = word(at) {
            dst[at..at + SAMPLE_WORD].copy_from_slice(&bytes);
            continue;
        }
        for b in 0..SAMPLE_WORD {
            if at + b >= n {
                break;
            }
            match byte(at + b) {
                Some(v) => dst[at + b] = v,
                None => return (at + b) as u32,
            }
        }
    }
    n as u32
}

/// Adds one message to `map[key]`: count, size bucket, and a payload sample that `sample`
/// fills (returning the bytes copied). Shared by the socket-level and the interface-level maps.
#[inline(always)]
pub fn record<K>(
    map: &LruHashMap<K, IcmpStats>,
    key: &K,
    payload_len: u64,
    sample: impl Fn(&mut [u8; ICMP_SAMPLE]) -> u32,
) -> ReadResult<()> {
    let bucket = icmp_bucket(payload_len as u32) & (ICMP_SIZE_BUCKETS - 1);
    if let Some(stats) = map.get_ptr_mut(key) {
        // SAFETY: a live map value.
        let stats = unsafe { &mut *stats };
        stats.count += 1;
        stats.payload_bytes += payload_len;
        stats.size_buckets[bucket] += 1;
        stats.last_payload_len = payload_len as u32;
        stats.last_sample_len = sample(&mut stats.last_sample);
        return Ok(());
    }
    let Some(fresh) = ICMP_SCRATCH.get_ptr_mut(0) else {
        return Err(-12);
    };
    // SAFETY: per-CPU scratch slot.
    let fresh = unsafe { &mut *fresh };
    fresh.count = 1;
    fresh.payload_bytes = payload_len;
    fresh.size_buckets = [0; ICMP_SIZE_BUCKETS];
    fresh.size_buckets[bucket] = 1;
    fresh.last_payload_len = payload_len as u32;
    fresh._pad = 0;
    fresh.first_sample_len = sample(&mut fresh.first_sample);
    fresh.last_sample = fresh.first_sample;
    fresh.last_sample_len = fresh.first_sample_len;
    // By reference: a copy would put the 192-byte value on the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = map.insert(key, &*fresh, 0).map_err(|e| e as i64);
    inserted
}

/// Counts one ICMP message whose header is at user address `msg` (`len` bytes in all).
#[inline(always)]
fn account(cgroup_id: u64, peer: &Endpoint, direction: u8, msg: u64, len: u64) -> ReadResult<()> {
    if len < ICMP_HEADER {
        return Ok(());
    }
    let icmp_type: u8 = read_user(msg)?;
    let key = IcmpKey {
        cgroup_id,
        peer: peer.addr,
        family: peer.family,
        icmp_type,
        direction,
        _pad: 0,
    };
    let payload = msg + ICMP_HEADER;
    record(&ICMP, &key, len - ICMP_HEADER, |dst| {
        sample(dst, payload, len - ICMP_HEADER)
    })
}

/// A send on an ICMP socket: `(fd, buf, len, dest)`; `dest` 0 for a connected socket.
#[inline(always)]
fn on_send(fd: i64, buf: u64, len: u64, dest: u64, hook_ok: bool) -> ReadResult<()> {
    let cgroup_id = kernel::current_cgroup_id();
    if !hook_ok || !net_wanted(cgroup_id) {
        return Ok(());
    }
    let Some((sk, _, _)) = icmp_sock(fd)? else {
        return Ok(());
    };
    let mut peer = Endpoint::default();
    if dest != 0 {
        kernel::user_sockaddr(dest, &mut peer)?;
    } else {
        let mut local = Endpoint::default();
        kernel::sock_endpoints(sk, &mut local, &mut peer)?;
    }
    account(cgroup_id, &peer, DIR_EGRESS, buf, len)
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendto")]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::IcmpSend, {
        (|| {
            on_send(
                arg(&ctx, 0)? as i64,
                arg(&ctx, 1)?,
                arg(&ctx, 2)?,
                arg(&ctx, 4)?,
                true,
            )
        })()
    })
}

/// `struct msghdr`'s first iovec and name: (base, len, name).
#[inline(always)]
fn msghdr_first(msg: u64) -> ReadResult<(u64, u64, u64)> {
    let name: u64 = read_user(msg)?;
    let iov: u64 = read_user(msg + 16)?;
    let iovlen: u64 = read_user(msg + 24)?;
    if iovlen == 0 {
        return Ok((0, 0, name));
    }
    Ok((read_user(iov)?, read_user(iov + 8)?, name))
}

#[tracepoint(category = "syscalls", name = "sys_enter_sendmsg")]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::IcmpSend, {
        (|| {
            let fd = arg(&ctx, 0)? as i64;
            if icmp_sock(fd)?.is_none() {
                return Ok(());
            }
            let (base, len, name) = msghdr_first(arg(&ctx, 1)?)?;
            on_send(fd, base, len, name, base != 0)
        })()
    })
}

/// Receive entry: only ICMP sockets are remembered, with recvfrom's address pointer if any.
#[inline(always)]
fn enter_recv(ctx: &TracePointContext, name_arg: Option<u32>) -> ReadResult<()> {
    if !net_wanted(kernel::current_cgroup_id()) || icmp_sock(arg(ctx, 0)? as i64)?.is_none() {
        return Ok(());
    }
    let name = match name_arg {
        Some(n) => arg(ctx, n)?,
        None => 0,
    };
    save(ctx, Hook::IcmpRecv, name)
}

/// A received ICMP message of `ret` bytes at `buf`; raw IPv4 sockets deliver the IP header too.
#[inline(always)]
fn on_recv(fd: i64, buf: u64, ret: i64, name: u64) -> ReadResult<()> {
    if ret <= 0 || buf == 0 {
        return Ok(());
    }
    let Some((_, family, sock_type)) = icmp_sock(fd)? else {
        return Ok(());
    };
    let mut peer = Endpoint::default();
    let (mut msg, mut len) = (buf, ret as u64);
    if family == AF_INET && sock_type == SOCK_RAW {
        let vihl: u8 = read_user(buf)?;
        let ihl = ((vihl & 0xf) as u64) * 4;
        peer.family = AF_INET;
        peer.addr[..4].copy_from_slice(&read_user::<[u8; 4]>(buf + 12)?);
        msg += ihl;
        len = len.saturating_sub(ihl);
    } else {
        kernel::user_sockaddr(name, &mut peer)?;
    }
    account(kernel::current_cgroup_id(), &peer, DIR_INGRESS, msg, len)
}

#[inline(always)]
fn exit_recvfrom(p: &Pending, ret: i64) -> ReadResult<()> {
    on_recv(p.args[0] as i64, p.args[1], ret, p.extra)
}

#[inline(always)]
fn exit_recvmsg(p: &Pending, ret: i64) -> ReadResult<()> {
    let (base, _, name) = msghdr_first(p.args[1])?;
    on_recv(p.args[0] as i64, base, ret, name)
}

syscall_pair!(
    sys_enter_recvfrom,
    sys_exit_recvfrom,
    Hook::IcmpRecv,
    |c| enter_recv(c, Some(4)),
    exit_recvfrom
);
syscall_pair!(
    sys_enter_recvmsg,
    sys_exit_recvmsg,
    Hook::IcmpRecv,
    |c| enter_recv(c, None),
    exit_recvmsg
);
