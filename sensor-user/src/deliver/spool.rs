//! The alert spool: a bounded, append-only log on disk that every alert enters before it is
//! delivered, so a restart, a `kill -9` or a collector outage loses none.
//!
//! Layout, under the spool directory (default `/var/lib/sensor/spool`):
//! - `seg-<first seq, 20 digits>.log`: segments, oldest first. A record is
//!   `[len: u32 LE][crc32: u32 LE][seq: u64 LE][payload: len bytes]`, the CRC covering seq and
//!   payload. Sequence numbers are consecutive across segments and never reused, also across
//!   restarts (an empty newest segment still carries the next number in its name).
//! - `lock`: held (flock) by the agent that owns the spool, so a second one cannot interleave.
//! - `cursor.<consumer>`: the last sequence number a consumer (the OTLP exporter) has had
//!   acknowledged, replaced atomically (write, fsync, rename).
//!
//! Recovery: [`Spool::open`] scans every segment and truncates it at the first record that is
//! incomplete, fails its checksum or breaks the sequence: that is a torn append from a crash.
//!
//! Bound: when the total size exceeds `max_bytes`, whole segments are deleted oldest first (never
//! the one being written), and the alerts lost that way are counted, separately for those the
//! exporter had not delivered yet.
//!
//! fsync policy ([`FsyncPolicy`]): by default every append is followed by `fdatasync` before it
//! returns, so an alert that was handed to a subscriber is on disk even after a power cut; new
//! segments and cursors also sync their directory. A `kill -9` alone never loses a completed
//! append, because the page cache belongs to the kernel: [`FsyncPolicy::Never`] keeps that
//! guarantee and only gives up power-loss durability, for disks where syncing is too slow.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Write},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

/// Bytes before a record's payload.
const HEADER: usize = 16;
/// A record larger than this is corruption, not an alert.
const MAX_RECORD: u32 = 16 << 20;

/// When appends reach the disk itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every append (the default).
    Always,
    /// Leave it to the kernel's writeback: survives the agent's death, not the machine's.
    Never,
}

