//! Which of a process's fds 0-2 are sockets, read from its fd table at exec and at fork: a
//! reverse shell's stdio is a socket whichever call put it there (dup2, dup3, fcntl, an
//! io_uring request, inheritance), and no hook sits on the dup syscalls. At exec, the other
//! channels a relay can use are kept too, as inodes: pipes and FIFOs (user space joins the two
//! ends of a pipe to see a shell relayed through a pipeline or a `mkfifo` loop), Unix sockets
//! (one end of a socket pair, socat's `EXEC:`) and a pty's terminal side (a relay holding the
//! other side: `pty.spawn`, socat's `pty`).

use sensor_common::{Endpoint, STDIO_PTY_SHIFT};

use crate::{
    abi::AF_UNIX,
    kernel::{self, FdTable, FileKind, ReadResult, read},
    maps::off,
};

/// Bit N of the result is set when `task`'s fd N (0-2) is a socket, bit `STDIO_PTY_SHIFT + N`
/// when it is a pty's terminal side; `peer` gets the first socket's peer. With `relay`,
/// `relay[N]` gets the inode of fd N when it is a pipe, FIFO, Unix socket or pty. `task` (typed
/// from BTF) is read by plain loads as far as the fd array; the files through the helper.
#[inline(always)]
pub fn sockets(
    task: *const u8,
    peer: &mut Endpoint,
    mut relay: Option<&mut [u64; 3]>,
) -> ReadResult<u32> {
    // A task without a file table (exiting) has no stdio: not an error.
    let Ok(fds) = FdTable::of(task) else {
        return Ok(0);
    };
    let mut mask = 0;
    for fd in 0..3 {
        // A closed fd is not an error.
        let Ok(file) = fds.file(fd) else {
            continue;
        };
        if file.is_null() {
            continue;
        }
        let channel = match kernel::file_kind(file)? {
            FileKind::Fifo(ino) => ino,
            FileKind::Socket(sk, ino) => {
                if mask & 0b111 == 0 {
                    let mut local = Endpoint::default();
                    kernel::sock_endpoints::<kernel::Probed>(sk, &mut local, peer)?;
                }
                mask |= 1 << fd;
                if relay.is_some() && read::<u16>(sk, off!(sk_family))? == AF_UNIX {
                    ino
                } else {
                    0
                }
            }
            FileKind::Pty(ino) if relay.is_some() => {
                mask |= 1 << (STDIO_PTY_SHIFT + fd);
                ino
            }
            FileKind::Pty(_) | FileKind::Other => 0,
        };
        if let Some(relay) = relay.as_deref_mut() {
            relay[fd as usize] = channel;
        }
    }
    Ok(mask)
}
