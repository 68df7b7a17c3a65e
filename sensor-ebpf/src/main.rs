//! The sensor's eBPF programs, one module per hook family under `probes/`.
//!
//! Every probe is a thin entry point around a `try_*` function; a failure increments the hook's
//! error counter (surfaced by the agent in `health` events) instead of vanishing. A record that
//! cannot be reserved in its ring buffer increments that ring's drop counter.
#![no_std]
#![no_main]
// `atomic_xadd`, `atomic_xchg`: core's atomics stop at load and store on eBPF.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod abi;
mod clock;
mod kernel;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this, so it is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