#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Upper bound of all segments together.
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl SpoolConfig {
    pub const DEFAULT_DIR: &'static str = "/var/lib/sensor/spool";

    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(4 << 10, 16 << 20)
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(Self::DEFAULT_DIR),
            max_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("alert spool: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("alert spool: {0}")]
    Invalid(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Counters since the spool was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub evicted: u64,
    /// Evicted alerts that a registered consumer had not acknowledged.
    pub evicted_unacked: u64,
    /// Segments cut at a torn or corrupt record during recovery.
    pub truncated_at_recovery: u64,
    pub appended: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
}

/// One spooled record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

pub struct Spool {
    cfg: SpoolConfig,
    /// Holds the directory's flock for as long as the spool is open.
    _lock: File,
    segments: VecDeque<Segment>,
    active: File,
    next_seq: u64,
    cursors: BTreeMap<String, u64>,
    /// Consumers of this run whose progress counts for `evicted_unacked`.
    registered: BTreeSet<String>,
    stats: SpoolStats,
    /// A failed append left bytes the spool could not cut off: the next one starts a segment.
    torn: bool,
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads the next record; `Ok(None)` at a clean end, `Err(())` at a torn or corrupt record.
fn read_record(r: &mut impl Read) -> Result<Option<Record>, ()> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
    let sum = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
    if len > MAX_RECORD {
        return Err(());
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).map_err(|_| ())?;
    if crc(seq, &payload) != sum {
        return Err(());
    }
    Ok(Some(Record { seq, payload }))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

impl Spool {
    /// Opens (creating if needed) the spool in `cfg.dir` and recovers it after a crash.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        if cfg.max_bytes == 0 {
            return Err(SpoolError::Invalid(
                "the size bound is 0: give it at least 1 MiB".into(),
            ));
        }
        // Alerts carry command lines and addresses: only the agent's user may read them.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.dir)
            .map_err(io_err("creating directory", &cfg.dir))?;
        let lock_path = cfg.dir.join("lock");
        let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        // SAFETY: flock(2) on a descriptor we own.
        let try_lock = || unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            ) == 0
        };
        // A child forked by another thread holds a copy of a just-closed lock descriptor until
        // it execs (close-on-exec): give such a transient holder a moment before refusing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut locked = try_lock();
        while !locked && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            locked = try_lock();
        }
        if !locked {
            return Err(SpoolError::Invalid(format!(
                "another process (a second sensor?) holds {}: stop it, or give this one its own \
                 spool directory",
                lock_path.display()
            )));
        }
        let mut cursors = BTreeMap::new();
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&cfg.dir).map_err(io_err("listing", &cfg.dir))? {
            let entry = entry.map_err(io_err("listing", &cfg.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(first) = parse_segment_name(&name) {
                firsts.push(first);
            } else if let Some(consumer) = name.strip_prefix("cursor.") {
                let path = entry.path();
                let text = fs::read_to_string(&path).map_err(io_err("reading cursor", &path))?;
                let seq = text.trim().parse().map_err(|_| {
                    SpoolError::Invalid(format!(
                        "cursor {} holds {text:?}, not a sequence number: delete the file to \
                         re-export everything still spooled",
                        path.display()
                    ))
                })?;
                cursors.insert(consumer.to_string(), seq);
            }
        }
        firsts.sort_unstable();

        let mut stats = SpoolStats::default();
        let mut segments = VecDeque::new();
        let mut expected: Option<u64> = None;
        let last_index = firsts.len().saturating_sub(1);
        for (i, first) in firsts.into_iter().enumerate() {
            let path = cfg.dir.join(segment_name(first));
            if let Some(e) = expected.filter(|&e| first < e) {
                // Overlaps its predecessor: it cannot be read in order, so it is unusable. (A
                // segment starting later than expected is a gap, which readers report.)
                log::warn!(
                    "alert spool: {} overlaps the sequence before it (next expected {e}); \
                     removing it",
                    path.display()
                );
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                stats.truncated_at_recovery += 1;
                continue;
            }
            let (valid_bytes, records, torn) = scan_segment(&path, first)?;
            if torn {
                stats.truncated_at_recovery += 1;
                log::warn!(
                    "alert spool: {} ends in a torn record after {records} records; truncating \
                     it at byte {valid_bytes}",
                    path.display()
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| {
                        f.set_len(valid_bytes)?;
                        f.sync_all()
                    })
                    .map_err(io_err("truncating", &path))?;
            }
            if records == 0 && i != last_index {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                continue;
            }
            expected = Some(first + records);
            segments.push_back(Segment {
                first_seq: first,
                path,
                bytes: valid_bytes,
                records,
            });
        }
        // Never reuse a number a consumer has seen, even when its alerts are gone.
        let floor = cursors.values().copied().max().unwrap_or(0) + 1;
        let next_seq = expected.unwrap_or(1).max(floor);
        let continues = segments
            .back()
            .is_some_and(|s| s.first_seq + s.records == next_seq);
        if !continues {
            if let Some(s) = segments.back().filter(|s| s.records == 0) {
                fs::remove_file(&s.path).map_err(io_err("removing", &s.path))?;
                segments.pop_back();
            }
            let path = cfg.dir.join(segment_name(next_seq));
            File::create(&path).map_err(io_err("creating segment", &path))?;
            sync_dir(&cfg.dir)?;
            segments.push_back(Segment {
                first_seq: next_seq,
                path,
                bytes: 0,
                records: 0,
            });
        }
        let active_path = &segments.back().unwrap().path;
        let active = OpenOptions::new()
            .append(true)
            .open(active_path)
            .map_err(io_err("opening segment", active_path))?;
        Ok(Spool {
            cfg,
            _lock: lock,
            segments,
            active,
            next_seq,
            cursors,
            registered: BTreeSet::new(),
            stats,
            torn: false,
        })
    }

    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The newest spooled sequence number (0 when none was ever appended).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The oldest sequence number still spooled, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.records > 0)
            .map(|s| s.first_seq)
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Appends one record, its payload built from the sequence number it gets, and returns that
    /// number. When this returns, the record is written (and synced, per the policy).
    pub fn append(&mut self, payload: impl FnOnce(u64) -> Vec<u8>) -> Result<u64, SpoolError> {
        let mut payload = Some(payload);
        let seqs = self.append_many(1, |seq| (payload.take().unwrap())(seq))?;
        Ok(seqs.start)
    }

    /// Appends `count` records as one group commit: their payloads built from the consecutive
    /// sequence numbers they get, one write(2) and (per the policy) one fdatasync for all of
    /// them. All or nothing: on error none of them is in the spool and their numbers go to
    /// the next append. Returns the numbers given.
    pub fn append_many(
        &mut self,
        count: usize,
        mut payload: impl FnMut(u64) -> Vec<u8>,
    ) -> Result<std::ops::Range<u64>, SpoolError> {
        let first = self.next_seq;
        let seqs = first..first + count as u64;
        if count == 0 {
            return Ok(seqs);
        }
        let mut buf = Vec::new();
        for seq in seqs.clone() {
            let payload = payload(seq);
            if payload.len() > MAX_RECORD as usize {
                return Err(SpoolError::Invalid(format!(
                    "record {seq} is {} bytes, above the {MAX_RECORD}-byte limit",
                    payload.len()
                )));
            }
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc(seq, &payload).to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        if self.torn || self.segments.back().unwrap().bytes >= self.cfg.segment_bytes() {
            self.rotate(first)?;
            self.torn = false;
        }
        let seg = self.segments.back_mut().unwrap();
        // One write(2) for the whole group: a crash leaves it whole or torn at the tail,
        // which recovery cuts off.
        let written = self
            .active
            .write_all(&buf)
            .map_err(io_err("appending to", &seg.path))
            .and_then(|()| match self.cfg.fsync {
                FsyncPolicy::Always => self
                    .active
                    .sync_data()
                    .map_err(io_err("syncing", &seg.path)),
                FsyncPolicy::Never => Ok(()),
            });
        if let Err(e) = written {
            // All or nothing: what a short write (a full disk) left is cut off, so the numbers
            // go to the next append and no reader meets a torn record before later ones. If
            // even that fails, the next append starts a new segment after the tear.
            // (A segment without a record cannot be followed by one of the same name: there
            // the tear stays until recovery at the next start cuts it.)
            self.torn = self.active.set_len(seg.bytes).is_err() && seg.records > 0;
            return Err(e);
        }
        seg.bytes += buf.len() as u64;
        seg.records += count as u64;
        self.next_seq = seqs.end;
        self.stats.appended += count as u64;
        self.evict()?;
        Ok(seqs)
    }

    fn rotate(&mut self, first_seq: u64) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(segment_name(first_seq));
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("creating segment", &path))?;
        if self.cfg.fsync == FsyncPolicy::Always {
            sync_dir(&self.cfg.dir)?;
        }
        self.segments.push_back(Segment {
            first_seq,
            path,
            bytes: 0,
            records: 0,
        });
        Ok(())
    }

    fn evict(&mut self) -> Result<(), SpoolError> {
        let min_cursor = self.registered.iter().map(|c| self.cursor(c)).min();
        while self.bytes() > self.cfg.max_bytes && self.segments.len() > 1 {
            let seg = self.segments.pop_front().unwrap();
            fs::remove_file(&seg.path).map_err(io_err("evicting", &seg.path))?;
            self.stats.evicted += seg.records;
            if let Some(acked) = min_cursor {
                let last = seg.first_seq + seg.records;
                self.stats.evicted_unacked += last.saturating_sub(seg.first_seq.max(acked + 1));
            }
            log::warn!(
                "alert spool: size bound of {} bytes reached; evicted alerts {}..{}",
                self.cfg.max_bytes,
                seg.first_seq,
                seg.first_seq + seg.records
            );
        }
        Ok(())
    }

    /// The records after `after` (sequence numbers `after + 1 ..= last_seq()` at the time of
    /// the call). The reader opens segment files on its own, so the spool can keep appending;
    /// a segment evicted before the reader reaches it is skipped, which the caller sees as a
    /// jump in sequence numbers.
    pub fn read_from(&self, after: u64) -> SpoolReader {
        let mut paths: VecDeque<(u64, PathBuf)> = VecDeque::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let end = self
                .segments
                .get(i + 1)
                .map_or(seg.first_seq + seg.records, |n| n.first_seq);
            if end > after + 1 {
                paths.push_back((seg.first_seq, seg.path.clone()));
            }
        }
        SpoolReader {
            after,
            until: self.last_seq(),
            paths,
            current: None,
        }
    }

    /// The last sequence number `consumer` has had acknowledged (0: none).
    pub fn cursor(&self, consumer: &str) -> u64 {
        self.cursors.get(consumer).copied().unwrap_or(0)
    }

    /// Registers a consumer whose progress counts for `evicted_unacked`, starting where its
    /// persisted cursor is (or at 0).
    pub fn register_consumer(&mut self, consumer: &str) -> u64 {
        self.registered.insert(consumer.to_string());
        *self.cursors.entry(consumer.to_string()).or_insert(0)
    }

    /// Records that `consumer` has had everything up to `seq` acknowledged, durably.
    pub fn ack(&mut self, consumer: &str, seq: u64) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join(format!("cursor.{consumer}"));
        let tmp = self.cfg.dir.join(format!(".cursor.{consumer}.tmp"));
        let mut f = File::create(&tmp).map_err(io_err("writing cursor", &tmp))?;
        f.write_all(format!("{seq}\n").as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(io_err("writing cursor", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("replacing cursor", &path))?;
        if self.cfg.fsync == FsyncPolicy::Always {
            sync_dir(&self.cfg.dir)?;
        }
        self.cursors.insert(consumer.to_string(), seq);
        Ok(())
    }
}

