//! TCP volume from each connection's own counters (`struct tcp_sock`: bytes the peer
//! acknowledged, bytes received, segments out and in) instead of from every packet: the
//! traffic programs leave a TCP packet after a few loads, and a connection's bytes reach
//! [`crate::maps::FLOWS`] (as deltas, so user space reads TCP like any other flow)
//! - while it lasts, from the incoming packet that makes its acknowledged or received bytes
//!   cross a multiple of [`sensor_common::TCP_SAMPLE_BYTES`] (told before TCP takes the packet
//!   in, from its acknowledgement or its data's end against the socket's own sequence numbers;
//!   a sender learns its bytes arrived from the acknowledgements, a receiver from the data;
//!   a receiver's sample counts what the segment brings), and
//! - when it closes, from the `inet_sock_set_state` program ([`super::tcp`]), which also sees
//!   connections of containers no traffic program is attached to.
//!
//! [`TCP_SOCKS`] keeps what was last added per socket cookie. Counters are the kernel's, so a
//! connection driven through io_uring counts like one driven by syscalls. Bytes are TCP
//! payload (headers are not counted); what a connection moved shows within
//! [`sensor_common::TCP_SAMPLE_BYTES`] each way (a sender's, and one acknowledgement), or at
//! its close. (A sample taken on data that arrived past a gap counts the gap before it is
//! filled; a connection that ends with the gap never filled keeps that much too many.)

use aya_ebpf::{helpers::generated, macros::map, maps::LruHashMap, programs::SkBuffContext};
use sensor_common::{
    DIR_EGRESS, DIR_INGRESS, Endpoint, FlowKey, FlowStats, TcpCounters, Volume, tcp_sample_due,
};

use super::{packet::load, traffic::add_flow};
use crate::{
    abi::TCP_LISTEN,
    kernel::{self, Memory, ReadResult, Typed},
    maps::{net_wanted, off},
};

/// What each TCP socket last added to [`crate::maps::FLOWS`], by socket cookie. LRU: an entry
/// evicted early (more than this many connections between two samples of one) makes that
/// connection count again from zero.
#[map]
static TCP_SOCKS: LruHashMap<u64, TcpCounters> = LruHashMap::with_max_entries(65536, 0);

/// The ACK bit of the TCP header's flags byte.
const TCP_ACK: u8 = 0x10;

/// A TCP packet on its way into a container's socket, its TCP header at `l4`: a sample when
/// it makes the connection's counters cross a multiple of [`sensor_common::TCP_SAMPLE_BYTES`].
/// `flow` builds the connection's key from the packet and whether the socket serves the
/// connection ([`kernel::sock_serves`]), asked only for a sample.
#[inline(always)]
pub fn sample_ingress(
    ctx: &SkBuffContext,
    l4: usize,
    flow: impl FnOnce(&SkBuffContext, bool) -> Result<FlowKey, i64>,
) -> Result<(), i64> {
    let skb = ctx.skb.skb;
    // SAFETY: the context's own fields; the helpers take the socket the verifier typed (the
    // kernel sets the receiving socket on the packet while cgroup programs run).
    let (full, tp) = unsafe {
        let sk = (*skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return Ok(());
        }
        // A request or timewait socket (a late FIN) has no counters, and a listener (which
        // takes the handshake's last ACK) none that move: its sequence numbers would make
        // every such ACK look like a sample.
        let full = generated::bpf_sk_fullsock(sk);
        if full.is_null() || (*full).state == TCP_LISTEN {
            return Ok(());
        }
        let tp = generated::bpf_tcp_sock(full);
        if tp.is_null() {
            return Ok(());
        }
        (full, &*tp)
    };
    // The packet: sequence and acknowledgement numbers, header length and flags; payload after
    // the header.
    let [seq, ack_seq]: [u32; 2] = load(&ctx.skb, l4 + 4)?;
    let (seq, ack_seq) = (u32::from_be(seq), u32::from_be(ack_seq));
    let [doff, flags]: [u8; 2] = load(&ctx.skb, l4 + 12)?;
    let header = l4 as u64 + ((doff >> 4) as u64) * 4;
    let payload = (ctx.len() as u64).saturating_sub(header);
    // SAFETY: each field is read once, at its own size, as the verifier requires.
    let (now, snd_una, rcv_nxt) = unsafe {
        (
            TcpCounters {
                bytes_out: core::ptr::read_volatile(&tp.bytes_acked),
                bytes_in: core::ptr::read_volatile(&tp.bytes_received),
                segs_out: core::ptr::read_volatile(&tp.segs_out),
                segs_in: core::ptr::read_volatile(&tp.segs_in),
            },
            core::ptr::read_volatile(&tp.snd_una),
            core::ptr::read_volatile(&tp.rcv_nxt),
        )
    };
    // What this acknowledgement adds (a stale or odd one adds nothing).
    let newly_acked = match ack_seq.wrapping_sub(snd_una) as i32 {
        n if flags & TCP_ACK != 0 && n > 0 => n as u64,
        _ => 0,
    };
    // The data the stream holds once this segment is in, beyond what the counters show: its
    // own and that of the segments ahead of it in the socket's backlog (while the application
    // holds the socket, segments wait there and the counters lag behind by as much). Measured
    // against the socket's own next expected byte, so a segment already received adds nothing.
    let newly_received = match seq.wrapping_add(payload as u32).wrapping_sub(rcv_nxt) as i32 {
        n if payload != 0 && n > 0 => n as u64,
        _ => 0,
    };
    if !tcp_sample_due(now.bytes_out, newly_acked) && !tcp_sample_due(now.bytes_in, newly_received)
    {
        return Ok(());
    }
    // SAFETY: the helper checks the type of the socket it is given (null for no TCP socket).
    let sk = unsafe { generated::bpf_skc_to_tcp_sock(full.cast()) } as *const u8;
    let serves = !sk.is_null() && kernel::sock_serves::<Typed>(sk)?;
    let key = flow(ctx, serves)?;
    if !net_wanted(key.cgroup_id) {
        return Ok(());
    }
    // SAFETY: the helper takes the program's own skb.
    let cookie = unsafe { generated::bpf_get_socket_cookie(skb.cast()) };
    // Received bytes as this segment leaves them; acknowledged bytes and segments as they
    // stand (this acknowledgement shows at the next sample or the close).
    let after = TcpCounters {
        bytes_in: now.bytes_in + newly_received,
        ..now
    };
    add(cookie, &key, &after, false);
    Ok(())
}

