//! TCP connection storms from one process:
//! - `connect-loop storm HOST PORT COUNT PAUSE_MS HOST2 PORT2`: a client storming one
//!   service, as a load generator or a connection pool does: COUNT connections to HOST:PORT,
//!   each closed at once; then, after PAUSE_MS, one more to it and one to HOST2:PORT2. Every
//!   connection must be accepted.
//! - `connect-loop serve SECONDS PORT...`: a server that keeps up with such a client: accepts
//!   on each PORT (all addresses) and closes at once, with std's backlog of 128 (busybox
//!   httpd's 9 overflows under a storm, and the kernel then delays connections by seconds of
//!   retransmits); exits after SECONDS.
//! - `connect-loop scan HOST FIRST_PORT COUNT SECONDS`: a port scan, one connect to each of
//!   COUNT ports from FIRST_PORT on (refusals expected), until done or SECONDS have passed.
//! - `connect-loop send-once PORT BYTES`: a server that accepts one connection on PORT, closes
//!   its listener, then sends BYTES (at most 64 MiB) and closes the connection: a connection
//!   that outlives its listener.
//!
//! Each connect gives up after 10 s.

use std::{
    io::Write,
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

const LIMIT: Duration = Duration::from_secs(10);
const USAGE: &str = "usage: connect-loop storm HOST PORT COUNT PAUSE_MS HOST2 PORT2 | \
                     connect-loop scan HOST FIRST_PORT COUNT SECONDS | \
                     connect-loop serve SECONDS PORT... | \
                     connect-loop send-once PORT BYTES";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["storm", host, port, count, pause_ms, host2, port2] => {
            match (count.parse(), pause_ms.parse()) {
                (Ok(count), Ok(pause_ms)) => storm(host, port, count, pause_ms, host2, port2),
                _ => Err(std::io::Error::other("COUNT and PAUSE_MS must be numbers")),
            }
        }
        ["scan", host, first, count, seconds] => {
            match (first.parse(), count.parse(), seconds.parse()) {
                (Ok(first), Ok(count), Ok(seconds)) => scan(host, first, count, seconds),
                _ => Err(std::io::Error::other(
                    "FIRST_PORT, COUNT and SECONDS must be numbers",
                )),
            }
        }
        ["serve", seconds, ports @ ..] if !ports.is_empty() => match seconds.parse() {
            Ok(seconds) => serve(seconds, ports),
            Err(_) => Err(std::io::Error::other("SECONDS must be a number")),
        },
        ["send-once", port, bytes] => match bytes.parse() {
            Ok(bytes) => send_once(port, bytes),
            Err(_) => Err(std::io::Error::other("BYTES must be a number")),
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connect-loop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn storm(
    host: &str,
    port: &str,
    count: u32,
    pause_ms: u64,
    host2: &str,
    port2: &str,
) -> std::io::Result<()> {
    let target = address(host, port)?;
    for _ in 0..count.min(100_000) {
        TcpStream::connect_timeout(&target, LIMIT)?;
    }
    thread::sleep(Duration::from_millis(pause_ms));
    TcpStream::connect_timeout(&target, LIMIT)?;
    TcpStream::connect_timeout(&address(host2, port2)?, LIMIT)?;
    Ok(())
}

fn scan(host: &str, first: u16, count: u16, seconds: u64) -> std::io::Result<()> {
    let until = Instant::now() + Duration::from_secs(seconds.min(60));
    for port in (first..=u16::MAX).take(count as usize) {
        if Instant::now() >= until {
            break;
        }
        // Refused or accepted, either way the next port.
        let _ = TcpStream::connect_timeout(&address(host, &port.to_string())?, LIMIT);
    }
    Ok(())
}

fn serve(seconds: u64, ports: &[&str]) -> std::io::Result<()> {
    for port in ports {
        let listener = TcpListener::bind(address("0.0.0.0", port)?)?;
        thread::spawn(move || {
            for connection in listener.incoming() {
                drop(connection);
            }
        });
    }
    thread::sleep(Duration::from_secs(seconds.min(600)));
    Ok(())
}

fn send_once(port: &str, bytes: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(address("0.0.0.0", port)?)?;
    let (mut connection, _) = listener.accept()?;
    drop(listener);
    connection.set_write_timeout(Some(LIMIT))?;
    let chunk = [0x5a_u8; 64 * 1024];
    let mut left = bytes.min(64 << 20);
    while left > 0 {
        let n = left.min(chunk.len());
        connection.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

fn address(host: &str, port: &str) -> std::io::Result<SocketAddr> {
    format!("{host}:{port}")
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host}:{port} resolves to nothing")))
}