/// Scans a segment: (bytes of valid records, their count, whether garbage follows them).
fn scan_segment(path: &Path, first: u64) -> Result<(u64, u64, bool), SpoolError> {
    let file = File::open(path).map_err(io_err("opening segment", path))?;
    let len = file.metadata().map_err(io_err("reading", path))?.len();
    let mut r = BufReader::new(file);
    let (mut bytes, mut records) = (0u64, 0u64);
    loop {
        match read_record(&mut r) {
            Ok(Some(rec)) if rec.seq == first + records => {
                bytes += (HEADER + rec.payload.len()) as u64;
                records += 1;
            }
            Ok(None) => return Ok((bytes, records, false)),
            Ok(Some(_)) | Err(()) => return Ok((bytes, records, bytes < len)),
        }
    }
}

/// Iterates spooled records in sequence order; see [`Spool::read_from`].
pub struct SpoolReader {
    after: u64,
    until: u64,
    paths: VecDeque<(u64, PathBuf)>,
    current: Option<BufReader<File>>,
}

impl SpoolReader {
    /// The newest sequence number this reader will return.
    pub fn until(&self) -> u64 {
        self.until
    }
}

impl Iterator for SpoolReader {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if self.after >= self.until {
                return None;
            }
            if self.current.is_none() {
                let (_, path) = self.paths.pop_front()?;
                // Gone: evicted since the snapshot. The next segment continues the sequence.
                self.current = File::open(&path).ok().map(BufReader::new);
                continue;
            }
            match read_record(self.current.as_mut().unwrap()) {
                Ok(Some(rec)) if rec.seq <= self.after => {}
                Ok(Some(rec)) if rec.seq <= self.until => {
                    self.after = rec.seq;
                    return Some(rec);
                }
                // Past the snapshot, the end of the file, or a record still being written.
                _ => self.current = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sensor-spool-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn cfg(dir: &Path, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            fsync: FsyncPolicy::Never,
        }
    }

