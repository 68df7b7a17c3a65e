//! Numbers from the kernel to the names people search for: families, socket types, errnos,
//! TCP states, namespace flags, ICMP types, payload patterns.

use sensor_common::{
    CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME,
    CLONE_NEWUSER, CLONE_NEWUTS, Endpoint,
};
use sensor_proto as pb;

pub fn family(f: u16) -> String {
    match f {
        0 => String::new(),
        1 => "unix".into(),
        2 => "inet".into(),
        10 => "inet6".into(),
        16 => "netlink".into(),
        17 => "packet".into(),
        n => n.to_string(),
    }
}

pub fn sock_type(t: u16) -> String {
    match t {
        0 => String::new(),
        1 => "stream".into(),
        2 => "dgram".into(),
        3 => "raw".into(),
        5 => "seqpacket".into(),
        n => n.to_string(),
    }
}

pub fn protocol(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

const ERRNOS: &[(i64, &str)] = &[
    (1, "EPERM"),
    (2, "ENOENT"),
    (3, "ESRCH"),
    (4, "EINTR"),
    (7, "E2BIG"),
    (9, "EBADF"),
    (11, "EAGAIN"),
    (12, "ENOMEM"),
    (13, "EACCES"),
    (14, "EFAULT"),
    (16, "EBUSY"),
    (19, "ENODEV"),
    (22, "EINVAL"),
    (24, "EMFILE"),
    (38, "ENOSYS"),
    (88, "ENOTSOCK"),
    (93, "EPROTONOSUPPORT"),
    (95, "EOPNOTSUPP"),
    (97, "EAFNOSUPPORT"),
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (101, "ENETUNREACH"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (106, "EISCONN"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (113, "EHOSTUNREACH"),
    (114, "EALREADY"),
    (115, "EINPROGRESS"),
];

/// The errno name of a negative return value; empty for success.
pub fn errno(ret: i64) -> String {
    if ret >= 0 {
        return String::new();
    }
    ERRNOS
        .iter()
        .find(|(n, _)| *n == -ret)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("errno {}", -ret))
}

pub fn tcp_state(s: u32) -> String {
    const STATES: [&str; 13] = [
        "",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    STATES
        .get(s as usize)
        .map(|n| n.to_string())
        .unwrap_or_else(|| s.to_string())
}

/// Namespace types by `CLONE_NEW*` flag, in `/proc/PID/ns` naming.
pub const NS_FLAGS: [(u64, &str); 8] = [
    (CLONE_NEWNS, "mnt"),
    (CLONE_NEWCGROUP, "cgroup"),
    (CLONE_NEWUTS, "uts"),
    (CLONE_NEWIPC, "ipc"),
    (CLONE_NEWUSER, "user"),
    (CLONE_NEWPID, "pid"),
    (CLONE_NEWNET, "net"),
    (CLONE_NEWTIME, "time"),
];

pub fn ns_types(flags: u64) -> Vec<String> {
    NS_FLAGS
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

pub fn icmp_type(family: u16, t: u8) -> String {
    match (family, t) {
        (10, 128) => "echo_request".into(),
        (10, 129) => "echo_reply".into(),
        (10, _) => format!("icmpv6_{t}"),
        (_, 8) => "echo_request".into(),
        (_, 0) => "echo_reply".into(),
        (_, 3) => "dest_unreachable".into(),
        (_, 11) => "time_exceeded".into(),
        _ => format!("icmp_{t}"),
    }
}

/// What a ping payload looks like: the standard patterns are a timestamp followed by
/// incrementing bytes (iputils) or one repeated fill byte (busybox, or `ping -p`); anything else
/// may be data.
pub fn payload_pattern(sample: &[u8]) -> String {
    if sample.is_empty() {
        return "empty".into();
    }
    if sample.iter().all(|&b| b == sample[0]) {
        return format!("repeating-byte-{:02x}", sample[0]);
    }
    // iputils fills data[i] = i, then writes a struct timeval (8 or 16 bytes) over the start.
    for ts in [8usize, 16] {
        if sample.len() > ts
            && sample
                .iter()
                .enumerate()
                .skip(ts)
                .all(|(i, &b)| b == i as u8)
        {
            return "ping-timestamp-incrementing".into();
        }
    }
    // busybox: an 8- or 16-byte timestamp, then its fill byte.
    for ts in [8usize, 16] {
        if sample.len() > ts + 1 && sample[ts..].iter().all(|&b| b == sample[ts]) {
            return format!("timestamp-then-repeating-byte-{:02x}", sample[ts]);
        }
    }
    "other".into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An endpoint as the schema shows it.
pub fn endpoint(e: &Endpoint) -> Option<pb::Endpoint> {
    if e.family == 0 && e.port == 0 {
        return None;
    }
    let address = match e.family {
        2 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&e.addr[..4]).unwrap()).to_string(),
        10 => std::net::Ipv6Addr::from(e.addr).to_string(),
        _ => String::new(),
    };
    Some(pb::Endpoint {
        address,
        port: e.port as u32,
        family: family(e.family),
    })
}

/// Namespace inodes as the schema carries them.
pub fn namespaces(ns: &sensor_common::Namespaces) -> pb::Namespaces {
    pb::Namespaces {
        mnt: ns.mnt,
        pid: ns.pid,
        net: ns.net,
        uts: ns.uts,
        ipc: ns.ipc,
        user: ns.user,
        cgroup: ns.cgroup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno(-111), "ECONNREFUSED");
        assert_eq!(errno(-115), "EINPROGRESS");
        assert_eq!(errno(-999), "errno 999");
        assert_eq!(errno(3), "");
        assert_eq!(tcp_state(1), "ESTABLISHED");
        assert_eq!(tcp_state(10), "LISTEN");
        assert_eq!(ns_types(0x4000_0000 | 0x0400_0000), ["uts", "net"]);
        assert_eq!(icmp_type(2, 8), "echo_request");
        assert_eq!(icmp_type(10, 129), "echo_reply");
        assert_eq!(sock_type(3), "raw");
        assert_eq!(family(17), "packet");
    }

    #[test]
    fn endpoints() {
        let mut e = Endpoint {
            family: 2,
            port: 8080,
            ..Default::default()
        };
        e.addr[..4].copy_from_slice(&[172, 17, 0, 2]);
        let p = endpoint(&e).unwrap();
        assert_eq!(
            (p.address.as_str(), p.port, p.family.as_str()),
            ("172.17.0.2", 8080, "inet")
        );
        let mut v6 = Endpoint {
            family: 10,
            port: 1,
            ..Default::default()
        };
        v6.addr[15] = 1;
        assert_eq!(endpoint(&v6).unwrap().address, "::1");
        assert!(endpoint(&Endpoint::default()).is_none());
    }

    #[test]
    fn payload_patterns() {
        let mut iputils: Vec<u8> = (0..56u8).collect();
        iputils[..16].copy_from_slice(&[7; 16]);
        assert_eq!(payload_pattern(&iputils), "ping-timestamp-incrementing");
        assert_eq!(payload_pattern(&[0xff; 56]), "repeating-byte-ff");
        assert_eq!(payload_pattern(&[0x41; 64]), "repeating-byte-41");
        let mut bb = vec![3u8; 8];
        bb.extend([0xff; 48]);
        assert_eq!(payload_pattern(&bb), "timestamp-then-repeating-byte-ff");
        assert_eq!(
            payload_pattern(b"cat /etc/passwd; id; uname -a ......"),
            "other"
        );
        assert_eq!(payload_pattern(&[]), "empty");
    }
}
