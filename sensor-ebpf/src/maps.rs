//! Maps and globals shared by all probes: ring buffers, drop and error counters, in-kernel
//! aggregation, filters, and the kernel offsets.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use sensor_common::{
    DROP_REASONS, DropKey, DropReason, FilterConfig, FlowKey, FlowStats, HOOK_ERROR_KINDS,
    HOOK_ERROR_SLOTS, Hook, HookError, IcmpKey, IcmpStats, KernelOffsets, OFFSETS_MAGIC,
    RING_COUNT, RateState, Ring, SELF_GROUP, SELF_TASK,
};

/// Process and container lifecycle records. User space may resize it before load.
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Socket and TCP records: a flood here cannot starve [`PROC_EVENTS`].
#[map]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per ring, when a record last woke the agent (boot ns): see [`sensor_common::RING_WAKE_GAP_NS`].
#[map]
pub static LAST_WAKEUP: Array<u64> = Array::with_max_entries(RING_COUNT, 0);

/// Records not delivered, per `ring * DROP_REASONS + reason`.
#[map]
pub static RING_DROPS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(RING_COUNT * DROP_REASONS, 0);

/// Records not delivered, per cgroup, ring and reason: who flooded. LRU: a flood of cgroups
/// evicts the oldest counters, never a record.
#[map]
pub static CGROUP_DROPS: LruPerCpuHashMap<DropKey, u64> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Failed kernel reads or malformed tracepoint data, per [`Hook`] and [`HookError`].
#[map]
pub static HOOK_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(HOOK_ERROR_SLOTS, 0);

/// Traffic volume per (cgroup, peer, ports, protocol), both ways in one entry, read by user
/// space. (A flow took two entries, one per direction, when there were 65 536.)
#[map]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowStats> =
    LruPerCpuHashMap::with_max_entries(32768, 0);

/// ICMP echo traffic per (cgroup, peer, type, direction), with payload samples.
#[map]
pub static ICMP: LruHashMap<IcmpKey, IcmpStats> = LruHashMap::with_max_entries(16384, 0);

/// Scratch space to build an [`IcmpStats`] off the 512-byte stack.
#[map]
pub static ICMP_SCRATCH: PerCpuArray<IcmpStats> = PerCpuArray::with_max_entries(1, 0);

/// cgroups user space classified as the host's (not a container's): network activity there is
/// not reported unless `FILTER.net_host` is set. Unknown cgroups count as containers, so a
/// brand-new container is never filtered before user space has seen it.
#[map]
pub static HOST_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(65536, 0);

/// The sensor's own threads ([`SELF_TASK`]) and process group ([`SELF_GROUP`]), kept current by
/// user space: signals and ptrace aimed at them are reported, and the sensor's own calls are not.
#[map]
pub static SENSOR_TASKS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Token buckets for network records, per cgroup.
#[map]
pub static NET_RATE: LruHashMap<u64, RateState> = LruHashMap::with_max_entries(16384, 0);

/// Token buckets for exec, fork and exit records, per cgroup.
#[map]
pub static PROC_RATE: LruHashMap<u64, RateState> = LruHashMap::with_max_entries(16384, 0);

/// Member and field offsets for the running kernel, set by user space before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// Filtering and rate limits, set by user space before load.
#[unsafe(no_mangle)]
static FILTER: FilterConfig = FilterConfig::default_const();

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

/// Counts a record not delivered, against its ring and, when known (not 0), its cgroup.
#[inline(always)]
pub fn count_drop(ring: Ring, reason: DropReason, cgroup_id: u64) {
    bump(&RING_DROPS, ring as u32 * DROP_REASONS + reason as u32);
    if cgroup_id == 0 {
        return;
    }
    let key = DropKey {
        cgroup_id,
        ring: ring as u32,
        reason: reason as u32,
    };
    match CGROUP_DROPS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a live map value.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = CGROUP_DROPS.insert(key, 1, 0);
        }
    }
}

/// Counts a failure of `hook`'s probe by why it failed.
#[inline(always)]
pub fn count_error(hook: Hook, why: HookError) {
    bump(&HOOK_ERRORS, hook as u32 * HOOK_ERROR_KINDS + why as u32);
}

