//! Probes, one module per hook family: you find a probe by the thing it watches.

mod cgroup;
mod feature;
pub(crate) mod icmp;
mod icmp_tc;
mod namespace;
mod packet;
mod process;
mod record;
mod repeats;
mod sock_cgroup;
mod socket;
mod stdio;
pub(crate) mod syscall;
mod tamper;
mod tcp;
mod tcp_volume;
mod traffic;
mod uring;

/// Runs a probe body; an error is counted against its hook, by errno, instead of vanishing.
/// The program returns `$ret` (default 0; cgroup programs pass 1, "allow", on every path).
macro_rules! run_probe {
    ($hook:expr, $body:expr) => {
        $crate::probes::run_probe!($hook, $body, 0)
    };
    ($hook:expr, $body:expr, $ret:expr) => {{
        if !$crate::maps::offsets_ready() {
            $crate::maps::count_error($hook, sensor_common::HookError::OffsetsMissing);
            return $ret;
        }
        if let Err(ret) = $body {
            $crate::maps::count_error($hook, sensor_common::HookError::from_ret(ret));
        }
        $ret
    }};
}
pub(crate) use run_probe;
