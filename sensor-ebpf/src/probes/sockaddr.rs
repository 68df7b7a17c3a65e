//! kprobe and fentry variants for socket addresses: `security_socket_connect` and
//! `security_socket_bind` receive the kernel's own copy of the caller's `struct sockaddr`. The
//! variant saves it by task; the syscall exit tracepoint then reports that copy instead of
//! re-reading the caller's buffer (which the caller may have changed, or which may be paged out).
//! Only one variant is attached, chosen by user space by probing the kernel.

use aya_ebpf::{
    macros::{fentry, kprobe, map},
    maps::LruHashMap,
    programs::{FEntryContext, ProbeContext},
};
use sensor_common::{Endpoint, Hook};

use super::run_probe;
use crate::kernel::{self, Memory, ReadResult};

/// Kernel copies of socket addresses, by `pid_tgid`, between the LSM hook and the syscall exit.
#[map]
static SOCKADDRS: LruHashMap<u64, Endpoint> = LruHashMap::with_max_entries(16384, 0);

#[inline(always)]
fn save(addr: u64) -> ReadResult<()> {
    let mut endpoint = Endpoint::default();
    kernel::sockaddr(addr, Memory::Kernel, &mut endpoint)?;
    SOCKADDRS
        .insert(kernel::pid_tgid(), endpoint, 0)
        .map_err(|e| e as i64)
}

/// The saved kernel copy for the current task, if a variant ran during this syscall.
#[inline(always)]
pub fn take() -> Option<Endpoint> {
    let key = kernel::pid_tgid();
    // SAFETY: copied out before removal.
    let endpoint = unsafe { *SOCKADDRS.get(key)? };
    let _ = SOCKADDRS.remove(key);
    Some(endpoint)
}

/// Forgets a copy left by an earlier call that ended before the exit tracepoint read it.
#[inline(always)]
pub fn clear() {
    let _ = SOCKADDRS.remove(kernel::pid_tgid());
}

// int security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
// int security_socket_bind(struct socket *sock, struct sockaddr *address, int addrlen)

#[kprobe]
pub fn sockaddr_connect_kprobe(ctx: ProbeContext) -> u32 {
    run_probe!(Hook::SockAddr, save(ctx.arg::<u64>(1).unwrap_or(0)))
}

#[kprobe]
pub fn sockaddr_bind_kprobe(ctx: ProbeContext) -> u32 {
    run_probe!(Hook::SockAddr, save(ctx.arg::<u64>(1).unwrap_or(0)))
}

#[fentry(function = "security_socket_connect")]
pub fn sockaddr_connect_fentry(ctx: FEntryContext) -> u32 {
    run_probe!(Hook::SockAddr, save(ctx.arg::<u64>(1)))
}

#[fentry(function = "security_socket_bind")]
pub fn sockaddr_bind_fentry(ctx: FEntryContext) -> u32 {
    run_probe!(Hook::SockAddr, save(ctx.arg::<u64>(1)))
}
