//! Reading packet headers in TC and cgroup skb programs, which run for every packet of every
//! watched interface or container: in place where the packet's linear part holds the bytes (no
//! helper call), else copied by the load helper (`bpf_skb_load_bytes`).

use aya_ebpf::programs::sk_buff::SkBuff;

/// A `T` at `offset` of the packet (from the link-layer header in TC programs, from the network
/// header in cgroup skb programs).
#[inline(always)]
pub fn load<T: Copy>(skb: &SkBuff, offset: usize) -> Result<T, i64> {
    // SAFETY: reading the context's own fields.
    let (start, end) = unsafe { ((*skb.skb).data as usize, (*skb.skb).data_end as usize) };
    if start + offset + core::mem::size_of::<T>() <= end {
        // SAFETY: within [data, data_end), checked just above; packets are not aligned.
        return Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) });
    }
    skb.load(offset)
}
