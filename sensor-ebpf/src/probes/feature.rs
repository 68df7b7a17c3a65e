//! Feature probes: empty programs of each optional type, which `sensor check` loads and attaches
//! to learn what the running kernel allows (probing, never guessing from the version number).

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};

#[kprobe]
pub fn feature_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "do_exit")]
pub fn feature_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn feature_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}
