//! cgroup lifecycle in the default hierarchy: `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`.
//!
//! A container runtime creates the container's cgroup before its first process runs, so the
//! agent learns `cgroup id -> path` here without racing short-lived containers. v1 hierarchies
//! fire too; only the hierarchy whose ids tasks report (`dfl_hierarchy_id`) is kept.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use sensor_common::{CGROUP_PATH_MAX, CGROUP_PATH_TRUNCATED, CgroupRecord, Hook, RecordKind, Ring};

use super::{record::emit, run_probe};
use crate::{
    kernel::{self, ReadResult},
    maps::off,
};

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    run_probe!(
        Hook::CgroupMkdir,
        cgroup_event(&ctx, RecordKind::CgroupMkdir)
    )
}

#[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    run_probe!(
        Hook::CgroupRmdir,
        cgroup_event(&ctx, RecordKind::CgroupRmdir)
    )
}

fn cgroup_event(ctx: &TracePointContext, kind: RecordKind) -> ReadResult<()> {
    let root_at = off!(tp_cgroup_root) as usize;
    // SAFETY: offsets come from the tracepoint's format file.
    let root: i32 = unsafe { ctx.read_at(root_at) }.map_err(|e| e as i64)?;
    if root as u32 != off!(dfl_hierarchy_id) {
        return Ok(());
    }
    // Fixed fields written here, `path` covered by path_len.
    emit(Ring::Process, kind, |rec: &mut CgroupRecord| {
        rec.hierarchy_id = root;
        rec.flags = 0;
        rec.path_len = 0;
        fill(ctx, rec)
    })
}

#[inline(always)]
fn fill(ctx: &TracePointContext, rec: &mut CgroupRecord) -> ReadResult<()> {
    let (id_at, level_at, path_at) = (
        off!(tp_cgroup_id) as usize,
        off!(tp_cgroup_level) as usize,
        off!(tp_cgroup_path) as usize,
    );
    // SAFETY: offsets come from the tracepoint's format file.
    unsafe {
        rec.cgroup_id = ctx.read_at::<u64>(id_at).map_err(|e| e as i64)?;
        rec.level = ctx.read_at::<i32>(level_at).map_err(|e| e as i64)?;
    }
    // SAFETY: as above.
    let loc: u32 = unsafe { ctx.read_at(path_at) }.map_err(|e| e as i64)?;
    let src = (ctx.as_ptr() as *const u8).wrapping_add((loc & 0xffff) as usize);
    rec.path_len = kernel::read_kernel_str(src, &mut rec.path)? as u32;
    if (loc >> 16) as usize > CGROUP_PATH_MAX {
        rec.flags |= CGROUP_PATH_TRUNCATED;
    }
    Ok(())
}
