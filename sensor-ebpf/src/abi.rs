//! Numbers of the kernel's user ABI the probes compare against: address families, socket
//! types, IP protocols, map update flags (the same on every kernel).

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const AF_PACKET: u16 = 17;
pub const SOCK_STREAM: u16 = 1;
pub const SOCK_DGRAM: u16 = 2;
pub const SOCK_RAW: u16 = 3;
pub const IPPROTO_TCP: u16 = 6;
/// `bpf_map_update_elem`: only where the key has no value yet.
pub const BPF_NOEXIST: u64 = 1;
