//! `memfd-exec memfd|tmpfile PROGRAM [ARGS...]`: fileless execution, the way droppers do it.
//! `memfd` copies PROGRAM into an anonymous memory file (`memfd_create("payload")`); `tmpfile`
//! into an unnamed file in /tmp (`O_TMPFILE`). Either way the copy never has a path, and it is
//! executed through its fd (`fexecve`: `execveat(fd, "", AT_EMPTY_PATH)`), with ARGS as argv.
//! The copy is reopened read-only first: exec refuses a file open for writing (ETXTBSY).

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd},
    process::ExitCode,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(how), Some(program)) = (args.first(), args.get(1)) else {
        eprintln!("usage: memfd-exec memfd|tmpfile PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let argv = if args.len() > 2 {
        &args[2..]
    } else {
        &args[1..2]
    };
    match run(how, program, argv) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("memfd-exec: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Never {}

fn run(how: &str, program: &str, argv: &[String]) -> io::Result<Never> {
    let fd = match how {
        // SAFETY: a NUL-terminated name; the flags are valid for memfd_create.
        "memfd" => unsafe { libc::memfd_create(c"payload".as_ptr(), 0) },
        // SAFETY: a NUL-terminated directory path and valid open flags.
        "tmpfile" => unsafe { libc::open(c"/tmp".as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o700) },
        _ => return Err(io::Error::other("the first argument is memfd or tmpfile")),
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd this process owns.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    io::copy(&mut File::open(program)?, &mut copy)?;
    let exec = File::open(format!("/proc/self/fd/{}", copy.as_raw_fd()))?;
    drop(copy);
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(io::Error::other))
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings that outlive
    // the call; fexecve returns only on failure.
    unsafe { libc::fexecve(exec.as_raw_fd(), ptrs.as_ptr(), env.as_ptr()) };
    Err(io::Error::last_os_error())
}
