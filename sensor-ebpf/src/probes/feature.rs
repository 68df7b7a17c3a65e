//! Feature probes: empty programs of each optional type the default set may go without, which
//! `sensor check` loads and attaches to learn what the running kernel allows (probing, never
//! guessing from the version number).

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

#[kprobe]
pub fn feature_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "do_exit")]
pub fn feature_fentry(_ctx: FEntryContext) -> u32 {
    0
}
