//! Converting kernel timestamps (`CLOCK_BOOTTIME` ns) to wall-clock time.

use pbjson_types::{Duration, Timestamp};

use crate::types::BootNs;

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// Maps boot-time nanoseconds to wall-clock time, with the offset taken once at start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    realtime_minus_boottime: i128,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            realtime_minus_boottime: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_BOOTTIME),
        }
    }

    /// `CLOCK_BOOTTIME` now.
    pub fn boot_now() -> BootNs {
        BootNs(now_ns(libc::CLOCK_BOOTTIME) as u64)
    }

    pub fn timestamp(&self, t: BootNs) -> Timestamp {
        let ns = t.0 as i128 + self.realtime_minus_boottime;
        Timestamp {
            seconds: (ns / 1_000_000_000) as i64,
            nanos: (ns % 1_000_000_000) as i32,
        }
    }
}

/// A proto Duration from a std one.
pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Clock ticks (as in `/proc/PID/stat`) to boot-time ns.
pub fn ticks_to_boot_ns(ticks: u64) -> BootNs {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    BootNs(ticks.saturating_mul(1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_track_wall_clock() {
        let clock = Clock::new();
        let ts = clock.timestamp(Clock::boot_now());
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(
            (ts.seconds - wall.as_secs() as i64).abs() <= 1,
            "{ts:?} vs {wall:?}"
        );
        assert!((0..1_000_000_000).contains(&ts.nanos));
    }
}
