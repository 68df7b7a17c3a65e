//! `uring-ping ADDR COUNT BYTE`: ICMP echo requests to an IPv4 address with a payload of 56
//! copies of BYTE (hex), sent and received only through io_uring (`IORING_OP_SENDMSG`,
//! `IORING_OP_RECVMSG`) on a raw socket: a ping that no sendto/recvmsg syscall ever carries,
//! which sensors hooking those syscalls do not see. The tests run it in a container. Exits 0
//! when every request got its reply within 2 s.

use std::{io, mem, net::Ipv4Addr, process::ExitCode, time::Duration};

use io_uring::{IoUring, opcode, types};
use sensor_tests::uring::complete;

const PAYLOAD: usize = 56;
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let addr: Ipv4Addr = args.get(1)?.parse().ok()?;
        let count: u16 = args.get(2)?.parse().ok()?;
        let byte = u8::from_str_radix(args.get(3)?.trim_start_matches("0x"), 16).ok()?;
        Some((addr, count, byte))
    })();
    let Some((addr, count, byte)) = parsed else {
        eprintln!("usage: uring-ping IPV4 COUNT BYTE(hex)");
        return ExitCode::from(2);
    };
    match ping(addr, count, byte) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uring-ping: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(id: u16, seq: u16, byte: u8) -> [u8; 8 + PAYLOAD] {
    let mut msg = [byte; 8 + PAYLOAD];
    msg[..8].copy_from_slice(&[ECHO_REQUEST, 0, 0, 0, 0, 0, 0, 0]);
    msg[4..6].copy_from_slice(&id.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    let sum = checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

fn ping(addr: Ipv4Addr, count: u16, byte: u8) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is closed when the process exits.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ring = IoUring::new(8)?;
    let id = std::process::id() as u16;
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut dest: libc::sockaddr_in = unsafe { mem::zeroed() };
    dest.sin_family = libc::AF_INET as u16;
    dest.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
    for seq in 1..=count {
        let mut request = echo_request(id, seq, byte);
        let mut iov = libc::iovec {
            iov_base: request.as_mut_ptr().cast(),
            iov_len: request.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&raw mut dest).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        let sent = complete(
            &mut ring,
            opcode::SendMsg::new(types::Fd(fd), &msg).build(),
            None,
        )?;
        if sent as usize != request.len() {
            return Err(io::Error::other(format!("short send: {sent} bytes")));
        }
        wait_reply(&mut ring, fd, id, seq)?;
    }
    Ok(())
}

/// Receives until the echo reply `(id, seq)` arrives (a raw socket also gets other ICMP).
fn wait_reply(ring: &mut IoUring, fd: i32, id: u16, seq: u16) -> io::Result<()> {
    loop {
        let mut buf = [0u8; 1500];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        let got = complete(
            ring,
            opcode::RecvMsg::new(types::Fd(fd), &mut msg).build(),
            Some(REPLY_TIMEOUT),
        )? as usize;
        // A raw IPv4 socket delivers the IP header first.
        let icmp = &buf[((buf[0] & 0xf) as usize * 4).min(got)..got];
        if icmp.len() >= 8
            && icmp[0] == ECHO_REPLY
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(());
        }
    }
}