/// A TCP connection's socket `sk` closing (from a state that carried data): what it moved
/// since its last sample. `sk` is a `struct tcp_sock` typed from BTF ([`Typed`]).
#[inline(always)]
pub fn on_close(sk: *const u8) -> ReadResult<()> {
    // The host's sockets leave after the cgroup, before the counters are read.
    let cgroup_id = kernel::sock_cgroup_id::<Typed>(sk).unwrap_or(0);
    if !net_wanted(cgroup_id) {
        return Ok(());
    }
    let now = TcpCounters {
        bytes_out: Typed::get::<u64>(sk, off!(tcp_bytes_acked))?,
        bytes_in: Typed::get::<u64>(sk, off!(tcp_bytes_received))?,
        segs_out: Typed::get::<u32>(sk, off!(tcp_segs_out))?,
        segs_in: Typed::get::<u32>(sk, off!(tcp_segs_in))?,
    };
    if now.bytes_out == 0 && now.bytes_in == 0 {
        return Ok(());
    }
    let (mut local, mut remote) = (Endpoint::default(), Endpoint::default());
    // The close released the local port (`skc_num` is 0 by now); the source port stays.
    kernel::sock_addresses::<Typed>(sk, &mut local, &mut remote)?;
    local.port = u16::from_be(Typed::get::<u16>(sk, off!(inet_sport))?);
    let key = FlowKey::tcp(
        cgroup_id,
        &local,
        &remote,
        kernel::sock_serves::<Typed>(sk)?,
    );
    // 0: nothing asked for the cookie, so no sample was taken.
    let cookie = Typed::get::<u64>(sk, off!(sk_cookie))?;
    add(cookie, &key, &now, true);
    Ok(())
}

/// Adds what the socket `cookie` moved since its last entry to its flow `key`, both ways in
/// one update; keeps `now` as its entry, or forgets the socket when `closed`.
#[inline(always)]
fn add(cookie: u64, key: &FlowKey, now: &TcpCounters, closed: bool) {
    let mut last = TcpCounters::default();
    if cookie != 0 {
        match TCP_SOCKS.get_ptr_mut(cookie) {
            Some(entry) => {
                // SAFETY: a live map value. (Two samples of one socket at the same moment on
                // two CPUs, which its lock does not order at ingress, may count a slice twice.)
                unsafe {
                    last = *entry;
                    *entry = *now;
                }
                if closed {
                    let _ = TCP_SOCKS.remove(cookie);
                }
            }
            None if !closed => {
                let _ = TCP_SOCKS.insert(cookie, *now, 0);
            }
            None => {}
        }
    }
    let mut more = FlowStats::default();
    more.ways[DIR_EGRESS as usize] = Volume {
        bytes: now.bytes_out.saturating_sub(last.bytes_out),
        packets: now.segs_out.wrapping_sub(last.segs_out) as u64,
    };
    more.ways[DIR_INGRESS as usize] = Volume {
        bytes: now.bytes_in.saturating_sub(last.bytes_in),
        packets: now.segs_in.wrapping_sub(last.segs_in) as u64,
    };
    if more != FlowStats::default() {
        add_flow(key, &more);
    }
}
