//! Removing a `clsact` qdisc through rtnetlink (`RTM_DELQDISC`), which aya does not offer.
//!
//! On kernels without TCX (before 6.6) the TC classifiers are netlink filters on a `clsact`
//! qdisc that the sensor adds where none exists. The filters go with the sensor's programs,
//! the qdisc would not: the sensor deletes the ones it added when it stops.

use std::io;

/// `TC_H_CLSACT` (== `TC_H_INGRESS`), the clsact qdisc's parent.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: the clsact qdisc's handle.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
const TCA_KIND: u16 = 1;

/// Deletes the `clsact` qdisc of interface `ifindex` in the calling thread's network namespace.
pub fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let request = del_clsact_message(ifindex, 1);
    // SAFETY: plain socket calls on a descriptor owned here and closed below.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = exchange(fd, &request);
        libc::close(fd);
        result
    }
}

/// Sends `request` to the kernel and reads its acknowledgement.
unsafe fn exchange(fd: i32, request: &[u8]) -> io::Result<()> {
    // SAFETY (whole body): `fd` is a netlink socket; the buffers outlive the calls.
    unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut reply = [0u8; 1024];
        let got = libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0);
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        ack_result(&reply[..got as usize])
    }
}

/// `nlmsghdr` + `tcmsg` + a `TCA_KIND` attribute "clsact".
fn del_clsact_message(ifindex: u32, seq: u32) -> Vec<u8> {
    let kind = b"clsact\0";
    let attr_len = 4 + kind.len();
    let attr_padded = attr_len.next_multiple_of(4);
    let total = 16 + 20 + attr_padded;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&libc::RTM_DELQDISC.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    // struct tcmsg
    m.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&CLSACT_HANDLE.to_ne_bytes());
    m.extend_from_slice(&TC_H_CLSACT.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtattr + "clsact\0", padded to 4 bytes
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&TCA_KIND.to_ne_bytes());
    m.extend_from_slice(kind);
    m.resize(total, 0);
    m
}

/// The error code of an `NLMSG_ERROR` acknowledgement (0 is success).
fn ack_result(reply: &[u8]) -> io::Result<()> {
    let field = |at: usize| -> Option<[u8; 4]> { reply.get(at..at + 4)?.try_into().ok() };
    let msg_type = reply
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or_else(|| io::Error::other("short netlink reply"))?;
    if msg_type != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {msg_type}"
        )));
    }
    let code = field(16)
        .map(i32::from_ne_bytes)
        .ok_or_else(|| io::Error::other("short netlink error message"))?;
    match code {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let m = del_clsact_message(7, 3);
        assert_eq!(m.len(), 48);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 37); // RTM_DELQDISC
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_ne_bytes(m[28..32].try_into().unwrap()),
            TC_H_CLSACT
        );
        assert_eq!(&m[40..47], b"clsact\0");
    }

    #[test]
    fn ack_codes() {
        let mut reply = vec![0u8; 36];
        reply[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(ack_result(&reply).is_ok());
        reply[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let err = ack_result(&reply).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert!(ack_result(&[0u8; 3]).is_err());
    }

    /// Needs root: a clsact qdisc added (as the sensor does on old kernels) on the loopback of
    /// a fresh network namespace is deleted, and a second delete finds none.
    #[test]
    fn deletes_a_real_clsact_qdisc_in_a_private_namespace() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            // SAFETY: only this thread moves to the new namespace; it ends afterwards.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            aya::programs::tc::qdisc_add_clsact("lo").expect("adding clsact to lo");
            let lo = 1;
            delete_clsact(lo).expect("deleting clsact");
            let again = delete_clsact(lo).expect_err("a second delete finds nothing");
            assert!(
                matches!(again.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)),
                "{again}"
            );
        })
        .join()
        .unwrap();
    }
}