/// Whether user space classified `cgroup_id` as the host's (unknown cgroups are containers').
#[inline(always)]
pub fn is_host_cgroup(cgroup_id: u64) -> bool {
    HOST_CGROUPS.get_ptr(cgroup_id).is_some()
}

/// Whether network activity of `cgroup_id` is reported.
#[inline(always)]
pub fn net_wanted(cgroup_id: u64) -> bool {
    volatile(&FILTER.net_host) != 0 || !is_host_cgroup(cgroup_id)
}

/// The `SELF_*` bits of `id` in [`SENSOR_TASKS`] (0: not the sensor's).
#[inline(always)]
pub fn self_role(id: u32) -> u8 {
    // SAFETY: a plain value read; a concurrent update only changes the answer.
    unsafe { SENSOR_TASKS.get(id).copied().unwrap_or(0) }
}

/// Whether the current task is one of the sensor's own threads.
#[inline(always)]
pub fn from_sensor() -> bool {
    self_role((crate::kernel::pid_tgid() >> 32) as u32) & SELF_TASK != 0
}

/// Whether `pid > 0` is one of the sensor's threads, or `-pid` its process group.
#[inline(always)]
pub fn is_sensor_pid(pid: i64, groups: bool) -> bool {
    if pid > 0 && pid <= u32::MAX as i64 {
        self_role(pid as u32) & SELF_TASK != 0
    } else if groups && pid < -1 && -pid <= u32::MAX as i64 {
        self_role((-pid) as u32) & SELF_GROUP != 0
    } else {
        false
    }
}

/// The repeat window of network records ([`sensor_common::RepeatKey`]), in ns (0: off).
#[inline(always)]
pub fn net_repeat_window_ns() -> u64 {
    volatile(&FILTER.net_repeat_ms) as u64 * 1_000_000
}

/// Takes a token from `cgroup_id`'s network bucket; false (and a counted drop) when empty.
#[inline(always)]
pub fn net_rate_ok(cgroup_id: u64, now: u64) -> bool {
    // Read in place: a copy of the global would fold to its initialiser.
    let (rate, burst) = (
        volatile(&FILTER.net_rate_per_sec),
        volatile(&FILTER.net_burst),
    );
    rate_ok(&NET_RATE, Ring::Network, cgroup_id, now, rate, burst)
}

/// Takes a token from `cgroup_id`'s process bucket (exec, fork, exit); false (and a counted
/// drop) when empty.
#[inline(always)]
pub fn proc_rate_ok(cgroup_id: u64, now: u64) -> bool {
    let (rate, burst) = (
        volatile(&FILTER.proc_rate_per_sec),
        volatile(&FILTER.proc_burst),
    );
    rate_ok(&PROC_RATE, Ring::Process, cgroup_id, now, rate, burst)
}

/// One token bucket per cgroup in `buckets`, `rate` tokens per second up to `burst`.
#[inline(always)]
fn rate_ok(
    buckets: &LruHashMap<u64, RateState>,
    ring: Ring,
    cgroup_id: u64,
    now: u64,
    rate: u32,
    burst: u32,
) -> bool {
    let rate = rate as u64;
    if rate == 0 {
        return true;
    }
    let burst = burst as u64 * 1000;
    match buckets.get_ptr_mut(cgroup_id) {
        Some(state) => {
            // SAFETY: a live map value; races between CPUs only blur the count.
            let state = unsafe { &mut *state };
            // Capped at 10 s so the product stays far below u64::MAX (BPF has no 128-bit
            // multiply for saturating_mul): rate tokens/s = rate * 1000 milli-tokens per 1e9 ns.
            let elapsed = core::cmp::min(now.saturating_sub(state.last_ns), 10_000_000_000);
            let refill = elapsed * rate / 1_000_000;
            let tokens = core::cmp::min(state.milli_tokens.saturating_add(refill), burst);
            state.last_ns = now;
            if tokens >= 1000 {
                state.milli_tokens = tokens - 1000;
                true
            } else {
                state.milli_tokens = tokens;
                count_drop(ring, DropReason::RateLimited, cgroup_id);
                false
            }
        }
        None => {
            let fresh = RateState {
                milli_tokens: burst.saturating_sub(1000),
                last_ns: now,
            };
            let _ = buckets.insert(cgroup_id, fresh, 0);
            true
        }
    }
}
