//! Which of a process's fds 0-2 are sockets, read from its fd table at exec and at fork: a
//! reverse shell's stdio is a socket whichever call put it there (dup2, dup3, fcntl, an
//! io_uring request, inheritance), and no hook sits on the dup syscalls. At exec, the pipes
//! and FIFOs on fds 0-2 are kept too (their inodes): user space joins the two ends of a pipe
//! to see a shell relayed to the network through a pipeline or a `mkfifo` loop.

use sensor_common::Endpoint;

use crate::kernel::{self, ReadResult};

/// Bit N of the result is set when `task`'s fd N (0-2) is a socket; `peer` gets the first
/// socket's peer. With `pipes`, `pipes[N]` gets the inode of fd N when it is a pipe or FIFO.
#[inline(always)]
pub fn sockets(
    task: *const u8,
    peer: &mut Endpoint,
    mut pipes: Option<&mut [u64; 3]>,
) -> ReadResult<u32> {
    let mut mask = 0;
    for fd in 0..3 {
        // A closed fd is not an error.
        let Ok(file) = kernel::fd_file(task, fd) else {
            continue;
        };
        if file.is_null() {
            continue;
        }
        if let Some(pipes) = pipes.as_deref_mut() {
            pipes[fd as usize] = kernel::file_fifo(file)?.unwrap_or(0);
        }
        if let Some(sk) = kernel::file_sock(file)? {
            if mask == 0 {
                let mut local = Endpoint::default();
                kernel::sock_endpoints(sk, &mut local, peer)?;
            }
            mask |= 1 << fd;
        }
    }
    Ok(mask)
}
