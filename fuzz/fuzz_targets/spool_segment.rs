//! The alert spool's recovery, on the real on-disk format: records appended by the spool
//! itself, then the segment damaged (cut anywhere, a byte changed anywhere), or a segment of
//! arbitrary bytes. Recovery never panics and never invents: it keeps exactly a prefix of what
//! was appended, numbered from 1 without a gap; a second recovery finds the same; the next
//! append continues the numbering.
#![no_main]

use std::{fs, path::PathBuf};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sensor::deliver::spool::{FsyncPolicy, Record, Spool, SpoolConfig};

#[derive(Arbitrary, Debug)]
enum Segment {
    /// Appended by the spool, then damaged.
    Damaged {
        payloads: Vec<Vec<u8>>,
        cut: Option<u16>,
        flip: Option<(u16, u8)>,
    },
    /// Whatever bytes: only sequence order is asked of the records recovered.
    Raw(Vec<u8>),
}

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("sensor-fuzz-spool-{}", std::process::id()))
}

fn config() -> SpoolConfig {
    SpoolConfig {
        dir: dir(),
        max_bytes: 1 << 30,
        fsync: FsyncPolicy::Never,
    }
}

fn segment() -> PathBuf {
    dir().join(format!("seg-{:020}.log", 1))
}

fn recovered() -> Vec<Record> {
    let spool = Spool::open(config()).expect("recovery opens the spool");
    spool.read_from(0).collect()
}

fuzz_target!(|input: Segment| {
    let _ = fs::remove_dir_all(dir());
    let written = match input {
        Segment::Damaged {
            payloads,
            cut,
            flip,
        } => {
            let payloads: Vec<Vec<u8>> = payloads.into_iter().take(32).collect();
            let mut spool = Spool::open(config()).expect("a fresh spool");
            for p in &payloads {
                spool.append(|_| p.clone()).expect("append");
            }
            drop(spool);
            let mut bytes = fs::read(segment()).unwrap_or_default();
            if let Some(cut) = cut {
                bytes.truncate(cut as usize % (bytes.len() + 1));
            }
            if let Some((at, xor)) = flip
                && !bytes.is_empty()
            {
                let at = at as usize % bytes.len();
                bytes[at] ^= xor;
            }
            fs::write(segment(), &bytes).unwrap();
            Some(payloads)
        }
        Segment::Raw(bytes) => {
            fs::create_dir_all(dir()).unwrap();
            fs::write(segment(), &bytes).unwrap();
            None
        }
    };
    let first = recovered();
    for (i, record) in first.iter().enumerate() {
        if let Some(payloads) = &written {
            assert_eq!(record.seq, i as u64 + 1, "numbered from 1 without a gap");
            assert_eq!(
                Some(&record.payload),
                payloads.get(i),
                "a prefix of what was written"
            );
        } else if i > 0 {
            assert!(record.seq > first[i - 1].seq, "in sequence order");
        }
    }
    let again = recovered();
    assert_eq!(
        again
            .iter()
            .map(|r| (r.seq, &r.payload))
            .collect::<Vec<_>>(),
        first
            .iter()
            .map(|r| (r.seq, &r.payload))
            .collect::<Vec<_>>(),
        "a second recovery finds the same"
    );
    let mut spool = Spool::open(config()).unwrap();
    let next = spool
        .append(|_| b"next".to_vec())
        .expect("append after recovery");
    if written.is_some() {
        assert_eq!(next, first.len() as u64 + 1, "the numbering continues");
    }
    drop(spool);
    let _ = fs::remove_dir_all(dir());
});
