//! The time rate limits and repeat windows are measured in: `CLOCK_BOOTTIME`, read at most once
//! per jiffy on each CPU. Reading the clock costs about 45 ns on this kind of virtual machine
//! (`cargo xtask bench --hook-costs`), more than any map lookup, and a connect storm asked for it
//! five times a connection; the jiffy counter is one load. What [`window_ns`] answers is at most
//! a jiffy old (4 ms at `HZ=250`), which neither a repeat window (a second by default) nor a
//! token bucket notices. A record's own timestamp still reads the clock
//! ([`crate::kernel::boot_ns`]).

use aya_ebpf::{helpers::generated, macros::map, maps::PerCpuArray};

use crate::kernel;

/// One CPU's last clock reading and the jiffy it was taken in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Reading {
    jiffies: u64,
    boot_ns: u64,
}

/// Each CPU's last [`Reading`].
#[map]
static CLOCK: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// `CLOCK_BOOTTIME` in ns as of this jiffy: the clock is read by the first caller on this CPU
/// within each jiffy, the others take its reading.
///
/// A program may interrupt another on the same CPU (softirq over a task's program): the time is
/// written before its jiffy and read after it, so a reader that sees the current jiffy takes a
/// time of this jiffy or later, never an older slot's.
#[inline(always)]
pub fn window_ns() -> u64 {
    // SAFETY: no arguments, no side effects.
    let jiffies = unsafe { generated::bpf_jiffies64() };
    let Some(slot) = CLOCK.get_ptr_mut(0) else {
        return kernel::boot_ns();
    };
    // SAFETY: this CPU's slot; field by field, in the order the comment above relies on.
    unsafe {
        if core::ptr::read_volatile(&(*slot).jiffies) == jiffies {
            return core::ptr::read_volatile(&(*slot).boot_ns);
        }
        let now = kernel::boot_ns();
        core::ptr::write_volatile(&mut (*slot).boot_ns, now);
        core::ptr::write_volatile(&mut (*slot).jiffies, jiffies);
        now
    }
}
