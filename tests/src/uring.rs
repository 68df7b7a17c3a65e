//! One io_uring request at a time, for the test programs that reach the network only through
//! io_uring (`uring-ping`, `uring-tcp`).

use std::{io, time::Duration};

use io_uring::{IoUring, opcode, squeue, types};

/// Submits `entry` (linked to a timeout when given) and returns its result.
pub fn complete(
    ring: &mut IoUring,
    entry: squeue::Entry,
    timeout: Option<Duration>,
) -> io::Result<u32> {
    let ts = timeout.map(|t| types::Timespec::new().sec(t.as_secs()));
    let entry = entry.user_data(1);
    // SAFETY: the buffers the entries point to live until their completions are reaped below.
    unsafe {
        match &ts {
            Some(ts) => {
                ring.submission()
                    .push(&entry.flags(squeue::Flags::IO_LINK))
                    .map_err(io::Error::other)?;
                ring.submission()
                    .push(&opcode::LinkTimeout::new(ts).build().user_data(2))
                    .map_err(io::Error::other)?;
            }
            None => ring.submission().push(&entry).map_err(io::Error::other)?,
        }
    }
    let wanted = if ts.is_some() { 2 } else { 1 };
    ring.submit_and_wait(wanted)?;
    let mut result = None;
    for cqe in ring.completion() {
        if cqe.user_data() == 1 {
            result = Some(cqe.result());
        }
    }
    match result {
        Some(r) if r >= 0 => Ok(r as u32),
        Some(r) if r == -libc::ECANCELED => Err(io::Error::other("timed out")),
        Some(r) => Err(io::Error::from_raw_os_error(-r)),
        None => Err(io::Error::other("no completion")),
    }
}
