//! ICMP on the wire: TC classifiers on the interfaces container traffic crosses (the docker
//! bridge, veths as they come and go, loopback, the host's own) count echo traffic per
//! (interface, direction, addresses, type) with payload samples. This sees what no local socket
//! sends: the kernel's own echo replies, and forwarded traffic. User space attributes records
//! to containers by address. The programs never change a packet's fate.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{classifier, map},
    maps::LruHashMap,
    programs::TcContext,
};
use sensor_common::{DIR_EGRESS, DIR_INGRESS, Hook, HookError, ICMP_SAMPLE, IcmpStats, TcIcmpKey};

use super::{
    icmp::{self, record},
    packet,
};
use crate::maps::count_error;

/// Interface-level ICMP counters.
#[map]
static TC_ICMP: LruHashMap<TcIcmpKey, IcmpStats> = LruHashMap::with_max_entries(16384, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

#[classifier]
pub fn icmp_tc_ingress(ctx: TcContext) -> i32 {
    if let Err(ret) = account(&ctx, DIR_INGRESS) {
        count_error(Hook::IcmpTc, HookError::from_ret(ret));
    }
    TC_ACT_UNSPEC // carry on: the next program or the default action decides
}

#[classifier]
pub fn icmp_tc_egress(ctx: TcContext) -> i32 {
    if let Err(ret) = account(&ctx, DIR_EGRESS) {
        count_error(Hook::IcmpTc, HookError::from_ret(ret));
    }
    TC_ACT_UNSPEC
}

/// A `T` at `offset` of the frame.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, i64> {
    packet::load(&ctx.skb, offset)
}

/// Copies up to [`ICMP_SAMPLE`] bytes at `offset` of the packet.
#[inline(always)]
fn sample(ctx: &TcContext, offset: usize, len: u64, dst: &mut [u8; ICMP_SAMPLE]) -> u32 {
    icmp::copy_sample(
        dst,
        len,
        |at| ctx.load(offset + at).ok(),
        |at| ctx.load(offset + at).ok(),
    )
}

#[inline(always)]
fn account(ctx: &TcContext, direction: u8) -> Result<(), i64> {
    let ethertype = u16::from_be(load::<u16>(ctx, 12)?);
    let v4 = ethertype == ETH_P_IP;
    // Nearly every packet is not ICMP: it leaves before the key is built.
    let protocol = if v4 {
        load::<u8>(ctx, ETH_HLEN + 9)?
    } else if ethertype == ETH_P_IPV6 {
        load::<u8>(ctx, ETH_HLEN + 6)?
    } else {
        return Ok(());
    };
    if protocol != if v4 { 1 } else { 58 } {
        return Ok(());
    }
    let mut key = TcIcmpKey {
        // SAFETY: reading the context's own field.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        direction,
        ..TcIcmpKey::default()
    };
    let (icmp_at, payload_len) = if v4 {
        let vihl: u8 = load(ctx, ETH_HLEN)?;
        let ihl = ((vihl & 0xf) as usize) * 4;
        let total = u16::from_be(load::<u16>(ctx, ETH_HLEN + 2)?) as u64;
        key.family = 2;
        key.src[..4].copy_from_slice(&load::<[u8; 4]>(ctx, ETH_HLEN + 12)?);
        key.dst[..4].copy_from_slice(&load::<[u8; 4]>(ctx, ETH_HLEN + 16)?);
        (
            ETH_HLEN + (ihl & 0x3c),
            total.saturating_sub(ihl as u64 + 8),
        )
    } else {
        let payload = u16::from_be(load::<u16>(ctx, ETH_HLEN + 4)?) as u64;
        key.family = 10;
        key.src = load(ctx, ETH_HLEN + 8)?;
        key.dst = load(ctx, ETH_HLEN + 24)?;
        (ETH_HLEN + 40, payload.saturating_sub(8))
    };
    key.icmp_type = ctx.load(icmp_at)?;
    let payload_at = icmp_at + 8;
    record(&TC_ICMP, &key, payload_len, |dst| {
        sample(ctx, payload_at, payload_len, dst)
    })
}