    fn payload(seq: u64) -> Vec<u8> {
        format!("alert-{seq}").into_bytes()
    }

    fn seqs(spool: &Spool, after: u64) -> Vec<u64> {
        spool
            .read_from(after)
            .map(|r| {
                assert_eq!(r.payload, payload(r.seq));
                r.seq
            })
            .collect()
    }

    #[test]
    fn appends_number_from_one_and_read_resumes_after_a_seq() {
        let dir = tmpdir("resume");
        let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        for want in 1..=10 {
            assert_eq!(spool.append(payload).unwrap(), want);
        }
        assert_eq!(seqs(&spool, 0), (1..=10).collect::<Vec<_>>());
        assert_eq!(seqs(&spool, 7), vec![8, 9, 10]);
        assert!(seqs(&spool, 10).is_empty());
        assert_eq!((spool.first_seq(), spool.last_seq()), (Some(1), 10));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_group_commit_numbers_its_records_consecutively_and_survives_a_reopen() {
        let dir = tmpdir("group");
        let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        assert_eq!(spool.append_many(0, payload).unwrap(), 1..1);
        assert_eq!(spool.append_many(3, payload).unwrap(), 1..4);
        assert_eq!(spool.append(payload).unwrap(), 4);
        drop(spool);
        let spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        let records: Vec<_> = spool.read_from(0).collect();
        assert_eq!(records.len(), 4);
        for r in &records {
            assert_eq!(r.payload, payload(r.seq), "record {}", r.seq);
        }
        assert_eq!(spool.stats().appended, 0, "counted per run");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reopening_continues_the_sequence_across_segments() {
        let dir = tmpdir("reopen");
        {
            // 4 KiB segments: 200 records span several files.
            let mut spool = Spool::open(cfg(&dir, 32 << 10)).unwrap();
            for _ in 0..200 {
                spool.append(|s| vec![s as u8; 100]).unwrap();
            }
            assert!(spool.segments.len() > 3, "{:?}", spool.segments);
        }
        let mut spool = Spool::open(cfg(&dir, 32 << 10)).unwrap();
        assert_eq!(spool.records(), 200);
        assert_eq!(spool.append(|s| vec![s as u8; 100]).unwrap(), 201);
        let got: Vec<u64> = spool.read_from(150).map(|r| r.seq).collect();
        assert_eq!(got, (151..=201).collect::<Vec<_>>());
        assert_eq!(spool.stats().truncated_at_recovery, 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_truncated_and_the_sequence_goes_on() {
        let dir = tmpdir("torn");
        let path = {
            let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
            for _ in 0..5 {
                spool.append(payload).unwrap();
            }
            spool.segments.back().unwrap().path.clone()
        };
        let whole = fs::metadata(&path).unwrap().len();
        // A crash in the middle of the sixth append: a header and half a payload.
        let mut rec = Vec::new();
        rec.extend_from_slice(&9u32.to_le_bytes());
        rec.extend_from_slice(&crc(6, &payload(6)).to_le_bytes());
        rec.extend_from_slice(&6u64.to_le_bytes());
        rec.extend_from_slice(b"aler");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&rec)
            .unwrap();

        let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        assert_eq!(spool.stats().truncated_at_recovery, 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(spool.append(payload).unwrap(), 6);
        assert_eq!(seqs(&spool, 0), vec![1, 2, 3, 4, 5, 6]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_ends_the_segment_at_recovery() {
        let dir = tmpdir("corrupt");
        let path = {
            let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
            for _ in 0..3 {
                spool.append(payload).unwrap();
            }
            spool.segments.back().unwrap().path.clone()
        };
        // Flip a payload byte of the last record: its checksum no longer matches.
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        assert_eq!(seqs(&spool, 0), vec![1, 2]);
        assert_eq!(spool.next_seq(), 3);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn eviction_drops_oldest_segments_and_counts_unacked() {
        let dir = tmpdir("evict");
        // 32 KiB bound, 4 KiB segments, ~116-byte records: about 35 records per segment.
        let mut spool = Spool::open(cfg(&dir, 32 << 10)).unwrap();
        spool.register_consumer("otlp");
        for _ in 0..1000 {
            spool.append(|s| vec![s as u8; 100]).unwrap();
        }
        spool.ack("otlp", 10).unwrap();
        spool.append(|s| vec![s as u8; 100]).unwrap();
        assert!(spool.bytes() <= 32 << 10, "{} bytes", spool.bytes());
        let stats = spool.stats();
        let first = spool.first_seq().unwrap();
        assert_eq!(stats.evicted, first - 1, "{stats:?}");
        assert_eq!(stats.evicted, 1001 - spool.records());
        // Acked at 0 for most evictions, then at 10.
        assert!(stats.evicted_unacked >= stats.evicted - 10, "{stats:?}");
        let got: Vec<u64> = spool.read_from(0).map(|r| r.seq).collect();
        assert_eq!(got, (first..=1001).collect::<Vec<_>>());
        // Files on disk match the accounting.
        let on_disk: u64 = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, spool.bytes());
        fs::remove_dir_all(dir).unwrap();
    }

    /// The child half of [`survives_kill_9_of_the_writer`]: appends until killed, printing each
    /// sequence number once its append has returned. Does nothing when run on its own.
    #[test]
    fn kill9_child_appends_until_killed() {
        let Some(dir) = std::env::var_os("SENSOR_SPOOL_KILL9_DIR") else {
            return;
        };
        let mut spool = Spool::open(cfg(Path::new(&dir), 64 << 10)).unwrap();
        let mut out = io::stdout();
        loop {
            let seq = spool
                .append(|s| vec![(s % 251) as u8; 1 + (s % 300) as usize])
                .unwrap();
            writeln!(out, "{seq}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn survives_kill_9_of_the_writer() {
        use std::io::BufRead;
        let dir = tmpdir("kill9");
        for round in 0..3 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "deliver::spool::tests::kill9_child_appends_until_killed",
                ])
                .args(["--nocapture", "--test-threads", "1"])
                .env("SENSOR_SPOOL_KILL9_DIR", &dir)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut confirmed = 0;
            for line in io::BufReader::new(child.stdout.take().unwrap()).lines() {
                if let Ok(seq) = line.unwrap().trim().parse::<u64>() {
                    confirmed = seq;
                    if seq >= 400 * (round + 1) {
                        break;
                    }
                }
            }
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            child.wait().unwrap();
            let spool = Spool::open(cfg(&dir, 64 << 10)).unwrap();
            // Everything confirmed before the kill is there, numbered without gaps, intact.
            assert!(
                spool.last_seq() >= confirmed,
                "round {round}: {} < {confirmed}",
                spool.last_seq()
            );
            let recs: Vec<Record> = spool.read_from(0).collect();
            let first = spool.first_seq().unwrap();
            assert_eq!(recs.len() as u64, spool.last_seq() - first + 1);
            for (i, r) in recs.iter().enumerate() {
                assert_eq!(r.seq, first + i as u64);
                assert_eq!(
                    r.payload,
                    vec![(r.seq % 251) as u8; 1 + (r.seq % 300) as usize]
                );
            }
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_spool() {
        let dir = tmpdir("lock");
        let first = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        let err = Spool::open(cfg(&dir, 1 << 20)).err().unwrap();
        assert!(err.to_string().contains("holds"), "{err}");
        drop(first);
        Spool::open(cfg(&dir, 1 << 20)).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cursors_persist_and_keep_sequence_numbers_from_being_reused() {
        let dir = tmpdir("cursor");
        {
            let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
            for _ in 0..4 {
                spool.append(payload).unwrap();
            }
            spool.ack("otlp", 3).unwrap();
        }
        let spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        assert_eq!(spool.cursor("otlp"), 3);
        assert_eq!(seqs(&spool, spool.cursor("otlp")), vec![4]);
        drop(spool);
        // Everything deleted but the cursor: numbering still goes past what was acked.
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with("seg-") {
                fs::remove_file(e.path()).unwrap();
            }
        }
        let mut spool = Spool::open(cfg(&dir, 1 << 20)).unwrap();
        assert_eq!(spool.append(payload).unwrap(), 4);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_reader_skips_segments_evicted_after_its_snapshot() {
        let dir = tmpdir("snapshot");
        let mut spool = Spool::open(cfg(&dir, 16 << 10)).unwrap();
        for _ in 0..100 {
            spool.append(|s| vec![s as u8; 100]).unwrap();
        }
        let reader = spool.read_from(0);
        let first_before = spool.first_seq().unwrap();
        for _ in 0..300 {
            spool.append(|s| vec![s as u8; 100]).unwrap();
        }
        let got: Vec<u64> = reader.map(|r| r.seq).collect();
        // Only what is still on disk, in order, and nothing past the snapshot.
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert!(got.iter().all(|s| (first_before..=100).contains(s)));
        fs::remove_dir_all(dir).unwrap();
    }
}
