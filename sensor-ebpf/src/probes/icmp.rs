//! ICMP of containers' sockets: what a container sends and receives on raw ICMP and ICMP
//! datagram ("ping") sockets, aggregated per (cgroup, peer, ICMP type, direction) with counts, a
//! payload size histogram and samples of the first and latest payloads, so user space can tell
//! the standard ping pattern from tunnelled data.
//!
//! Counted by the traffic programs ([`super::traffic`], cgroup skb on the cgroup2 root) from
//! the packet itself, on its way out of or into the socket's cgroup: no syscall hook, so no cost
//! on any other syscall, and io_uring's sends and receives are counted like the syscalls'. The
//! cgroup is the socket's (`bpf_skb_cgroup_id`). The kernel's own echo replies and forwarded
//! packets belong to no container socket; the TC classifiers ([`super::icmp_tc`]) see those.
//!
//! Counters are plain (not atomic) increments: one socket's packets are sequential; concurrent
//! senders to the same peer from one cgroup may lose a count.

use aya_ebpf::{maps::LruHashMap, programs::SkBuffContext};
use sensor_common::{
    ICMP_SAMPLE, ICMP_SAMPLE_GAP_NS, ICMP_SIZE_BUCKETS, IcmpKey, IcmpStats, icmp_bucket,
};

use crate::{
    clock,
    kernel::ReadResult,
    maps::{ICMP, ICMP_SCRATCH},
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
const ICMP_HEADER: usize = 8;
const SAMPLE_WORD: usize = 8;

/// Counts the ICMP message whose header starts at `icmp_at` of a cgroup skb packet (data starts
/// at the network header there) carrying `payload_len` bytes after that header.
#[inline(always)]
pub fn account_skb(
    ctx: &SkBuffContext,
    mut key: IcmpKey,
    icmp_at: usize,
    payload_len: u64,
) -> ReadResult<()> {
    key.icmp_type = ctx.load(icmp_at)?;
    let payload_at = icmp_at + ICMP_HEADER;
    record(&ICMP, &key, payload_len, |dst| {
        copy_sample(
            dst,
            payload_len,
            |at| ctx.load(payload_at + at).ok(),
            |at| ctx.load(payload_at + at).ok(),
        )
    })
}

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
///
/// The latest sample is taken when the size changed or [`ICMP_SAMPLE_GAP_NS`] after the last
/// one: copying every payload of a flood cost about half of each run (`cargo xtask bench
/// --hook-costs --workload icmp-container`), and a same-size payload 10 ms younger adds
/// nothing a detection reads.
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
        let now = clock::window_ns();
        if stats.last_payload_len != payload_len as u32
            || now.wrapping_sub(stats.last_sample_ns) >= ICMP_SAMPLE_GAP_NS
        {
            stats.last_sample_len = sample(&mut stats.last_sample);
            stats.last_sample_ns = now;
        }
        stats.last_payload_len = payload_len as u32;
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
    fresh.last_sample_ns = clock::window_ns();
    fresh.first_sample_len = sample(&mut fresh.first_sample);
    fresh.last_sample = fresh.first_sample;
    fresh.last_sample_len = fresh.first_sample_len;
    // By reference: a copy would put the 192-byte value on the 512-byte BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = map.insert(key, &*fresh, 0).map_err(|e| e as i64);
    inserted
}
