//! The repeat window of network records: an operation identical to one reported less than
//! `--net-repeat-ms` ago ([`RepeatKey`]: same process, operation, kind of socket and peer, the
//! port of the end that does not serve left out) is not reported but counted, and the next one
//! reported carries the count. A connect or accept storm between two services becomes a few
//! records a second instead of thousands, before the rate limit is asked: the limit then
//! refuses only floods of operations that differ. A window that ends with no later report (the
//! storm's last) is taken out of the map by the agent once it is over, and its count reported
//! from there. Counts are exact unless the table of recent operations is pushed out by more
//! different operations than it holds.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{macros::map, maps::LruHashMap};
use sensor_common::{RepeatKey, RepeatState};

use crate::{
    abi::BPF_NOEXIST,
    clock,
    maps::{net_rate_ok, net_repeat_window_ns},
};

/// Each recent operation's window. LRU: a key pushed out early only reports its next
/// operation sooner, without the count it had. Keys are added only for operations within
/// their cgroup's rate, so a flood of different operations churns it no faster than that.
#[map]
static REPEATS: LruHashMap<RepeatKey, RepeatState> = LruHashMap::with_max_entries(65536, 0);

/// Whether the operation `key` is reported now, and if so how many repeats of it were not
/// since its last report: the first of its window is, when its cgroup's rate allows (a
/// refusal is counted as a drop, and the operation as a repeat for the next report); the
/// others in the window are counted. Without a window, every operation asks the rate.
///
/// The same change of two connections (accepts, TCP states) can run on two CPUs at once, so
/// the count is only ever added to or taken atomically, and a key is created only where none
/// is: every repeat shows in exactly one report. (Two CPUs may both open a window; the second
/// to take the count takes what came between, usually nothing.)
#[inline(always)]
pub fn admit(key: &RepeatKey) -> Option<u32> {
    let now = clock::window_ns();
    let window = net_repeat_window_ns();
    if window == 0 {
        return net_rate_ok(key.cgroup_id, now).then_some(0);
    }
    if let Some(state) = REPEATS.get_ptr_mut(key) {
        // SAFETY: a live map value.
        let state = unsafe { &mut *state };
        if now.saturating_sub(state.since_ns) < window || !net_rate_ok(key.cgroup_id, now) {
            count(state);
            return None;
        }
        state.since_ns = now;
        // SAFETY: a valid, aligned u64 of the map value.
        let repeats = unsafe {
            core::intrinsics::atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(
                &mut state.suppressed,
                0,
            )
        };
        return Some(repeats.min(u32::MAX as u64) as u32);
    }
    if !net_rate_ok(key.cgroup_id, now) {
        return None;
    }
    let fresh = RepeatState {
        since_ns: now,
        suppressed: 0,
    };
    if REPEATS.insert(key, fresh, BPF_NOEXIST).is_ok() {
        return Some(0);
    }
    // Another CPU opened this window since the lookup: that one reports, this one counts.
    match REPEATS.get_ptr_mut(key) {
        Some(state) => {
            // SAFETY: a live map value.
            count(unsafe { &mut *state });
            None
        }
        None => Some(0),
    }
}

/// Counts one repeat in `state`'s window.
#[inline(always)]
fn count(state: &mut RepeatState) {
    // SAFETY: a valid, aligned u64 of the map value; an atomic add (the result unused:
    // eBPF's oldest atomic instruction, on every kernel).
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &mut state.suppressed,
            1,
        )
    };
}
