//! Maps and globals shared by all probes: ring buffers, drop and error counters, kernel offsets.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use sensor_common::{HOOK_COUNT, Hook, KernelOffsets, OFFSETS_MAGIC, RING_COUNT, Ring};

/// Process and container lifecycle records. User space may resize it before load.
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Records that could not be reserved, per [`Ring`].
#[map]
pub static RING_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(RING_COUNT, 0);

/// Failed kernel reads or malformed tracepoint data, per [`Hook`].
#[map]
pub static HOOK_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(HOOK_COUNT, 0);

/// Member and field offsets for the running kernel, set by user space before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// Reads one offset. The volatile read keeps the compiler from folding the zero initialiser.
macro_rules! off {
    ($field:ident) => {
        $crate::maps::volatile(&$crate::maps::offsets_ref().$field)
    };
}
pub(crate) use off;

#[inline(always)]
pub fn volatile(v: &u32) -> u32 {
    // SAFETY: `v` is a valid reference.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
pub fn offsets_ref() -> &'static KernelOffsets {
    &OFFSETS
}

/// Whether user space filled [`OFFSETS`]; probes do nothing until it has.
#[inline(always)]
pub fn offsets_ready() -> bool {
    off!(magic) == OFFSETS_MAGIC
}

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn count_drop(ring: Ring) {
    bump(&RING_DROPS, ring as u32);
}

#[inline(always)]
pub fn count_error(hook: Hook) {
    bump(&HOOK_ERRORS, hook as u32);
}
