//! `uring-tcp server PORT` / `uring-tcp client IPV4 PORT [BYTES HOLD_SECS]`: a TCP server and
//! client that make every socket operation through io_uring requests (`IORING_OP_SOCKET`,
//! `BIND`, `LISTEN`, `ACCEPT`, `RECV`; `SOCKET`, `CONNECT`, `SEND`), never through the socket
//! syscalls: what sensors hooking those syscalls do not see. The server takes one connection,
//! reads until the client closes it and exits 0; the client connects, sends one message (or
//! BYTES bytes, then keeps the connection open HOLD_SECS seconds) and exits 0. Each request
//! gives up after 20 s (the server's wait for the close: after 120 s).
//!
//! The server's requests run inline, in its own thread; the client asks for its socket and
//! connect to run in io_uring's worker threads (`IOSQE_ASYNC`), the other way a request is
//! carried out, which a sensor can tell from the task that runs it.
//!
//! `IORING_OP_BIND` and `IORING_OP_LISTEN` came in Linux 6.11: on older kernels (Debian 12's
//! 6.1) the server binds and listens by syscall and says so on stderr; socket, accept, recv,
//! connect and send stay io_uring requests there.

use std::{io, mem, net::Ipv4Addr, process::ExitCode, time::Duration};

use io_uring::{IoUring, Probe, opcode, squeue, types};
use sensor_tests::uring::complete;

const LIMIT: Duration = Duration::from_secs(20);
/// How long the server waits for the client to close (a client may hold its connection).
const CLOSE_LIMIT: Duration = Duration::from_secs(120);
/// Bytes per send request.
const CHUNK: usize = 64 << 10;

/// What the client sends and how long it then keeps the connection open.
struct Volume {
    bytes: u64,
    hold: Duration,
}

fn volume(args: &[String]) -> Result<Option<Volume>, std::num::ParseIntError> {
    match args {
        [bytes, hold] => Ok(Some(Volume {
            bytes: bytes.parse()?,
            hold: Duration::from_secs(hold.parse()?),
        })),
        _ => Ok(None),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match (args.get(1).map(String::as_str), args.len()) {
        (Some("server"), 3) => args[2].parse().map_err(io::Error::other).and_then(server),
        (Some("client"), 4 | 6) => match (args[2].parse(), args[3].parse(), volume(&args[4..])) {
            (Ok(ip), Ok(port), Ok(volume)) => client(ip, port, volume),
            _ => Err(io::Error::other("bad address, port, byte count or hold")),
        },
        _ => {
            eprintln!(
                "usage: uring-tcp server PORT | uring-tcp client IPV4 PORT [BYTES HOLD_SECS]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uring-tcp: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_in = unsafe { mem::zeroed() };
    addr.sin_family = libc::AF_INET as u16;
    addr.sin_port = port.to_be();
    addr.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
    addr
}

const ADDR_LEN: u32 = mem::size_of::<libc::sockaddr_in>() as u32;

/// A TCP socket, created by an io-wq worker when `flags` holds `ASYNC`.
fn tcp_socket(ring: &mut IoUring, flags: squeue::Flags) -> io::Result<types::Fd> {
    let socket = opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
        .build()
        .flags(flags);
    Ok(types::Fd(complete(ring, socket, Some(LIMIT))? as i32))
}

fn server(port: u16) -> io::Result<()> {
    let mut ring = IoUring::new(8)?;
    let fd = tcp_socket(&mut ring, squeue::Flags::empty())?;
    let addr = sockaddr(Ipv4Addr::UNSPECIFIED, port);
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    if probe.is_supported(opcode::Bind::CODE) && probe.is_supported(opcode::Listen::CODE) {
        let bind = opcode::Bind::new(fd, (&raw const addr).cast(), ADDR_LEN).build();
        complete(&mut ring, bind, Some(LIMIT))?;
        complete(&mut ring, opcode::Listen::new(fd, 4).build(), Some(LIMIT))?;
    } else {
        eprintln!(
            "uring-tcp: no IORING_OP_BIND/LISTEN on this kernel (before 6.11): bind and listen by syscall"
        );
        // SAFETY: fd is this process's socket and addr a sockaddr_in of ADDR_LEN bytes.
        if unsafe { libc::bind(fd.0, (&raw const addr).cast(), ADDR_LEN) } != 0
            || unsafe { libc::listen(fd.0, 4) } != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let accept = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut()).build();
    let conn = types::Fd(complete(&mut ring, accept, Some(LIMIT))? as i32);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let recv = opcode::Recv::new(conn, buf.as_mut_ptr(), buf.len() as u32).build();
        if complete(&mut ring, recv, Some(CLOSE_LIMIT))? == 0 {
            return Ok(());
        }
    }
}

fn client(ip: Ipv4Addr, port: u16, volume: Option<Volume>) -> io::Result<()> {
    let mut ring = IoUring::new(8)?;
    let fd = tcp_socket(&mut ring, squeue::Flags::ASYNC)?;
    let addr = sockaddr(ip, port);
    let connect = opcode::Connect::new(fd, (&raw const addr).cast(), ADDR_LEN)
        .build()
        .flags(squeue::Flags::ASYNC);
    complete(&mut ring, connect, Some(LIMIT))?;
    let Some(Volume { bytes, hold }) = volume else {
        let msg = b"hello over io_uring\n";
        let send = opcode::Send::new(fd, msg.as_ptr(), msg.len() as u32).build();
        complete(&mut ring, send, Some(LIMIT))?;
        return Ok(());
    };
    let chunk = vec![b'x'; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as u32;
        let send = opcode::Send::new(fd, chunk.as_ptr(), n).build();
        left -= complete(&mut ring, send, Some(LIMIT))? as u64;
    }
    std::thread::sleep(hold);
    Ok(())
}
