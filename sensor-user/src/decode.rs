//! Raw ring buffer records to typed records, checking version, kind and size first.

use std::mem::size_of;

use sensor_common::{
    CgroupRecord, ExecRecord, ExitRecord, ForkRecord, NsRecord, RECORD_VERSION, RecordHeader,
    RecordKind, SockRecord, TamperRecord, TcpStateRecord,
};

/// A record as the kernel wrote it.
pub enum Record {
    Exec(Box<ExecRecord>),
    Fork(ForkRecord),
    Exit(ExitRecord),
    CgroupMkdir(Box<CgroupRecord>),
    CgroupRmdir(Box<CgroupRecord>),
    Sock(SockRecord),
    Ns(NsRecord),
    TcpState(TcpStateRecord),
    Tamper(TamperRecord),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error(
        "record version {got}, this agent reads version {RECORD_VERSION}: agent and eBPF object are from different builds"
    )]
    Version { got: u16 },
    #[error("unknown record kind {0}")]
    Kind(u16),
    #[error("{kind:?} record of {got} bytes, expected {want}")]
    Size {
        kind: RecordKind,
        got: usize,
        want: usize,
    },
}

fn read<T: Copy>(bytes: &[u8], kind: RecordKind) -> Result<T, DecodeError> {
    if bytes.len() != size_of::<T>() {
        return Err(DecodeError::Size {
            kind,
            got: bytes.len(),
            want: size_of::<T>(),
        });
    }
    // SAFETY: length checked; T is a repr(C) integer-only record valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// The kernel timestamp (`CLOCK_BOOTTIME` ns) of a raw record; 0 when too short to have one.
pub fn timestamp(bytes: &[u8]) -> u64 {
    if bytes.len() < size_of::<RecordHeader>() {
        return 0;
    }
    // SAFETY: length checked above.
    let header: RecordHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const _) };
    header.boot_ns
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<RecordHeader>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked above.
    let header: RecordHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const _) };
    if header.version != RECORD_VERSION {
        return Err(DecodeError::Version {
            got: header.version,
        });
    }
    let kind = RecordKind::from_u16(header.kind).ok_or(DecodeError::Kind(header.kind))?;
    Ok(match kind {
        RecordKind::Exec => Record::Exec(Box::new(read(bytes, kind)?)),
        RecordKind::Fork => Record::Fork(read(bytes, kind)?),
        RecordKind::Exit => Record::Exit(read(bytes, kind)?),
        RecordKind::CgroupMkdir => Record::CgroupMkdir(Box::new(read(bytes, kind)?)),
        RecordKind::CgroupRmdir => Record::CgroupRmdir(Box::new(read(bytes, kind)?)),
        RecordKind::Sock => Record::Sock(read(bytes, kind)?),
        RecordKind::Ns => Record::Ns(read(bytes, kind)?),
        RecordKind::TcpState => Record::TcpState(read(bytes, kind)?),
        RecordKind::Tamper => Record::Tamper(read(bytes, kind)?),
    })
}

/// A C string from a fixed buffer: up to `len` bytes, cut at the first NUL, lossy UTF-8.
pub fn c_str(buf: &[u8], len: usize) -> String {
    let buf = &buf[..len.min(buf.len())];
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// NUL-separated arguments (as in `/proc/PID/cmdline`).
pub fn split_args(buf: &[u8]) -> Vec<String> {
    let buf = buf.strip_suffix(&[0]).unwrap_or(buf);
    if buf.is_empty() {
        return Vec::new();
    }
    buf.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u16, kind: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&version.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&[0; 12]);
        v
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0; 4]).err(), Some(DecodeError::Short(4)));
        assert_eq!(
            decode(&header(9, 1)).err(),
            Some(DecodeError::Version { got: 9 })
        );
        assert_eq!(
            decode(&header(RECORD_VERSION, 77)).err(),
            Some(DecodeError::Kind(77))
        );
        let err = decode(&header(RECORD_VERSION, RecordKind::Fork as u16))
            .err()
            .unwrap();
        assert!(matches!(err, DecodeError::Size { got: 16, .. }), "{err}");
    }

    #[test]
    fn reads_the_kernel_timestamp() {
        let mut bytes = header(RECORD_VERSION, RecordKind::Fork as u16);
        bytes[8..16].copy_from_slice(&1_234_567_u64.to_ne_bytes());
        assert_eq!(timestamp(&bytes), 1_234_567);
        assert_eq!(timestamp(&bytes[..4]), 0);
    }

    #[test]
    fn decodes_fork() {
        let mut bytes = header(RECORD_VERSION, RecordKind::Fork as u16);
        bytes.resize(size_of::<ForkRecord>(), 0);
        bytes[16..20].copy_from_slice(&42u32.to_ne_bytes());
        match decode(&bytes).unwrap() {
            Record::Fork(f) => assert_eq!(f.child.pid, 42),
            _ => panic!("not a fork"),
        }
    }

    #[test]
    fn strings_and_args() {
        assert_eq!(c_str(b"sh\0junk", 7), "sh");
        assert_eq!(c_str(b"abc", 2), "ab");
        assert_eq!(
            split_args(b"sh\0-c\0id; sleep 0.2\0"),
            vec!["sh", "-c", "id; sleep 0.2"]
        );
        assert_eq!(split_args(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(split_args(b"").is_empty());
    }
}
