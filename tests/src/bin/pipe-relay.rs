//! `pipe-relay HOST PORT PROGRAM`: what ncat's `-e` and socat's `EXEC:` do, under a name no
//! rule knows: connects to HOST:PORT, runs PROGRAM with its stdin, stdout and stderr on pipes
//! (never the socket), and copies the connection to its stdin and its output back. Exits with
//! the program, at most 20 s after it started.

use std::{
    io::{self, Read, Write},
    net::TcpStream,
    process::{Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

const LIMIT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, program] = args.as_slice() else {
        eprintln!("usage: pipe-relay HOST PORT PROGRAM");
        return ExitCode::from(2);
    };
    match relay(host, port, program) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipe-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Copies `from` to `to` until either side closes.
fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn relay(host: &str, port: &str, program: &str) -> io::Result<()> {
    let socket = TcpStream::connect(format!("{host}:{port}"))?;
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (stdin, stdout, stderr) = (
        child.stdin.take().expect("piped stdin"),
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    let input = socket.try_clone()?;
    let (output, errors) = (socket.try_clone()?, socket);
    thread::spawn(move || pump(input, stdin));
    thread::spawn(move || pump(stdout, output));
    thread::spawn(move || pump(stderr, errors));
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if started.elapsed() > LIMIT {
            child.kill()?;
            return Err(io::Error::other("the program ran past 20 s"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}
