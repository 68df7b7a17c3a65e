//! `pipe-relay [--via pipes|socketpair|pty] HOST PORT PROGRAM`: what ncat's `-e`, socat's
//! `EXEC:` and socat's or python's pty relays do, under a name no rule knows: connects to
//! HOST:PORT, runs PROGRAM with its stdin, stdout and stderr on pipes (default), on one end of
//! a Unix socket pair, or on the terminal side of a pseudo-terminal (never the connection
//! itself), and copies the connection to it and its output back. Exits with the program, at
//! most 20 s after it started.

use std::{
    fs::File,
    io::{self, Read, Write},
    net::TcpStream,
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

const LIMIT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let via = match args.first().map(String::as_str) {
        Some("--via") if args.len() > 1 => {
            let via = args[1].clone();
            args.drain(..2);
            via
        }
        _ => "pipes".to_string(),
    };
    let [host, port, program] = args.as_slice() else {
        eprintln!("usage: pipe-relay [--via pipes|socketpair|pty] HOST PORT PROGRAM");
        return ExitCode::from(2);
    };
    let result =
        TcpStream::connect(format!("{host}:{port}")).and_then(|socket| match via.as_str() {
            "pipes" => pipes(socket, program),
            "socketpair" => socketpair(socket, program),
            "pty" => pty(socket, program),
            other => Err(io::Error::other(format!("unknown --via {other}"))),
        });
    match result {
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

fn pipes(socket: TcpStream, program: &str) -> io::Result<()> {
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
    wait(child)
}

/// The program on one end of a socket pair, the relay on the other (socat's `EXEC:`).
fn socketpair(socket: TcpStream, program: &str) -> io::Result<()> {
    let (ours, theirs) = UnixStream::pair()?;
    let child = on_stdio(program, OwnedFd::from(theirs))?;
    let input = ours.try_clone()?;
    relay_both_ways(socket, input, ours, |s| {
        let _ = s.shutdown(std::net::Shutdown::Write);
    })?;
    wait(child)
}

/// The program on a pseudo-terminal's terminal side, the relay on its other side.
fn pty(socket: TcpStream, program: &str) -> io::Result<()> {
    // SAFETY: plain libc calls on a descriptor this function owns; ptsname_r writes at most
    // `name.len()` bytes.
    let (master, terminal) = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(fd);
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        (master, File::options().read(true).write(true).open(path)?)
    };
    let child = on_stdio(program, OwnedFd::from(terminal))?;
    let master = File::from(master);
    // The end of the input is the terminal's end-of-file character, as typed.
    relay_both_ways(socket, master.try_clone()?, master, |m| {
        let _ = m.write_all(b"\n\x04");
    })?;
    wait(child)
}

/// Runs `program` with `channel` on its stdin, stdout and stderr.
fn on_stdio(program: &str, channel: OwnedFd) -> io::Result<Child> {
    Command::new(program)
        .stdin(Stdio::from(channel.try_clone()?))
        .stdout(Stdio::from(channel.try_clone()?))
        .stderr(Stdio::from(channel))
        .spawn()
}

/// Copies the connection to the program and its output back; `end` tells the program the
/// input ended (closing one handle of a shared channel does not).
fn relay_both_ways<W: Write + Send + 'static>(
    socket: TcpStream,
    mut to_program: W,
    from_program: impl Read + Send + 'static,
    end: impl FnOnce(&mut W) + Send + 'static,
) -> io::Result<()> {
    let input = socket.try_clone()?;
    thread::spawn(move || {
        pump(input, &mut to_program);
        end(&mut to_program);
    });
    thread::spawn(move || pump(from_program, socket));
    Ok(())
}

fn wait(mut child: Child) -> io::Result<()> {
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
