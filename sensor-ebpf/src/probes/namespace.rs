//! Namespace changes, compared at fork and exec instead of hooked on `setns`, `unshare` and
//! `clone` (syscall tracepoints slow every syscall on the node, and io_uring or other paths
//! around them would go unseen):
//! - at fork, a child whose namespaces differ from its parent's was created in new ones
//!   ([`NsOp::Clone`]), and a parent whose namespaces differ from those it had at its last exec
//!   or fork changed them since ([`NsOp::Changed`]);
//! - at exec, the same comparison for the task that execs (nsenter and unshare end in one).
//!
//! Each process's namespaces are kept by tgid in an LRU map, dropped at its exit.

use aya_ebpf::{macros::map, maps::LruHashMap};
use sensor_common::{Namespaces, NsOp, NsRecord, RecordKind, Ring};

use super::record;
use crate::kernel::{self, ReadResult};

/// Each process's namespaces at its last exec or fork, by tgid.
#[map]
static NS_SEEN: LruHashMap<u32, Namespaces> = LruHashMap::with_max_entries(65536, 0);

#[inline(always)]
fn emit(
    op: NsOp,
    flags: u64,
    before: &Namespaces,
    after: &Namespaces,
    child_tgid: u32,
) -> ReadResult<()> {
    record::emit(Ring::Process, RecordKind::Ns, |rec: &mut NsRecord| {
        rec.caller = kernel::caller();
        rec.ns_before = *before;
        rec.ns_after = *after;
        rec.flags = flags;
        rec.child_tgid = child_tgid;
        rec.op = op as u8;
        rec._pad = [0; 3];
        Ok(())
    })
}

/// Compares the namespaces `now` of the current task (process `tgid`) with those last seen
/// for it and records `now`; the exec hook calls it with the new program's namespaces. A
/// process seen for the first time (started before the sensor) is only recorded.
#[inline(always)]
pub fn compare_and_record(tgid: u32, now: &Namespaces) -> ReadResult<()> {
    // SAFETY: copied out of the map value.
    let seen = unsafe { NS_SEEN.get(tgid) }.copied();
    if let Some(seen) = seen {
        if seen == *now {
            return Ok(());
        }
        let flags = seen.differing(now);
        emit(NsOp::Changed, flags, &seen, now, 0)?;
    }
    NS_SEEN.insert(tgid, *now, 0).map_err(|e| e as i64)
}

/// Called by the fork hook in the parent's context, with both tasks typed from BTF.
#[inline(always)]
pub fn on_fork(parent: *const u8, child: *const u8, child_tgid: u32) -> ReadResult<()> {
    let (mut ours, mut theirs) = (Namespaces::default(), Namespaces::default());
    kernel::task_namespaces(parent, &mut ours)?;
    kernel::task_namespaces(child, &mut theirs)?;
    compare_and_record((kernel::pid_tgid() >> 32) as u32, &ours)?;
    if ours != theirs {
        emit(
            NsOp::Clone,
            ours.differing(&theirs),
            &ours,
            &theirs,
            child_tgid,
        )?;
    }
    NS_SEEN.insert(child_tgid, theirs, 0).map_err(|e| e as i64)
}

/// Called by the exit hook for a process's last thread.
#[inline(always)]
pub fn on_exit(tgid: u32) {
    let _ = NS_SEEN.remove(tgid);
}
