//! The one path every record takes into its ring: reserve, count a failed reservation against
//! the ring (and, on the process ring, the cgroup), stamp the header, let the probe fill the
//! rest, submit (waking the agent at most once per [`RING_WAKE_GAP_NS`] and ring). A probe only says which ring and kind, and how to fill its record.

use aya_ebpf::{bindings::BPF_RB_NO_WAKEUP, maps::RingBuf};
use sensor_common::{
    CgroupRecord, DropReason, ExecRecord, ExitRecord, ForkRecord, NsRecord, RECORD_VERSION,
    RING_WAKE_GAP_NS, RecordHeader, RecordKind, Ring, SockRecord, TamperRecord, TcpStateRecord,
};

use crate::{
    kernel::{self, ReadResult},
    maps::{LAST_WAKEUP, NET_EVENTS, PROC_EVENTS, count_drop},
};

/// A record type: `repr(C)`, starting with its [`RecordHeader`].
pub trait Record {
    fn header_mut(&mut self) -> &mut RecordHeader;
}

macro_rules! records {
    ($($t:ty),*) => {
        $(impl Record for $t {
            #[inline(always)]
            fn header_mut(&mut self) -> &mut RecordHeader {
                &mut self.header
            }
        })*
    };
}
records!(
    ExecRecord,
    ForkRecord,
    ExitRecord,
    CgroupRecord,
    SockRecord,
    NsRecord,
    TcpStateRecord,
    TamperRecord
);

/// The header every record starts with.
#[inline(always)]
fn header(kind: RecordKind) -> RecordHeader {
    RecordHeader {
        version: RECORD_VERSION,
        kind: kind as u16,
        cpu: kernel::cpu(),
        boot_ns: kernel::boot_ns(),
    }
}

#[inline(always)]
fn ring(ring: Ring) -> &'static RingBuf {
    match ring {
        Ring::Process => &PROC_EVENTS,
        Ring::Network => &NET_EVENTS,
    }
}

/// Emits one `T` of `kind` into `to`. `fill` must write every field user space reads (the
/// reservation is not zeroed) except the header. The record is submitted even when `fill`
/// fails part-way, so user space sees what was read; the error is returned for the probe's
/// error counter. A full ring is counted as a drop, not an error.
#[inline(always)]
pub fn emit<T: Record + 'static>(
    to: Ring,
    kind: RecordKind,
    fill: impl FnOnce(&mut T) -> ReadResult<()>,
) -> ReadResult<()> {
    let Some(mut entry) = ring(to).reserve::<T>(0) else {
        // Process records are written in the process's own context; network records may be
        // written in softirq, where the current cgroup is not the record's.
        let cgroup = match to {
            Ring::Process => kernel::current_cgroup_id(),
            Ring::Network => 0,
        };
        count_drop(to, DropReason::RingFull, cgroup);
        return Ok(());
    };
    // SAFETY: the reservation is sized and aligned for a T; `fill` writes what is read later.
    let rec = unsafe { &mut *entry.as_mut_ptr() };
    let head = header(kind);
    let wake = wakeup_flags(to, head.boot_ns);
    *rec.header_mut() = head;
    let res = fill(rec);
    entry.submit(wake);
    res
}

/// Submit flags for a record of `to` written at `now`: the kernel's default (wake the agent if
/// it has caught up) unless a record of this ring did so less than [`RING_WAKE_GAP_NS`] ago,
/// then no wakeup: the agent drains again that long after each drain. Concurrent writers may
/// both wake it; that only costs a wakeup.
#[inline(always)]
fn wakeup_flags(to: Ring, now: u64) -> u64 {
    let Some(last) = LAST_WAKEUP.get_ptr_mut(to as u32) else {
        return 0;
    };
    // SAFETY: an array slot; a racing writer only makes the gap approximate.
    unsafe {
        if now.wrapping_sub(*last) < RING_WAKE_GAP_NS {
            return BPF_RB_NO_WAKEUP as u64;
        }
        *last = now;
    }
    0
}
