//! TCP state changes from `sock:inet_sock_set_state`, attributed to the socket's cgroup (the
//! change may happen in softirq context, where the current task is unrelated).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use sensor_common::{Endpoint, Hook, RecordKind, Ring, TcpStateRecord};

use super::{record::emit, run_probe};
use crate::{
    kernel::{self, ReadResult},
    maps::{net_rate_ok, net_wanted, off},
};

const IPPROTO_TCP: u16 = 6;
const AF_INET6: u16 = 10;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    run_probe!(Hook::TcpState, try_tcp_state(&ctx))
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, at: u32) -> ReadResult<T> {
    // SAFETY: offsets come from the tracepoint's format file.
    unsafe { ctx.read_at::<T>(at as usize) }.map_err(|e| e as i64)
}

fn try_tcp_state(ctx: &TracePointContext) -> ReadResult<()> {
    if field::<u16>(ctx, off!(tp_tcp_protocol))? != IPPROTO_TCP {
        return Ok(());
    }
    let sk = field::<u64>(ctx, off!(tp_tcp_skaddr))? as *const u8;
    let cgroup_id = kernel::sock_cgroup_id(sk).unwrap_or(0);
    if !net_wanted(cgroup_id) || !net_rate_ok(cgroup_id, kernel::boot_ns()) {
        return Ok(());
    }
    emit(
        Ring::Network,
        RecordKind::TcpState,
        |rec: &mut TcpStateRecord| {
            rec.cgroup_id = cgroup_id;
            rec.local = Endpoint::default();
            rec.remote = Endpoint::default();
            rec.old_state = 0;
            rec.new_state = 0;
            fill(ctx, rec)
        },
    )
}

#[inline(always)]
fn fill(ctx: &TracePointContext, rec: &mut TcpStateRecord) -> ReadResult<()> {
    rec.old_state = field::<u32>(ctx, off!(tp_tcp_oldstate))?;
    rec.new_state = field::<u32>(ctx, off!(tp_tcp_newstate))?;
    let family = field::<u16>(ctx, off!(tp_tcp_family))?;
    rec.local.family = family;
    rec.remote.family = family;
    rec.local.port = field::<u16>(ctx, off!(tp_tcp_sport))?;
    rec.remote.port = field::<u16>(ctx, off!(tp_tcp_dport))?;
    if family == AF_INET6 {
        rec.local.addr = field::<[u8; 16]>(ctx, off!(tp_tcp_saddr_v6))?;
        rec.remote.addr = field::<[u8; 16]>(ctx, off!(tp_tcp_daddr_v6))?;
    } else {
        rec.local.addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_tcp_saddr))?);
        rec.remote.addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_tcp_daddr))?);
    }
    Ok(())
}
