//! Traffic volume: bytes and packets per (cgroup, peer, peer port, protocol) each way, summed
//! in a per-CPU LRU map by cgroup skb programs on the cgroups holding containers. User space
//! reads the cumulative counters periodically and reports the deltas: no record per packet.
//! UDP and other protocols are counted per packet; TCP from each connection's own counters
//! ([`super::tcp_volume`]), so a TCP packet leaves after a few loads. The same programs count
//! ICMP messages with payload samples ([`super::icmp`]).

use aya_ebpf::{helpers::generated, macros::cgroup_skb, programs::SkBuffContext};
use sensor_common::{
    DIR_EGRESS, DIR_INGRESS, FlowKey, FlowStats, Hook, HookError, IcmpKey, service_ports, tcp_ports,
};

use super::{
    icmp::{self, IPPROTO_ICMP, IPPROTO_ICMPV6},
    packet::load,
    tcp_volume,
};
use crate::maps::{FLOWS, count_error, net_wanted};

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[cgroup_skb]
pub fn traffic_egress(ctx: SkBuffContext) -> i32 {
    if let Err(ret) = account(&ctx, DIR_EGRESS) {
        count_error(Hook::Traffic, HookError::from_ret(ret));
    }
    1 // never interfere with the packet
}

#[cgroup_skb]
pub fn traffic_ingress(ctx: SkBuffContext) -> i32 {
    if let Err(ret) = account(&ctx, DIR_INGRESS) {
        count_error(Hook::Traffic, HookError::from_ret(ret));
    }
    1
}

#[inline(always)]
fn account(ctx: &SkBuffContext, direction: u8) -> Result<(), i64> {
    // A __be16 held in a u32 field.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16) as u32;
    // Data starts at the network header in cgroup skb programs.
    let (v4, protocol) = if ethertype == ETH_P_IP {
        (true, load::<u8>(&ctx.skb, 9)?)
    } else if ethertype == ETH_P_IPV6 {
        (false, load::<u8>(&ctx.skb, 6)?)
    } else {
        return Ok(());
    };
    if protocol == IPPROTO_TCP {
        // Counted from the connection's own counters: a TCP packet leaves here, an incoming
        // one after a look at its header.
        if direction == DIR_EGRESS {
            return Ok(());
        }
        let l4 = if v4 {
            ((ipv4_vihl(ctx)? & 0xf) as usize) * 4
        } else {
            40
        };
        return tcp_volume::sample_ingress(ctx, l4 & 0x3c, |ctx, serves| {
            // SAFETY: the helper takes the program's own skb.
            let cgroup_id = unsafe { generated::bpf_skb_cgroup_id(ctx.skb.skb) };
            flow_key(ctx, cgroup_id, direction, v4, protocol, serves).map(|(key, _)| key)
        });
    }
    // SAFETY: the helper takes the program's own skb.
    let cgroup_id = unsafe { generated::bpf_skb_cgroup_id(ctx.skb.skb) };
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    let (key, l4) = flow_key(ctx, cgroup_id, direction, v4, protocol, false)?;
    if key.protocol == if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 } {
        count_icmp(ctx, &key, direction, l4)?;
    }
    // A GSO packet stands for several on the wire.
    // SAFETY: reading the context's own field.
    let segs = unsafe { (*ctx.skb.skb).gso_segs }.max(1) as u64;
    add_flow(&key, &FlowStats::one_way(direction, ctx.len() as u64, segs));
    Ok(())
}

/// The flow of a packet of `cgroup_id` (IPv4 when `v4`, else IPv6) whose IP protocol is
/// `protocol`, and where its layer-4 header starts; a TCP packet's socket serves its connection
/// when `tcp_serves` ([`crate::kernel::sock_serves`]).
#[inline(always)]
fn flow_key(
    ctx: &SkBuffContext,
    cgroup_id: u64,
    direction: u8,
    v4: bool,
    protocol: u8,
    tcp_serves: bool,
) -> Result<(FlowKey, usize), i64> {
    let mut key = FlowKey {
        cgroup_id,
        protocol,
        ..FlowKey::default()
    };
    let l4 = if v4 {
        let vihl = ipv4_vihl(ctx)?;
        key.family = 2;
        let peer_at = if direction == DIR_EGRESS { 16 } else { 12 };
        let addr: [u8; 4] = load(&ctx.skb, peer_at)?;
        key.peer[..4].copy_from_slice(&addr);
        ((vihl & 0xf) as usize) * 4
    } else {
        key.family = 10;
        let peer_at = if direction == DIR_EGRESS { 24 } else { 8 };
        key.peer = load(&ctx.skb, peer_at)?;
        40
    };
    if protocol == IPPROTO_TCP || protocol == IPPROTO_UDP {
        let ports: [u8; 4] = ctx.load(l4 & 0xff)?;
        let (src, dst) = (
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        );
        let (peer, local) = if direction == DIR_EGRESS {
            (dst, src)
        } else {
            (src, dst)
        };
        (key.peer_port, key.local_port) = if protocol == IPPROTO_TCP {
            tcp_ports(peer, local, tcp_serves)
        } else {
            service_ports(peer, local)
        };
    }
    Ok((key, l4))
}

/// The first byte of an IPv4 header (version and header length), read in place as the first
/// word of the header: the compiler folds a 1-byte bounds check at offset 0 into one the
/// verifier cannot use.
#[inline(always)]
fn ipv4_vihl(ctx: &SkBuffContext) -> Result<u8, i64> {
    let [vihl, ..]: [u8; 4] = load(&ctx.skb, 0)?;
    Ok(vihl)
}

/// Adds `more` to the flow `key` (this CPU's counters).
#[inline(always)]
pub fn add_flow(key: &FlowKey, more: &FlowStats) {
    match FLOWS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        Some(stats) => unsafe { &mut *stats }.add(more),
        None => {
            let _ = FLOWS.insert(key, more, 0);
        }
    }
}

/// An ICMP message of the flow `flow` in `direction`, its header at `l4`: its payload is what
/// follows the 8-byte ICMP header within the IP packet's own length (the whole message: cgroup
/// egress runs before fragmentation, ingress after reassembly).
#[inline(always)]
fn count_icmp(ctx: &SkBuffContext, flow: &FlowKey, direction: u8, l4: usize) -> Result<(), i64> {
    let ip_payload = if flow.family == 2 {
        (u16::from_be(load::<u16>(&ctx.skb, 2)?) as u64).saturating_sub(l4 as u64)
    } else {
        u16::from_be(load::<u16>(&ctx.skb, 4)?) as u64
    };
    let key = IcmpKey {
        cgroup_id: flow.cgroup_id,
        peer: flow.peer,
        family: flow.family,
        icmp_type: 0,
        direction,
        _pad: 0,
    };
    icmp::account_skb(ctx, key, l4, ip_payload.saturating_sub(8))
}
