//! Probes, one module per hook family: you find a probe by the thing it watches.

mod cgroup;
mod feature;
pub(crate) mod icmp;
mod icmp_tc;
mod namespace;
mod process;
mod record;
mod sockaddr;
mod socket;
mod stdio;
pub(crate) mod syscall;
mod tamper;
mod tcp;
mod traffic;

/// Runs a probe body; an error is counted against its hook instead of vanishing.
macro_rules! run_probe {
    ($hook:expr, $body:expr) => {{
        if !$crate::maps::offsets_ready() {
            $crate::maps::count_error($hook);
            return 0;
        }
        if $body.is_err() {
            $crate::maps::count_error($hook);
        }
        0
    }};
}
pub(crate) use run_probe;
